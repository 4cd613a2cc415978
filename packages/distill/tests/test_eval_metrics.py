from math import comb
from typing import Any

import numpy as np
import pytest
from distill.eval.metrics import (
    MetricsError,
    average_scores,
    avg_at_k,
    bootstrap_ci,
    maj_at_k,
    pass_at_k,
    score_benchmark,
)
from skillcore import PoolProblem, Verdict


# ------------------------------------------------------------------------------------------ pass@k
def test_pass_at_k_hand_value():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)


def test_pass_at_k_matches_the_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1.0 if n - c < k else 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_edges_and_large_n():
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0  # n - c < k
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    # binomials of this size overflow floats; the product form does not
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    for bad in [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_avg_at_k():
    assert avg_at_k([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([])


# ------------------------------------------------------------------------------------------ maj@k
def test_majority_groups_by_normal_form():
    answers = ["3", "\\dfrac{1}{2}", "\\frac{1}{2}", "3", None, None, "\\frac{1}{2}"]
    correct = [False, True, True, False, False, False, True]
    assert maj_at_k(answers, correct) == ("\\dfrac{1}{2}", True)


def test_majority_tie_goes_to_the_earliest_group():
    assert maj_at_k(["5", "7", "7", "5"], [False, True, True, False]) == ("5", False)
    assert maj_at_k(["7", "5", "5", "7"], [True, False, False, True]) == ("7", True)


def test_no_answer_does_not_vote():
    assert maj_at_k([None, None, None, "4"], [False, False, False, True]) == ("4", True)
    assert maj_at_k(["$ $", "$$", "9"], [False, False, False]) == ("9", False)
    assert maj_at_k([None, None], [False, False]) == (None, False)
    assert maj_at_k([], []) == (None, False)


def test_group_is_correct_when_any_sample_was_judged_correct():
    # the same answer twice: one judged correct, one timed out -> the answer is right
    assert maj_at_k(["4", "4", "9"], [False, True, False]) == ("4", True)


def test_majority_length_mismatch():
    with pytest.raises(ValueError):
        maj_at_k(["1"], [True, False])


# ------------------------------------------------------------------------------------------ bootstrap
def test_ci_of_a_constant_is_the_constant():
    assert bootstrap_ci([0.25] * 17) == (0.25, 0.25)
    assert bootstrap_ci([1.0]) == (1.0, 1.0)


def test_ci_matches_a_hand_run_percentile_bootstrap():
    values = np.array([0.0, 0.125, 1.0, 0.5, 0.875, 0.25, 0.0, 1.0, 0.375])
    rng = np.random.default_rng(3)
    means = np.array([values[rng.integers(0, values.size, size=values.size)].mean() for _ in range(500)])
    expected = np.percentile(means, [5.0, 95.0])
    low, high = bootstrap_ci(values, n_resamples=500, confidence=0.90, seed=3)
    assert (low, high) == pytest.approx(tuple(expected))
    assert low < values.mean() < high


def test_ci_depends_on_seed_and_confidence():
    values = np.linspace(0.0, 1.0, 40)
    assert bootstrap_ci(values, seed=0) == bootstrap_ci(values, seed=0)
    assert bootstrap_ci(values, seed=0) != bootstrap_ci(values, seed=1)
    narrow = bootstrap_ci(values, confidence=0.5)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_ci_rejects_bad_input():
    bad_inputs: list[Any] = [[], [np.nan, 1.0], [[1.0, 2.0]]]
    for bad in bad_inputs:
        with pytest.raises(ValueError):
            bootstrap_ci(bad)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], n_resamples=0)


# ------------------------------------------------------------------------------------------ score_benchmark
def problems(*ids):
    return [PoolProblem(unique_id=uid, question=f"q {uid}", expected_answer="2") for uid in ids]


def verdicts(uid, statuses, answers):
    return [
        Verdict(unique_id=uid, sample_index=i, status=s, extracted_answer=a)
        for i, (s, a) in enumerate(zip(statuses, answers, strict=True))
    ]


@pytest.fixture
def bench():
    probs = problems("A", "B", "C")
    vs = (
        verdicts("A", ["correct", "wrong", "correct", "wrong"], ["2", "3", "2", "3"])
        + verdicts("B", ["no_answer", "no_answer", "timeout", "error"], [None, None, "2", "2"])
        + verdicts("C", ["correct"] * 4, ["2", "2.0", "2", "2"])
    )
    return probs, vs


def test_score_benchmark_hand_computed(bench):
    probs, vs = bench
    score = score_benchmark(probs, list(reversed(vs)), n_resamples=200, seed=0, name="toy")
    assert (score.name, score.n_problems, score.samples_per_problem, score.k) == ("toy", 3, 4, 4)
    assert score.avg_at_k.value == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert score.pass_at_1.value == pytest.approx(0.5)
    assert score.pass_at_k.value == pytest.approx(2 / 3)  # A and C have a correct sample
    # A: "2" and "3" tie 2-2, "2" came first and is correct; B: "2" twice but never judged correct
    assert score.maj_at_k.value == pytest.approx(2 / 3)
    assert score.status_counts == {"correct": 6, "wrong": 2, "no_answer": 2, "timeout": 1, "error": 1}
    by_id = {p.unique_id: p for p in score.problems}
    assert [p.unique_id for p in score.problems] == ["A", "B", "C"]  # problem order, not verdict order
    assert (by_id["A"].n, by_id["A"].c, by_id["A"].majority_answer, by_id["A"].maj_correct) == (
        4,
        2,
        "2",
        True,
    )
    assert (by_id["B"].c, by_id["B"].majority_answer, by_id["B"].maj_correct) == (0, "2", False)
    per_problem = [p.avg for p in score.problems]
    assert (score.avg_at_k.low, score.avg_at_k.high) == bootstrap_ci(per_problem, n_resamples=200, seed=0)
    for ci in (score.avg_at_k, score.pass_at_1, score.pass_at_k, score.maj_at_k):
        assert ci.low <= ci.value <= ci.high


def test_score_benchmark_smaller_k(bench):
    probs, vs = bench
    score = score_benchmark(probs, vs, k=2, n_resamples=50)
    by_id = {p.unique_id: p for p in score.problems}
    assert by_id["A"].avg == 0.5  # first two samples: correct, wrong
    assert by_id["A"].pass_at_k == pytest.approx(1 - comb(2, 2) / comb(4, 2))  # from all 4 samples
    assert by_id["B"].avg == 0.0 and by_id["B"].majority_answer is None  # first two have no answer
    assert score.metrics()["pass_at_2"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert set(score.labelled()) == {"avg_at_2", "pass_at_1", "pass_at_2", "maj_at_2"}
    assert score.metrics()["status/error"] == 1.0


def test_missing_verdicts_raise(bench):
    probs, vs = bench
    holey = [v for v in vs if not (v.unique_id == "B" and v.sample_index == 2)]
    with pytest.raises(MetricsError, match=r"B lacks samples \[2\]"):
        score_benchmark(probs, holey)
    with pytest.raises(MetricsError, match=r"D lacks samples \[0, 1, 2, 3\]"):
        score_benchmark([*probs, *problems("D")], vs)


def test_inconsistent_verdicts_raise(bench):
    probs, vs = bench
    with pytest.raises(MetricsError, match="match no problem"):
        score_benchmark(probs, [*vs, Verdict(unique_id="Z", status="correct")])
    with pytest.raises(MetricsError, match="two verdicts"):
        score_benchmark(probs, [*vs, vs[0]])
    with pytest.raises(MetricsError, match="duplicate problem"):
        score_benchmark([*probs, probs[0]], vs)
    with pytest.raises(MetricsError, match="k must be"):
        score_benchmark(probs, vs, k=5)
    with pytest.raises(MetricsError, match="no verdicts"):
        score_benchmark(probs, [])
    with pytest.raises(MetricsError, match="no problems"):
        score_benchmark([], vs)


def test_average_scores_is_a_macro_average(bench):
    probs, vs = bench
    first = score_benchmark(probs, vs, n_resamples=20)
    only_c = score_benchmark(problems("C"), [v for v in vs if v.unique_id == "C"], n_resamples=20)
    avg = average_scores({"one": first, "two": only_c})
    assert set(avg) == {"avg_at_4", "pass_at_1", "pass_at_4", "maj_at_4"}
    assert avg["avg_at_4"] == pytest.approx((first.avg_at_k.value + 1.0) / 2)  # not weighted by size
    assert avg["maj_at_4"] == pytest.approx((2 / 3 + 1.0) / 2)
    with pytest.raises(MetricsError, match="different k"):
        average_scores({"one": first, "two": score_benchmark(probs, vs, k=2, n_resamples=20)})
    with pytest.raises(MetricsError):
        average_scores({})
