"""The selection rules checked against their documented definitions (README.md and the docstrings).

Every expected figure is worked out from first principles, by hand, on small pools written out below
(chains and verdict statuses), with the arithmetic in a comment; nothing is taken from the implementation's
own helpers (``Pool.correct_mask``, ``leaf_weights``, ``SelectionContext.leaf_share``...). The sampling
rules are checked over a fixed list of seeds with bounds of 5 binomial standard deviations (plus, where
duplicate rejections can bias the per-pick probabilities, the largest bias they can cause), so the checks
cannot flake and still fail on a wrong rule.

Documented definitions checked here:

* leaf weight ``w = min(acc^-T, w_max^T)``, ``w_max^T`` at acc 0, 0 for a leaf with no judged problem;
  ``smoothing`` s: acc ``(c + s) / (a + 2 s)``; ``use_posterior``: ``(c + alpha) / (a + alpha + beta)``;
  a problem counts once per distinct leaf its chains reach; excluded ids are removed before profiling;
* ``skill``: until K distinct, a leaf with probability proportional to its weight, then a problem
  uniformly among the leaf's candidate problems (judged or not with ``candidates="all"``, judged only with
  ``candidates="judged"``); target = normalised weights (the paper: sampling probability inversely
  proportional to the student's accuracy on the skill, T = 1);
* ``candidates``: ``n_candidates`` = the problems the strategy draws from, ``k_over_candidates`` = K over
  that; with a ``correct_portion`` only judged problems are drawn, the unjudged ones left out are counted;
* ``skill-match``: greedy, each step the problem that brings the normalised leaf histogram closest (L2)
  to the normalised weights, ties to the lowest pool index;
* ``random``: K uniformly without replacement among the candidates; target = the candidates' leaf share;
* ``balanced``: the leaf sampler with equal weight on every leaf that has a candidate problem;
* ``difficulty``: uniform among problems whose field lies in the band (inclusive; 'n/a', missing out);
* ``correct_portion`` p: exactly ``floor(p*K + 0.5)`` student-correct problems (more than half of the
  attempts correct), interleaved so that every prefix of j picks holds ``floor(p*j + 0.5)`` of them;
* report/summary: shares are of leaf occurrences; ``l2_to_target = |selected_share - target|_2``,
  ``tv_to_target = |selected_share - target|_1 / 2``; n_selected_correct / wrong / unjudged.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from skillcore.records import TaggedProblem, Verdict
from skillcore.tree import SkillTree
from skillselect import Pool, SelectionError, select

TREE = {
    "name": "root",
    "children": [
        {"name": "Alg", "children": [{"name": "Lin"}, {"name": "Quad"}]},
        {"name": "Geo"},
        {"name": "Num"},
        {"name": "Prob"},
        {"name": "Misc"},
        {"name": "Empty"},
    ],
}
LEAVES = ["Alg->Lin", "Alg->Quad", "Geo", "Num", "Prob", "Misc", "Empty"]  # the report's order (preorder)
NAN = math.nan

C, W = "correct", "wrong"
LIN, QUAD, GEO, NUM, PROB, MISC = ["Alg", "Lin"], ["Alg", "Quad"], ["Geo"], ["Num"], ["Prob"], ["Misc"]
# id -> (chains, the student's verdict statuses, one per attempt; [] = unjudged). Pool order as written.
PROBLEMS: dict[str, tuple[list[list[str]], list[str]]] = {
    "lin1": ([LIN], [C, C, C, W]),  # 3/4 correct: student-correct
    "linquad": ([LIN, QUAD], [C, W, W, W]),  # 1/4: wrong
    "quad1": ([QUAD], [W, W, W, W]),  # 0/4: wrong
    "half": ([QUAD], [C, W]),  # 1/2: exactly half is not "more than half": wrong
    "geo1": ([GEO], [C, C]),  # 2/2: correct
    "geonum": ([GEO, NUM], [C, C, "no_answer"]),  # 2/3 (no answer is a failed attempt): correct
    "geo2": ([GEO, GEO], [C]),  # 1/1: correct; the repeated chain reaches Geo once
    "num1": ([NUM], [W, "timeout"]),  # 0/2: wrong
    "prob1": ([PROB], [W, W, "no_answer"]),  # 0/3: wrong
    "prob2": ([PROB], []),  # unjudged
    "misc1": ([MISC], []),  # unjudged, the only problem on Misc
    "bare": ([], []),  # no chain, unjudged
}
IDS = list(PROBLEMS)
STUDENT_CORRECT = {"lin1", "geo1", "geonum", "geo2"}
STUDENT_WRONG = {"linquad", "quad1", "half", "num1", "prob1"}
UNJUDGED = {"prob2", "misc1", "bare"}

# Per leaf, from the table above (each problem once per distinct leaf it reaches):
#   Lin   lin1 3/4, linquad 1/4               -> 4 correct / 8 attempts  = 1/2
#   Quad  linquad 1/4, quad1 0/4, half 1/2    -> 2 / 10                  = 1/5
#   Geo   geo1 2/2, geonum 2/3, geo2 1/1      -> 5 / 6                   = 5/6
#   Num   geonum 2/3, num1 0/2                -> 2 / 5                   = 2/5
#   Prob  prob1 0/3 (prob2 unjudged)          -> 0 / 3                   = 0
#   Misc  misc1 unjudged; Empty no problem    -> no accuracy
POOL_PROBLEMS = [2, 3, 3, 2, 2, 1, 0]
JUDGED_PROBLEMS = [2, 3, 3, 2, 1, 0, 0]
ATTEMPTS = [8, 10, 6, 5, 3, 0, 0]
CORRECT = [4, 2, 5, 2, 0, 0, 0]
ACCURACY = [1 / 2, 1 / 5, 5 / 6, 2 / 5, 0.0, NAN, NAN]


def hand_pool() -> Pool:
    tagged = [
        TaggedProblem(unique_id=uid, question=f"q {uid}", expected_answer="1", chains=chains)
        for uid, (chains, _) in PROBLEMS.items()
    ]
    verdicts = [
        Verdict(unique_id=uid, sample_index=s, status=status)  # type: ignore[arg-type]
        for uid, (_, statuses) in PROBLEMS.items()
        for s, status in enumerate(statuses)
    ]
    return Pool.from_records(tagged, verdicts)


@pytest.fixture(scope="module")
def tree() -> SkillTree:
    return SkillTree.from_dict(TREE)


@pytest.fixture(scope="module")
def pool() -> Pool:
    return hand_pool()


# ---------------------------------------------------------------- independent helpers (no implementation)
def student_correct(uid: str) -> bool:
    """From the verdict statuses: judged, and more than half of the attempts correct."""
    statuses = PROBLEMS[uid][1]
    return bool(statuses) and 2 * statuses.count(C) > len(statuses)


def judged(uid: str) -> bool:
    return bool(PROBLEMS[uid][1])


def leaves_of(uid: str) -> set[str]:
    return {"->".join(chain) for chain in PROBLEMS[uid][0]}


def histogram(ids: list[str]) -> np.ndarray:
    """Leaf occurrences of the problems ``ids`` (a problem counts once per distinct leaf), report order."""
    counts = Counter(leaf for uid in ids for leaf in leaves_of(uid))
    return np.array([counts[leaf] for leaf in LEAVES], dtype=np.float64)


def share(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum()


def within(count: float, n: int, p: float, *, bias: float = 0.0, sigmas: float = 5.0) -> bool:
    """``count`` of a Binomial(n, p) (up to a known bias of the per-trial probability) within 5 sigma."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + n * bias


def test_the_hand_tables_agree_with_the_verdicts():
    # the sets written out above are what the definition gives on the statuses
    assert {u for u in IDS if student_correct(u)} == STUDENT_CORRECT
    assert {u for u in IDS if judged(u) and not student_correct(u)} == STUDENT_WRONG
    assert {u for u in IDS if not judged(u)} == UNJUDGED
    assert histogram(IDS).tolist() == POOL_PROBLEMS


# ---------------------------------------------------------------- per-leaf accuracy and weights
def test_per_leaf_profile_is_pooled_over_the_problems_reaching_each_leaf(tree, pool):
    rep = select(pool, tree, k=1, seed=0).report
    assert rep["chain"].tolist() == LEAVES
    assert rep["pool_problems"].tolist() == POOL_PROBLEMS
    assert rep["judged_problems"].tolist() == JUDGED_PROBLEMS
    assert rep["attempts"].tolist() == ATTEMPTS
    assert rep["correct"].tolist() == CORRECT
    np.testing.assert_allclose(rep["accuracy"].to_numpy(), ACCURACY, rtol=1e-12)


R2, R5, R8 = math.sqrt(2), math.sqrt(5), math.sqrt(8)


@pytest.mark.parametrize(
    ("temperature", "w_max", "weights"),
    [
        # T = 1: 1/acc = 2, 5, 6/5, 5/2; Prob (acc 0) gets w_max^1 = 8; Misc/Empty unjudged: 0
        (1.0, 8.0, [2, 5, 6 / 5, 5 / 2, 8, 0, 0]),
        # the cap w_max^T = 4 binds on Quad (1/(1/5) = 5 -> 4) and Prob
        (1.0, 4.0, [2, 4, 6 / 5, 5 / 2, 4, 0, 0]),
        # T = 2: acc^-2 = 4, 25, 36/25, 25/4; cap 8^2 = 64
        (2.0, 8.0, [4, 25, 36 / 25, 25 / 4, 64, 0, 0]),
        # T = 1/2: acc^-1/2 = sqrt 2, sqrt 5, sqrt(6/5), sqrt(5/2); cap sqrt 8 (above sqrt 5)
        (0.5, 8.0, [R2, R5, math.sqrt(6 / 5), math.sqrt(5 / 2), R8, 0, 0]),
        # T = 1/2, cap sqrt 2 binds on Lin (= sqrt 2), Quad (sqrt 5), Num (sqrt 2.5) and Prob
        (0.5, 2.0, [R2, R2, math.sqrt(6 / 5), R2, R2, 0, 0]),
        # T = 0: every judged leaf weighs 1 (acc^0 = w_max^0 = 1)
        (0.0, 8.0, [1, 1, 1, 1, 1, 0, 0]),
    ],
)
def test_weight_is_min_of_acc_pow_minus_t_and_w_max_pow_t_and_target_is_their_share(
    tree, pool, temperature, w_max, weights
):
    weights = np.array(weights, dtype=np.float64)
    target = weights / weights.sum()  # e.g. T = 1, w_max = 8: (2, 5, 1.2, 2.5, 8) / 18.7
    for strategy in ("skill", "skill-match"):
        rep = select(pool, tree, k=1, strategy=strategy, temperature=temperature, w_max=w_max).report
        np.testing.assert_allclose(rep["accuracy_used"].to_numpy(), ACCURACY, rtol=1e-12)
        np.testing.assert_allclose(rep["weight"].to_numpy(), weights, rtol=1e-12)
        np.testing.assert_allclose(rep["target_share"].to_numpy(), target, rtol=1e-12, atol=0)


def test_smoothing_posterior_and_exclusion_change_the_accuracy_as_documented(tree, pool):
    # smoothing s = 1: (c + 1) / (a + 2) = 5/10, 3/12, 6/8, 3/7, 1/5; unjudged stays unjudged (weight 0)
    rep = select(pool, tree, k=1, smoothing=1.0).report
    np.testing.assert_allclose(rep["accuracy_used"], [1 / 2, 1 / 4, 3 / 4, 3 / 7, 1 / 5, NAN, NAN])
    np.testing.assert_allclose(rep["weight"], [2, 4, 4 / 3, 7 / 3, 5, 0, 0])
    # posterior with prior Beta(2, 2): (c + 2) / (a + 4) = 6/12, 4/14, 7/10, 4/9, 2/7
    rep = select(pool, tree, k=1, use_posterior=True, prior=(2.0, 2.0)).report
    np.testing.assert_allclose(rep["accuracy_used"][:5], [1 / 2, 2 / 7, 7 / 10, 4 / 9, 2 / 7])
    np.testing.assert_allclose(rep["weight"], [2, 7 / 2, 10 / 7, 9 / 4, 7 / 2, 0, 0])
    # excluded ids are removed before profiling: without quad1, Quad = (1 + 1) / (4 + 2) = 1/3 -> weight 3
    rep = select(pool, tree, k=1, exclude_ids=["quad1"]).report
    assert rep["judged_problems"].tolist() == [2, 2, 3, 2, 1, 0, 0]
    assert rep["accuracy"].iloc[1] == pytest.approx(1 / 3) and rep["weight"].iloc[1] == pytest.approx(3)


# ---------------------------------------------------------------- skill: leaf by weight, then a problem
@pytest.mark.parametrize("candidates", ["judged", "all"])
def test_skill_first_pick_has_the_documented_per_problem_probability(tree, pool, candidates):
    # The first pick is never a rejected duplicate, so P(first = x) = sum over x's leaves l of
    # (w_l / W) * (1 / n_l), n_l = the candidate problems on l (the eligible ones). T = 1, w_max = 8:
    # w = Lin 2, Quad 5, Geo 6/5, Num 5/2, Prob 8, W = 18.7 (Misc has no judged problem: weight 0);
    # n = Lin 2, Quad 3, Geo 3, Num 2, and Prob 1 when only judged problems are candidates (prob1), 2 when
    # all are (prob1 and the unjudged prob2, which Prob's accuracy, measured on prob1, now reaches too)
    w_total = 18.7
    n_prob = 1 if candidates == "judged" else 2
    expected = {
        "lin1": (2 / 2) / w_total,
        "linquad": (2 / 2 + 5 / 3) / w_total,  # reached through Lin or Quad
        "quad1": (5 / 3) / w_total,
        "half": (5 / 3) / w_total,
        "geo1": (1.2 / 3) / w_total,
        "geonum": (1.2 / 3 + 2.5 / 2) / w_total,
        "geo2": (1.2 / 3) / w_total,  # its two Geo chains are one leaf: no double chance
        "num1": (2.5 / 2) / w_total,
        "prob1": (8 / n_prob) / w_total,
        "prob2": 0.0 if candidates == "judged" else (8 / 2) / w_total,
        "misc1": 0.0,  # unjudged, and on a leaf of weight 0 either way
        "bare": 0.0,
    }
    assert sum(expected.values()) == pytest.approx(1.0)
    n = 1200
    firsts = Counter(
        select(pool, tree, k=1, seed=s, w_max=8.0, candidates=candidates).unique_ids[0] for s in range(n)
    )
    for uid, p in expected.items():
        if p == 0:
            assert firsts[uid] == 0, uid
        else:
            assert within(firsts[uid], n, p), (uid, firsts[uid], n * p)


def single_chain_pool(per_leaf: dict[str, int], correct_of: dict[str, int] | None = None) -> Pool:
    """``per_leaf[name]`` one-chain problems on top-level leaf ``name`` (ids ``name:i``); when
    ``correct_of`` is given, 4 attempts each with ``correct_of[name]`` of them correct."""
    ids, chains, attempts, correct = [], [], [], []
    for name, count in per_leaf.items():
        for i in range(count):
            ids.append(f"{name}:{i}")
            chains.append([[name]])
            attempts.append(4)
            correct.append(0 if correct_of is None else correct_of[name])
    if correct_of is None:
        return Pool.from_arrays(ids, chains)
    return Pool.from_arrays(ids, chains, attempts, correct)


# accuracy Geo 1/4, Num 2/4, Prob 0/4, Misc 4/4 (5,000 problems each, 4 attempts each)
BIG = 5000
ACC_CORRECT = {"Geo": 1, "Num": 2, "Prob": 0, "Misc": 4}


@pytest.fixture(scope="module")
def big_judged_pool() -> Pool:
    return single_chain_pool(dict.fromkeys(ACC_CORRECT, BIG), ACC_CORRECT)


@pytest.mark.parametrize(
    ("temperature", "w_max", "weights"),
    [
        # the paper's rule: probability inversely proportional to accuracy, 1/acc = 4, 2, cap 8, 1 (/15)
        (1.0, 8.0, [4, 2, 8, 1]),
        # acc^-2 = 16, 4, cap 64, 1 (/85)
        (2.0, 8.0, [16, 4, 64, 1]),
        # acc^-1/2 = 2, sqrt 2, cap sqrt 4 = 2, 1: Geo and the zero-accuracy leaf tie
        (0.5, 4.0, [2, math.sqrt(2), 2, 1]),
        # T = 0: uniform over judged leaves
        (0.0, 1000.0, [1, 1, 1, 1]),
    ],
)
def test_skill_selects_leaves_in_proportion_to_the_weights(
    tree, big_judged_pool, temperature, w_max, weights
):
    p = np.array(weights) / sum(weights)
    k, seeds = 20, range(150)
    n_picks = k * len(seeds)
    first: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for s in seeds:
        sel = select(big_judged_pool, tree, k=k, seed=s, temperature=temperature, w_max=w_max)
        assert len(set(sel.unique_ids)) == k
        leaves = [uid.split(":")[0] for uid in sel.unique_ids]
        first[leaves[0]] += 1
        total.update(leaves)
        np.testing.assert_allclose(sel.report["target_share"].iloc[2:6], p, rtol=1e-12)
    # the first pick follows the leaf distribution exactly (Binomial(150, p_l))
    # later picks: a draw through leaf l is rejected with probability s_l / 5000 <= 19 / 5000 (already
    # selected), so a pick's leaf probability is within p_l * delta / (1 - delta) of p_l, delta = 19/5000
    delta = (k - 1) / BIG
    for j, name in enumerate(ACC_CORRECT):
        assert within(first[name], len(seeds), p[j]), (name, first[name])
        assert within(total[name], n_picks, p[j], bias=p[j] * delta / (1 - delta)), (name, total[name])
    assert set(total) <= set(ACC_CORRECT)


# ---------------------------------------------------------------- random: uniform without replacement
def test_random_target_is_the_candidates_leaf_share(tree, pool):
    # all 12 problems are candidates: leaf occurrences 2, 3, 3, 2, 2, 1, 0 (13 in all)
    sel = select(pool, tree, k=12, strategy="random", seed=3)
    np.testing.assert_allclose(sel.report["target_share"], np.array([2, 3, 3, 2, 2, 1, 0]) / 13)
    assert sorted(sel.unique_ids) == sorted(IDS)  # K = N: everything, the leafless 'bare' included
    assert sel.summary["l2_to_target"] == pytest.approx(0, abs=1e-15)
    # without quad1 and misc1 the candidates' occurrences are 2, 2, 3, 2, 2, 0, 0 (11); the pool share
    # column still describes the whole pool (13 occurrences)
    sel = select(pool, tree, k=3, strategy="random", exclude_ids=["quad1", "misc1"])
    np.testing.assert_allclose(sel.report["target_share"], np.array([2, 2, 3, 2, 2, 0, 0]) / 11)
    np.testing.assert_allclose(sel.report["pool_share"], np.array([2, 3, 3, 2, 2, 1, 0]) / 13)
    # with a correct portion only judged problems are candidates: 2, 3, 3, 2, 1, 0, 0 (11)
    sel = select(pool, tree, k=4, strategy="random", correct_portion=0.5)
    np.testing.assert_allclose(sel.report["target_share"], np.array([2, 3, 3, 2, 1, 0, 0]) / 11)


def test_random_includes_each_problem_with_probability_k_over_n(tree, pool):
    # K = 3 of N = 12: each problem is in a selection with probability 3/12 (unjudged and leafless ones
    # too), and in first position with probability 1/12; the seeds are independent draws
    n = 600
    included: Counter[str] = Counter()
    first: Counter[str] = Counter()
    for s in range(n):
        ids = select(pool, tree, k=3, strategy="random", seed=s).unique_ids
        assert len(set(ids)) == 3
        included.update(ids)
        first[ids[0]] += 1
    for uid in IDS:
        assert within(included[uid], n, 3 / 12), (uid, included[uid])
        assert within(first[uid], n, 1 / 12), (uid, first[uid])


def test_random_draws_every_ordered_pair_equally_often(tree, pool):
    # 4 candidates (an unjudged one, a leafless one, two judged), K = 2: 12 ordered pairs, each 1/12
    keep = ["lin1", "prob1", "misc1", "bare"]
    exclude = [u for u in IDS if u not in keep]
    n = 600
    pairs = Counter(
        tuple(select(pool, tree, k=2, strategy="random", seed=s, exclude_ids=exclude).unique_ids)
        for s in range(n)
    )
    assert all(a != b and {a, b} <= set(keep) for a, b in pairs)
    assert len(pairs) == 12
    for pair, count in pairs.items():
        assert within(count, n, 1 / 12), (pair, count)


# ---------------------------------------------------------------- balanced: equal weight on the leaves
def test_balanced_target_is_uniform_over_the_leaves_with_a_candidate(tree, pool):
    # Lin..Misc have a candidate problem (judged or not), Empty has none: 1/6 each
    sel = select(pool, tree, k=3, strategy="balanced")
    np.testing.assert_allclose(sel.report["target_share"], [1 / 6] * 6 + [0])
    # excluding misc1 leaves Misc without a candidate: 1/5 on the other five
    sel = select(pool, tree, k=3, strategy="balanced", exclude_ids=["misc1"])
    np.testing.assert_allclose(sel.report["target_share"], [1 / 5] * 5 + [0, 0])
    # with a correct portion the candidates are the judged problems: Misc (only misc1) drops out
    sel = select(pool, tree, k=4, strategy="balanced", correct_portion=0.5)
    np.testing.assert_allclose(sel.report["target_share"], [1 / 5] * 5 + [0, 0])
    # a problem is reached through a leaf: the 11 problems with a leaf, never the leafless one
    assert sorted(select(pool, tree, k=11, strategy="balanced").unique_ids) == sorted(set(IDS) - {"bare"})
    with pytest.raises(SelectionError, match="exceeds"):
        select(pool, tree, k=12, strategy="balanced")


def test_balanced_gives_equal_expected_counts_on_equal_leaves(tree):
    # 4 leaves of 1,000 unjudged problems (balanced needs no verdicts), K = 40. The leaves are exchangeable,
    # so each leaf's expected count is exactly 40/4 = 10; over 250 seeds (10,000 picks) the total per leaf
    # is within 5 multinomial sigmas (sqrt(10000 * 1/4 * 3/4) = 43.3) of 2,500
    pool = single_chain_pool(dict.fromkeys(["Geo", "Num", "Prob", "Misc"], 1000))
    total: Counter[str] = Counter()
    for s in range(250):
        sel = select(pool, tree, k=40, strategy="balanced", seed=s)
        total.update(uid.split(":")[0] for uid in sel.unique_ids)
        np.testing.assert_allclose(sel.report["target_share"], [0, 0, 1 / 4, 1 / 4, 1 / 4, 1 / 4, 0])
    for name in ("Geo", "Num", "Prob", "Misc"):
        assert within(total[name], 10_000, 1 / 4), (name, total[name])


def test_balanced_exhausts_a_small_leaf_and_spreads_the_rest_evenly(tree):
    # Geo has 2 problems, the three others 400: target 1/4 each, but Geo can give only 2 of K = 150.
    # Geo is drawn with probability 1/4 per draw while it has problems left; it gives fewer than 2 distinct
    # problems in the (at least) 150 draws with probability <= 2 E[(1/2)^N] = 2 (7/8)^150 < 1e-8
    # (N ~ Binomial(150, 1/4) its draws). The other 148 picks fall on three exchangeable leaves: 148/3 each
    # in expectation; over 100 seeds within 5 sigma (sqrt(14800 * 1/3 * 2/3) = 57.3) of 4,933.
    pool = single_chain_pool({"Geo": 2, "Num": 400, "Prob": 400, "Misc": 400})
    total: Counter[str] = Counter()
    for s in range(100):
        sel = select(pool, tree, k=150, strategy="balanced", seed=s)
        leaves = Counter(uid.split(":")[0] for uid in sel.unique_ids)
        assert leaves["Geo"] == 2
        total.update(leaves)
        np.testing.assert_allclose(sel.report["target_share"].iloc[2:6], [1 / 4] * 4)
    for name in ("Num", "Prob", "Misc"):
        assert within(total[name], 14_800, 1 / 3), (name, total[name])


# ---------------------------------------------------------------- skill-match: greedy L2, worked by hand
def test_skill_match_follows_the_hand_worked_greedy_steps(tree):
    # Geo acc 1/4, Num and Prob acc 1/2 -> weights 4, 2, 2 -> target (1/2, 1/4, 1/4) on (Geo, Num, Prob).
    # D(c) = sum_l (c_l / sum c - t_l)^2 for the leaf counts c after adding a candidate:
    #  1: (1,0,0) .375   (0,1,0) .875                        -> Geo
    #  2: (2,0,0) .375   (1,1,0) .125                        -> Num
    #  3: (2,1,0) .0972  (1,2,0) .264   (1,1,1) .0417        -> Prob
    #  4: (2,1,1) 0                                          -> Geo
    #  5: (3,1,1) .015   (2,2,1) .035   (2,1,2) .035         -> Geo
    #  6: (4,1,1) .0417  (3,2,1) .0139  (3,1,2) .0139: tie   -> Num (its problems come first in the pool)
    #  7: (4,2,1) .0179  (3,3,1) .0485  (3,2,2) .00765       -> Prob
    #  8: (4,2,2) 0                                          -> Geo
    # within a leaf, the lowest pool index first
    pool = single_chain_pool({"Geo": 5, "Num": 4, "Prob": 4}, {"Geo": 1, "Num": 2, "Prob": 2})
    sel = select(pool, tree, k=8, strategy="skill-match")
    assert sel.unique_ids == ["Geo:0", "Num:0", "Prob:0", "Geo:1", "Geo:2", "Num:1", "Prob:1", "Geo:3"]
    assert sel.summary["l2_to_target"] == pytest.approx(0, abs=1e-15)
    # after 7 picks, (3, 2, 2) / 7 against (1/2, 1/4, 1/4): differences -1/14, 1/28, 1/28
    # L2 = sqrt(1/196 + 2/784) = sqrt(6)/28, TV = (1/14 + 2/28) / 2 = 1/14
    seven = select(pool, tree, k=7, strategy="skill-match")
    assert seven.unique_ids == sel.unique_ids[:7]
    assert seven.summary["l2_to_target"] == pytest.approx(math.sqrt(6) / 28, rel=1e-12)
    assert seven.summary["tv_to_target"] == pytest.approx(1 / 14, rel=1e-12)


# ---------------------------------------------------------------- difficulty: uniform within the band
def test_difficulty_band_is_inclusive_and_non_numbers_are_out(tree):
    values = {"a": "0.25", "b": 0.625, "c": 0.4, "d": 0.2, "e": "0.7", "f": "n/a", "g": None, "h": "hard"}
    in_band = ["a", "b", "c"]  # 0.25 <= v <= 0.625; 'n/a', None, 'hard' are out
    chains = {"a": [GEO], "b": [GEO, NUM], "c": [PROB], "d": [GEO], "e": [NUM], "f": [NUM], "g": [NUM]}
    ids = list(values)
    pool = Pool.from_arrays(
        ids, [chains.get(u, [MISC]) for u in ids], metadata=[{"rate": values[u]} for u in ids]
    )
    kw: dict[str, Any] = {
        "strategy": "difficulty",
        "difficulty_field": "rate",
        "difficulty_band": (0.25, 0.625),
    }
    sel = select(pool, tree, k=3, **kw)
    assert sorted(sel.unique_ids) == in_band
    # target: the in-band problems' leaf occurrences, Geo 2 (a, b), Num 1 (b), Prob 1 (c) of 4
    np.testing.assert_allclose(sel.report["target_share"], [0, 0, 2 / 4, 1 / 4, 1 / 4, 0, 0])
    with pytest.raises(SelectionError, match="rate in"):
        select(pool, tree, k=4, **kw)


# ---------------------------------------------------------------- correct portion and report figures
@pytest.mark.parametrize("strategy", ["skill", "skill-match", "random", "balanced"])
@pytest.mark.parametrize(
    ("portion", "k", "pattern"),
    [
        # floor(j/2 + 1/2) after j = 1..8 picks: 1,1,2,2,3,3,4,4 -> C W C W C W C W (all 4 correct ones)
        (0.5, 8, [True, False] * 4),
        # floor(j/4 + 1/2) after j = 1..4: 0,1,1,1 -> W C W W
        (0.25, 4, [False, True, False, False]),
        # floor(3j/4 + 1/2) after j = 1..5: 1,2,2,3,4 -> C C W C C (all 4 correct ones)
        (0.75, 5, [True, True, False, True, True]),
    ],
)
def test_correct_portion_counts_student_correct_problems_from_the_verdicts(
    tree, pool, strategy, portion, k, pattern
):
    for seed in (0, 1):
        sel = select(pool, tree, k=k, strategy=strategy, correct_portion=portion, seed=seed, w_max=8.0)
        ids = sel.unique_ids
        assert [student_correct(u) for u in ids] == pattern, ids
        assert [u in STUDENT_CORRECT for u in ids] == pattern
        assert all(judged(u) for u in ids)  # the rest are student-wrong, never unjudged
        # candidates="all" (the default), but a correct portion needs verdicts: the unjudged problems the
        # strategy could otherwise draw are left out and counted: prob2 and misc1 for the leaf strategies,
        # and also the leafless 'bare' for random
        assert sel.summary["candidates"] == "all"
        assert sel.summary["n_unjudged_left_out"] == (3 if strategy == "random" else 2)
        assert sel.summary["n_candidates"] == sel.summary["n_judged_candidates"] == 9
        n_correct = math.floor(portion * k + 0.5)
        s = sel.summary
        assert (s["n_selected_correct"], s["n_selected_wrong"], s["n_selected_unjudged"]) == (
            n_correct,
            k - n_correct,
            0,
        )
        right = histogram([u for u in ids if student_correct(u)])
        wrong = histogram([u for u in ids if not student_correct(u)])
        assert sel.report["selected_correct"].tolist() == right.tolist()
        assert sel.report["selected_wrong"].tolist() == wrong.tolist()
    # 4 student-correct problems: a portion asking for 5 cannot be met
    with pytest.raises(SelectionError, match="student-correct"):
        select(pool, tree, k=10, strategy=strategy, correct_portion=0.5, w_max=8.0)


def test_selected_correct_wrong_and_unjudged_of_the_whole_pool(tree, pool):
    sel = select(pool, tree, k=12, strategy="random")
    s = sel.summary
    # correct: lin1, geo1, geonum, geo2; wrong: linquad, quad1, half, num1, prob1; unjudged: prob2, misc1, bare
    assert (s["n_selected_correct"], s["n_selected_wrong"], s["n_selected_unjudged"]) == (4, 5, 3)
    # per leaf: Lin lin1 | linquad; Quad - | linquad, quad1, half; Geo geo1, geonum, geo2 | -;
    # Num geonum | num1; Prob - | prob1 (prob2 unjudged); Misc, Empty nothing judged
    assert sel.report["selected_correct"].tolist() == [1, 0, 3, 1, 0, 0, 0]
    assert sel.report["selected_wrong"].tolist() == [1, 3, 0, 1, 1, 0, 0]
    assert sel.report["selected"].tolist() == POOL_PROBLEMS


# hand targets per strategy on the hand pool (T = 1, w_max = 8 for the skill strategies)
HAND_TARGETS = {
    "skill": np.array([2, 5, 1.2, 2.5, 8, 0, 0]) / 18.7,
    "skill-match": np.array([2, 5, 1.2, 2.5, 8, 0, 0]) / 18.7,
    "random": np.array([2, 3, 3, 2, 2, 1, 0]) / 13,
    "balanced": np.array([1, 1, 1, 1, 1, 1, 0]) / 6,
}


@pytest.mark.parametrize("strategy", list(HAND_TARGETS))
def test_shares_l2_and_tv_are_computed_from_the_selected_leaf_occurrences(tree, pool, strategy):
    target = HAND_TARGETS[strategy]
    for seed in range(5):
        sel = select(pool, tree, k=5, strategy=strategy, seed=seed, w_max=8.0)
        counts = histogram(sel.unique_ids)
        selected = share(counts)
        rep = sel.report
        assert rep["selected"].tolist() == counts.tolist()
        np.testing.assert_allclose(rep["selected_share"], selected, rtol=1e-12)
        np.testing.assert_allclose(rep["target_share"], target, rtol=1e-12)
        np.testing.assert_allclose(rep["pool_share"], share(histogram(IDS)), rtol=1e-12)
        diff = selected - target
        assert sel.summary["l2_to_target"] == pytest.approx(math.sqrt(float((diff**2).sum())), rel=1e-12)
        assert sel.summary["tv_to_target"] == pytest.approx(float(np.abs(diff).sum()) / 2, rel=1e-12)
        assert sel.summary["max_target_share"] == pytest.approx(float(target.max()))


# ---------------------------------------------------------------- candidates: all tagged or judged only
# 12 problems; judged: the 9 with statuses; unjudged: prob2 (on Prob, which has a judged problem), misc1
# (the only problem on Misc, so Misc has no accuracy and weight 0) and bare (no chain).
JUDGED = set(IDS) - UNJUDGED


@pytest.mark.parametrize("strategy", ["skill", "skill-match", "random"])
def test_all_draws_unjudged_problems_and_judged_does_not(tree, pool, strategy):
    # the whole of what each strategy can reach: under "all" the unjudged prob2 is reached through Prob
    # (weighted by prob1's accuracy); misc1 only through the weightless Misc, so never by the skill
    # strategies; random takes every candidate, leafless and unjudged ones too
    reach_all = set(IDS) if strategy == "random" else set(IDS) - {"misc1", "bare"}
    sel = select(pool, tree, k=len(reach_all), strategy=strategy, w_max=8.0, candidates="all")
    assert set(sel.unique_ids) == reach_all and "prob2" in sel.unique_ids
    assert sel.summary["n_selected_unjudged"] == len(reach_all - JUDGED)
    sel = select(pool, tree, k=9, strategy=strategy, w_max=8.0, candidates="judged")
    assert set(sel.unique_ids) == JUDGED and sel.summary["n_selected_unjudged"] == 0
    with pytest.raises(SelectionError, match="K=10 exceeds"):
        select(pool, tree, k=10, strategy=strategy, w_max=8.0, candidates="judged")
    # and a draw smaller than the pool: over seeds, "all" picks unjudged problems, "judged" never does
    if strategy != "skill-match":  # deterministic: covered by the whole-reach check above
        picked_all = {
            u for s in range(40) for u in select(pool, tree, k=3, strategy=strategy, seed=s).unique_ids
        }
        picked_judged = {
            u
            for s in range(40)
            for u in select(pool, tree, k=3, strategy=strategy, seed=s, candidates="judged").unique_ids
        }
        assert "prob2" in picked_all and picked_judged <= JUDGED


# (strategy, candidates) -> (n_candidates, n_judged_candidates, n_available), counted by hand:
#   skill, skill-match, balanced draw from problems with a leaf: all 11 but 'bare' (9 judged); the skill
#   strategies reach 10 of them (not misc1, whose only leaf has weight 0), balanced all 11;
#   random draws from all 12 (9 judged); "judged" keeps the 9 judged ones, every one of them reachable
SUMMARY_COUNTS = {
    ("skill", "all"): (11, 9, 10),
    ("skill-match", "all"): (11, 9, 10),
    ("balanced", "all"): (11, 9, 11),
    ("random", "all"): (12, 9, 12),
    ("skill", "judged"): (9, 9, 9),
    ("skill-match", "judged"): (9, 9, 9),
    ("balanced", "judged"): (9, 9, 9),
    ("random", "judged"): (9, 9, 9),
}


@pytest.mark.parametrize(("strategy", "candidates"), list(SUMMARY_COUNTS))
def test_summary_counts_the_candidates_and_k_over_candidates(tree, pool, strategy, candidates):
    n_candidates, n_judged, n_available = SUMMARY_COUNTS[(strategy, candidates)]
    s = select(pool, tree, k=3, strategy=strategy, w_max=8.0, candidates=candidates).summary
    assert s["candidates"] == candidates
    assert (s["n_candidates"], s["n_judged_candidates"], s["n_available"]) == (
        n_candidates,
        n_judged,
        n_available,
    )
    assert s["k_over_candidates"] == pytest.approx(3 / n_candidates)  # e.g. 3/11, 3/12, 3/9
    assert s["n_unjudged_left_out"] == 0  # no correct portion: nothing left out for want of verdicts
    assert s["n_leaves_unjudged"] == 2  # Misc (only misc1, unjudged) and Empty (no problem)
    assert s["n_pool"] == 12


def test_summary_counts_exclusion_and_the_difficulty_band(tree):
    # 4 problems, 2 judged (a, c); b and d unjudged; d out of the band; a excluded
    pool = Pool.from_arrays(
        ["a", "b", "c", "d"],
        [[GEO], [GEO], [NUM], [NUM]],
        [2, 0, 1, 0],
        [1, 0, 0, 0],
        metadata=[{"rate": 0.5}, {"rate": 0.3}, {"rate": 0.4}, {"rate": 0.9}],
    )
    kw: dict[str, Any] = {"strategy": "difficulty", "difficulty_field": "rate", "exclude_ids": ["a"]}
    s = select(pool, tree, k=1, **kw).summary
    # in the band and not excluded: b, c (c judged)
    assert (s["n_candidates"], s["n_judged_candidates"], s["k_over_candidates"]) == (2, 1, 0.5)
    s = select(pool, tree, k=1, candidates="judged", **kw).summary
    assert (s["n_candidates"], s["n_judged_candidates"], s["k_over_candidates"]) == (1, 1, 1.0)
    # a correct portion: b is left out for want of a verdict
    s = select(pool, tree, k=1, correct_portion=0.0, **kw).summary
    assert (s["n_candidates"], s["n_unjudged_left_out"]) == (1, 1)
    # K = 0 over no candidate: no ratio
    s = select(pool, tree, k=0, exclude_ids=["a", "b", "c", "d"], strategy="random").summary
    assert s["n_candidates"] == 0 and s["k_over_candidates"] is None


@pytest.mark.parametrize("strategy", ["skill", "skill-match", "random", "difficulty", "balanced"])
def test_judged_candidates_without_verdicts_is_a_clear_error(tree, pool, strategy):
    # the same problems with no verdicts at all (a profile gives the skill strategies their accuracy)
    bare_pool = Pool.from_arrays(IDS, [PROBLEMS[u][0] for u in IDS], metadata=[{"rate": 0.5}] * len(IDS))
    from skillcore.profile import SkillProfile

    profile = SkillProfile.from_arrays(tree, pool.chains, pool.attempts, pool.correct)
    kw: dict[str, Any] = {"strategy": strategy, "difficulty_field": "rate", "profile": profile}
    with pytest.raises(SelectionError, match="candidates='judged' but no pool problem is judged"):
        select(bare_pool, tree, k=1, candidates="judged", **kw)
    assert len(select(bare_pool, tree, k=1, candidates="all", **kw)) == 1  # the default draws from all
