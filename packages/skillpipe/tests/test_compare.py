"""The comparison's statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from distill.eval import NamingCounts, naming_report
from skillcore import Attempt, TaggedProblem, Verdict, write_jsonl
from skillpipe.compare import (
    ARMS,
    BASELINE,
    leaf_accuracy,
    macro_average,
    naming_table,
    paired_difference,
    paired_table,
    parse_arms,
    problem_scores,
    results_markdown,
    results_table,
    skill_gain_table,
)
from skillpipe.stages import read_attempts, read_verdicts


def test_arms_always_include_the_random_baseline_and_unknown_ones_are_refused():
    assert [a.name for a in parse_arms("skill-skill")] == [BASELINE, "skill-skill"]
    names = [a.name for a in parse_arms(None)]
    assert names[0] == BASELINE and {"skill-skill", "random-skill", "skill-plain-paperw"} <= set(names)
    paper = next(a for a in parse_arms("skill-plain-paperw") if a.name == "skill-plain-paperw")
    assert paper.select == {"temperature": 1.0, "w_max": 1000.0} and not paper.skill_aware
    with pytest.raises(ValueError, match="unknown arm"):
        parse_arms("skill-skill,nope")


def test_problem_scores_average_samples_and_the_headline_is_a_macro_average():
    verdicts = [
        Verdict(unique_id="a", sample_index=0, status="correct"),
        Verdict(unique_id="a", sample_index=1, status="wrong"),
        Verdict(unique_id="b", sample_index=0, status="timeout"),
    ]
    scores = problem_scores({"x": verdicts, "y": [Verdict(unique_id="c", status="correct")]})
    assert scores == {"x": {"a": 0.5, "b": 0.0}, "y": {"c": 1.0}}
    assert macro_average(scores) == pytest.approx((0.25 + 1.0) / 2)  # not the pooled 1.5 / 3


def runs_fixture() -> dict:
    # two benchmarks (2 and 4 problems), two seeds; the arm gains 1 problem on x in seed 0 only
    base0 = {"x": {"a": 0.0, "b": 1.0}, "y": {"c": 0.0, "d": 0.0, "e": 1.0, "f": 1.0}}
    arm0 = {"x": {"a": 1.0, "b": 1.0}, "y": {"c": 0.0, "d": 0.0, "e": 1.0, "f": 1.0}}
    return {(BASELINE, 0): base0, (BASELINE, 1): base0, ("skill-skill", 0): arm0, ("skill-skill", 1): base0}


def test_results_table_gives_the_mean_and_half_range_over_seeds():
    table = results_table(runs_fixture()).set_index("arm")
    assert table.loc[BASELINE, "x"] == 0.5 and table.loc[BASELINE, "x_spread"] == 0.0
    # skill-skill on x: 1.0 (seed 0) and 0.5 (seed 1) -> mean 0.75, half range 0.25
    assert (
        table.loc["skill-skill", "x"] == pytest.approx(0.75) and table.loc["skill-skill", "x_spread"] == 0.25
    )
    # averages: seed 0 (1.0 + 0.5) / 2 = 0.75, seed 1 0.5 -> mean 0.625
    assert table.loc["skill-skill", "average"] == pytest.approx(0.625)
    assert table.loc["skill-skill", "seeds"] == 2


def test_paired_difference_is_the_macro_average_of_per_problem_differences():
    runs = runs_fixture()
    arm = {s: v for (a, s), v in runs.items() if a == "skill-skill"}
    base = {s: v for (a, s), v in runs.items() if a == BASELINE}
    result = paired_difference(arm, base, n_resamples=4000, seed=1)
    # per problem, averaged over seeds: x.a +0.5, the rest 0 -> x mean +0.25, y 0 -> macro +0.125
    assert result["difference"] == pytest.approx(0.125)
    assert result["seeds"] == 2 and result["problems"] == 6
    # bootstrap within x: the mean of 2 draws of {0.5, 0} is 0, 0.25 or 0.5 (prob 1/4, 1/2, 1/4), halved
    assert result["low"] == pytest.approx(0.0) and result["high"] == pytest.approx(0.25)
    same = paired_difference(base, base)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "seeds": 2, "problems": 6}
    table = paired_table(runs)
    assert list(table["arm"]) == ["skill-skill"] and table["difference"][0] == pytest.approx(0.125)


def test_per_leaf_gains_over_the_base_student():
    chains = {"x": {"a": [["A", "L1"]], "b": [["A", "L1"], ["B", "L2"]]}, "y": {"c": [["B", "L2"]]}}
    base = {"x": {"a": 0.0, "b": 1.0}, "y": {"c": 0.0}}
    assert leaf_accuracy(base, chains) == {"L1": 0.5, "L2": 0.5}
    runs = {
        ("skill-skill", 0): {"x": {"a": 1.0, "b": 1.0}, "y": {"c": 0.0}},
        ("skill-skill", 1): {"x": {"a": 0.0, "b": 1.0}, "y": {"c": 1.0}},
    }
    frame = skill_gain_table(runs, base, chains).set_index("leaf")
    # L1: seeds 1.0 and 0.5 -> 0.75 - 0.5; L2: seeds 0.5 and 1.0 -> 0.75 - 0.5
    assert frame.loc["L1", "skill-skill"] == pytest.approx(0.25)
    assert frame.loc["L2", "skill-skill"] == pytest.approx(0.25)
    assert np.isclose(frame["base"], 0.5).all()


def test_naming_table_means_over_seeds_and_results_markdown_shows_it():
    arms = [ARMS[BASELINE], ARMS["skill-skill"], ARMS["random-skill"]]
    naming = {
        # skill-skill: seed 0 names 2 of 4 right (1 of them correct; 1 of the other 2), seed 1 names 0 of 4
        ("skill-skill", 0): NamingCounts(answers=4, named=4, named_right=2, correct=2, correct_named_right=1),
        ("skill-skill", 1): NamingCounts(answers=4, named=3, named_right=0, correct=1, correct_named_right=0),
        (BASELINE, 0): NamingCounts(answers=4, named=0, named_right=0, correct=3, correct_named_right=0),
        (BASELINE, 1): NamingCounts(answers=4, named=0, named_right=0, correct=2, correct_named_right=0),
    }
    frame = naming_table(naming, arms)
    assert list(frame.columns) == [
        "arm",
        "skill_aware",
        "seeds",
        "answers",
        "named_right",
        "block_rate",
        "rate",
        "acc_named_right",
        "acc_named_wrong",
    ]
    assert list(frame["arm"]) == [BASELINE, "skill-skill"]  # random-skill has no counts: no row
    row = frame.set_index("arm").loc["skill-skill"]
    assert bool(row["skill_aware"]) and row["seeds"] == 2 and row["answers"] == 8 and row["named_right"] == 2
    assert row["block_rate"] == pytest.approx((4 / 4 + 3 / 4) / 2)
    assert row["rate"] == pytest.approx((2 / 4 + 0 / 4) / 2)
    assert row["acc_named_right"] == pytest.approx(1 / 2)  # seed 1 named nothing right: left out of the mean
    assert row["acc_named_wrong"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    plain = frame.set_index("arm").loc[BASELINE]
    assert plain["block_rate"] == 0.0 and math.isnan(plain["acc_named_right"])

    table = results_table(runs_fixture())
    paired = paired_table(runs_fixture())
    before = results_markdown(table, paired, arms)
    text = results_markdown(table, paired, arms, frame)
    assert text.startswith(before.split("Arms:")[0])  # the existing tables are unchanged
    assert before.split("Arms:")[1] == text.split("Arms:")[1]
    assert "| arm | targets | seeds | block (%) | named right (%) | acc. named right (%) |" in text
    assert "| skill-skill | skill-aware | 2 | 87.5 | 25.0 | 50.0 | 37.5 | 8 | 2 |" in text
    assert f"| {BASELINE} | plain | 2 | 0.0 | 0.0 | n/a | 62.5 | 8 | 0 |" in text
    assert results_markdown(table, paired, arms, frame.iloc[0:0]) == before


def test_naming_reads_the_saved_answers_of_an_evaluation(tmp_path):
    """The evaluation's folders keep each answer's response (attempts, shard files included) beside its
    verdict: the naming is derived from them."""
    folder = tmp_path / "aime24"
    write_jsonl(folder / "attempts.jsonl", [Attempt(unique_id="a", response="<think>\nSkills:\nX->x1\n\nok")])
    write_jsonl(folder / "attempts.shard-1-of-2.jsonl", [Attempt(unique_id="b", response="no block")])
    write_jsonl(folder / "verdicts.jsonl", [Verdict(unique_id="a", status="correct")])
    write_jsonl(folder / "verdicts.shard-1-of-2.jsonl", [Verdict(unique_id="b", status="wrong")])
    problems = {
        "aime24": [
            TaggedProblem(unique_id=u, question="q", expected_answer="1", chains=[["X", "x1"]]) for u in "ab"
        ]
    }
    report = naming_report(problems, {"aime24": read_attempts(folder)}, {"aime24": read_verdicts(folder)})
    assert report.overall == NamingCounts(answers=2, named=1, named_right=1, correct=1, correct_named_right=1)
