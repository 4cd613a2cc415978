import io
import math

import numpy as np
import pandas as pd
import pytest
from distill.eval.analysis import (
    NamingCounts,
    gain_correlation,
    gains_markdown,
    leaf_accuracy,
    naming_report,
    plot_gains,
    selection_share,
    skill_gains,
)
from skillcore import Attempt, SkillTree, TaggedProblem, Verdict

TREE = SkillTree.from_dict(
    {
        "name": "r",
        "children": [
            {"name": "A", "children": [{"name": "a1"}, {"name": "a2"}]},
            {"name": "B", "children": [{"name": "b1"}, {"name": "b2"}, {"name": "b3"}]},
        ],
    }
)


def tagged(uid, *chains):
    return TaggedProblem(
        unique_id=uid, question=f"q {uid}", expected_answer="1", chains=[list(c) for c in chains]
    )


PROBLEMS = [
    tagged("p1", ("A", "a1")),
    tagged("p2", ("A", "a1"), ("B", "b1")),
    tagged("p3", ("A", "a2")),
    tagged("p4", ("B", "b1")),
    tagged("p5", ("X", "x")),  # not in the tree: skipped
    tagged("p6", ("B", "b2")),  # judged after fine-tuning only
]


def judged(outcomes):
    """{uid: [True, False, ...]} -> verdicts, one per sample."""
    return [
        Verdict(unique_id=uid, sample_index=i, status="correct" if ok else "wrong")
        for uid, oks in outcomes.items()
        for i, ok in enumerate(oks)
    ]


BEFORE = judged({"p1": [1, 0], "p2": [0, 0], "p3": [1, 1], "p4": [0, 1], "p5": [1, 1]})
AFTER = judged({"p1": [1, 1], "p2": [1, 0], "p3": [1, 0], "p4": [1, 1], "p5": [0, 0], "p6": [1, 0]})
SELECTED = [
    tagged("s1", ("A", "a1")),
    tagged("s2", ("A", "a1"), ("B", "b1")),
    tagged("s3", ("B", "b1"), ("B", "b1")),  # the same chain twice counts once
    tagged("s4", ("A", "a1")),
]


def test_leaf_accuracy_counts_samples_per_leaf():
    acc = leaf_accuracy(TREE, PROBLEMS, BEFORE)
    assert acc == {
        "A->a1": {"problems": 2, "n": 4, "correct": 1, "accuracy": 0.25},
        "A->a2": {"problems": 1, "n": 2, "correct": 2, "accuracy": 1.0},
        "B->b1": {"problems": 2, "n": 4, "correct": 1, "accuracy": 0.25},
    }
    with pytest.raises(ValueError, match="not paths of the tree"):
        leaf_accuracy(TREE, PROBLEMS, BEFORE, unknown="error")


def test_selection_share():
    share = selection_share(SELECTED)
    assert share == {"A->a1": 0.75, "B->b1": 0.5}
    assert selection_share([]) == {}


def test_skill_gains_rows():
    frame = skill_gains(TREE, PROBLEMS, BEFORE, AFTER, selection_share(SELECTED))
    assert list(frame["leaf"]) == ["A->a1", "A->a2", "B->b1", "B->b2"]  # b3 never judged: no row
    assert list(frame["name"]) == ["a1", "a2", "b1", "b2"]
    rows = frame.set_index("leaf")
    assert rows.loc["A->a1", ["acc_before", "acc_after", "gain", "share"]].tolist() == [0.25, 0.75, 0.5, 0.75]
    assert rows.loc["A->a2", ["acc_before", "acc_after", "gain", "share"]].tolist() == [1.0, 0.5, -0.5, 0.0]
    assert rows.loc["B->b1", ["acc_before", "acc_after", "gain", "share"]].tolist() == [0.25, 0.75, 0.5, 0.5]
    assert rows.loc[
        "B->b1", ["problems", "n_before", "n_after", "correct_before", "correct_after"]
    ].tolist() == [
        2,
        4,
        4,
        1,
        3,
    ]
    b2 = rows.loc["B->b2"]
    assert math.isnan(b2["acc_before"]) and math.isnan(b2["gain"]) and b2["acc_after"] == 0.5
    assert b2["n_before"] == 0


def test_gain_correlation_against_numpy():
    frame = skill_gains(TREE, PROBLEMS, BEFORE, AFTER, selection_share(SELECTED))
    corr = gain_correlation(frame)
    share = np.array([0.75, 0.0, 0.5])  # the NaN-gain leaf is left out
    gain = np.array([0.5, -0.5, 0.5])
    assert corr["n_leaves"] == 3
    assert corr["pearson"] == pytest.approx(np.corrcoef(share, gain)[0, 1])
    ranks = pd.Series(share).rank().to_numpy(), pd.Series(gain).rank().to_numpy()
    assert corr["spearman"] == pytest.approx(np.corrcoef(*ranks)[0, 1])
    assert corr["pearson_p"] is not None and 0.0 <= corr["pearson_p"] <= 1.0


def test_gain_correlation_undefined_cases():
    two = pd.DataFrame({"gain": [0.1, 0.2, np.nan], "share": [0.1, 0.3, 0.5]})
    assert gain_correlation(two) == {
        "n_leaves": 2,
        "pearson": None,
        "pearson_p": None,
        "spearman": None,
        "spearman_p": None,
    }
    flat_share = pd.DataFrame({"gain": [0.1, 0.2, 0.3], "share": [0.2, 0.2, 0.2]})
    assert gain_correlation(flat_share)["pearson"] is None
    flat_gain = pd.DataFrame({"gain": [0.0, 0.0, 0.0, 0.0], "share": [0.1, 0.2, 0.3, 0.4]})
    corr = gain_correlation(flat_gain)
    assert corr["n_leaves"] == 4 and corr["spearman"] is None


def test_plot_gains_renders():
    frame = skill_gains(TREE, PROBLEMS, BEFORE, AFTER, selection_share(SELECTED))
    fig = plot_gains(frame)
    (ax,) = fig.axes
    assert "Pearson r = " in ax.get_title() and "3 leaves" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["a1", "a2", "b1"]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gains_markdown():
    frame = skill_gains(TREE, PROBLEMS, BEFORE, AFTER, selection_share(SELECTED))
    text = gains_markdown(frame)
    lines = text.splitlines()
    assert lines[2] == "| A->a1 | 2 | 25.0 | 75.0 | +50.0 | 75.0 |"
    assert lines[3] == "| B->b1 | 2 | 25.0 | 75.0 | +50.0 | 50.0 |"
    assert lines[4] == "| A->a2 | 1 | 100.0 | 50.0 | -50.0 | 0.0 |"
    assert lines[5] == "| B->b2 | 1 | n/a | 50.0 | n/a | 0.0 |"
    assert "Spearman rho" in lines[-1] and "3 leaves" in lines[-1]


# ----------------------------------------------------------------------------------- skill naming
# (benchmark, problem, sample, response, verdict status), written by hand; the comment says how it counts
NAMING_ANSWERS = [
    ("x", "p1", 0, "<think>\nSkills:\nA->a1\n\n1 + 0 = 1\n</think>\n\n\\boxed{1}", "correct"),  # right
    ("x", "p1", 1, "<think>\nSkills:\nA->a2\n\n2 - 1 = 1\n</think>\n\n\\boxed{2}", "wrong"),  # wrong leaf
    ("x", "p2", 0, "<think>\nSkills:\nB->b9\nB->b1\n\n...</think>\n\n\\boxed{5}", "wrong"),  # 2nd chain right
    ("x", "p2", 1, "<think>\nThe sum is 3.\n</think>\n\n\\boxed{3}", "wrong"),  # no block
    ("x", "p3", 0, "<think>\nSkills:\nB->>b2 garbled\n\n...</think>\n\n\\boxed{1}", "correct"),  # garbled
    ("x", "p3", 1, "Skills: b2\n\n...\n\\boxed{1}", "correct"),  # the leaf alone: right
    ("x", "p4", 0, "<think>\nSkills:\nA->a1\n</think>", "correct"),  # untagged problem: left out
    ("y", "q1", 0, "<think>\nSkills:\nA->b1\n</think>\n\n\\boxed{7}", "error"),  # wrong parent, unjudged
    ("y", "q1", 1, "<think>\nSkills:\n\n7 = 7\n</think>\n\n\\boxed{7}", "correct"),  # an empty block
]
NAMING_PROBLEMS = {
    "x": [
        tagged("p1", ("A", "a1")),
        tagged("p2", ("A", "a1"), ("B", "b1")),
        tagged("p3", ("B", "b2")),
        tagged("p4"),
    ],
    "y": [tagged("q1", ("B", "b1"))],
}


def naming_inputs():
    attempts: dict[str, list[Attempt]] = {"x": [], "y": []}
    verdicts: dict[str, list[Verdict]] = {"x": [], "y": []}
    for bench, uid, sample, response, status in NAMING_ANSWERS:
        attempts[bench].append(Attempt(unique_id=uid, sample_index=sample, response=response))
        verdicts[bench].append(
            Verdict.model_validate({"unique_id": uid, "sample_index": sample, "status": status})
        )
    # a duplicate verdict (the first one counts) and an answer to a problem not given (ignored)
    verdicts["x"].append(Verdict(unique_id="p1", sample_index=0, status="wrong"))
    verdicts["y"].append(Verdict(unique_id="zz", status="correct"))
    attempts["y"].append(Attempt(unique_id="zz", response="Skills:\nB->b1"))
    return attempts, verdicts


def test_naming_rate_and_accuracies_against_hand_computed_values():
    attempts, verdicts = naming_inputs()
    report = naming_report(NAMING_PROBLEMS, attempts, verdicts)
    # x: 6 answers; blocks p1s0 p1s1 p2s0 p3s0 p3s1; right p1s0 p2s0 p3s1; correct p1s0 p3s0 p3s1
    x = report.benchmarks["x"]
    assert x == NamingCounts(answers=6, named=5, named_right=3, correct=3, correct_named_right=2)
    assert (x.rate, x.block_rate) == (pytest.approx(3 / 6), pytest.approx(5 / 6))
    assert x.acc_named_right == pytest.approx(2 / 3)  # p1s0, p3s1 of p1s0, p2s0, p3s1
    assert x.acc_named_wrong == pytest.approx(1 / 3)  # p3s0 of p1s1, p2s1, p3s0
    # y: 2 answers, both with a block, none right; one correct (the error verdict is not)
    y = report.benchmarks["y"]
    assert y == NamingCounts(answers=2, named=2, named_right=0, correct=1, correct_named_right=0)
    assert y.rate == 0.0 and math.isnan(y.acc_named_right) and y.acc_named_wrong == pytest.approx(1 / 2)
    overall = report.overall
    assert overall == NamingCounts(answers=8, named=7, named_right=3, correct=4, correct_named_right=2)
    assert overall.rate == pytest.approx(3 / 8) and overall.block_rate == pytest.approx(7 / 8)
    assert overall.acc_named_right == pytest.approx(2 / 3) and overall.acc_named_wrong == pytest.approx(2 / 5)
    assert report.untagged == 1

    metrics = report.metrics()
    assert metrics["naming/rate"] == pytest.approx(0.375) and metrics["naming/x/rate"] == pytest.approx(0.5)
    assert metrics["naming/acc_named_wrong"] == pytest.approx(0.4) and metrics["naming/answers"] == 8
    assert "naming/y/acc_named_right" not in metrics  # NaN: no answer of y named right
    assert set(report.metrics(block_only=True)) == {
        f"naming/{scope}{key}" for scope in ("", "x/", "y/") for key in ("block_rate", "answers", "named")
    }
    frame = report.frame().set_index("benchmark")
    assert list(frame.index) == ["x", "y", "overall"]
    assert frame.loc["overall", "correct_named_wrong"] == 2 and frame.loc["x", "named_right"] == 3
    lines = report.markdown().splitlines()
    assert lines[2] == "| x | 6 | 83.3 | 50.0 | 50.0 | 66.7 (3) | 33.3 (3) |"
    assert lines[3] == "| y | 2 | 100.0 | 0.0 | 50.0 | n/a (0) | 50.0 (2) |"
    assert lines[4] == "| **overall** | 8 | 87.5 | 37.5 | 50.0 | 66.7 (3) | 40.0 (5) |"
    assert "1 answer(s) to problems without skill chains left out." in lines


def test_naming_of_a_plain_student_and_of_nothing():
    plain = {"x": [Attempt(unique_id="p1", response="<think>\n1 + 0 = 1\n</think>\n\n\\boxed{1}")]}
    judged_plain = {"x": [Verdict(unique_id="p1", status="correct")]}
    counts = naming_report({"x": NAMING_PROBLEMS["x"]}, plain, judged_plain).overall
    assert counts.block_rate == 0.0 and counts.rate == 0.0 and counts.acc_named_wrong == 1.0
    empty = naming_report({"x": NAMING_PROBLEMS["x"]}, {}, {})
    assert empty.overall == NamingCounts() and math.isnan(empty.overall.rate)
    assert empty.metrics() == {"naming/answers": 0.0, "naming/named": 0.0, "naming/named_right": 0.0,
                               "naming/x/answers": 0.0, "naming/x/named": 0.0, "naming/x/named_right": 0.0}  # fmt: skip
