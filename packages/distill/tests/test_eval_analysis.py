import io
import math

import numpy as np
import pandas as pd
import pytest
from distill.eval.analysis import (
    gain_correlation,
    gains_markdown,
    leaf_accuracy,
    plot_gains,
    selection_share,
    skill_gains,
)
from skillcore import SkillTree, TaggedProblem, Verdict

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
