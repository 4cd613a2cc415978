"""The analysis stage's skill naming: files in the stage folder and ``naming/...`` metrics on its MLflow
run, from the fine-tuned student's saved answers (hand-built stage results, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill.formatting import FormatConfig
from skillcore import Attempt, TaggedProblem, Verdict, write_jsonl
from skillpipe import stages
from skillpipe.cache import StageResult

TREE = {"name": "root", "children": [{"name": "A", "children": [{"name": "a1"}, {"name": "a2"}]}]}
PROBLEMS = [
    TaggedProblem(unique_id=u, question=f"q {u}", expected_answer="1", chains=[["A", leaf]])
    for u, leaf in (("p1", "a1"), ("p2", "a2"))
]
ANSWERS = [  # (problem, response, status): p1 named right and correct, p2 named wrong and wrong
    ("p1", "<think>\nSkills:\nA->a1\n\n1 = 1\n</think>\n\n\\boxed{1}", "correct"),
    ("p2", "<think>\nSkills:\nA->a1\n\n2 = 2\n</think>\n\n\\boxed{2}", "wrong"),
]


def result(tmp_path: Path, name: str, outputs: dict[str, str]) -> StageResult:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    return StageResult(name, name, folder, outputs, {k: f"digest-{name}-{k}" for k in outputs})


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, StageResult]:
    tree = result(tmp_path, "data", {"tree": "tree.json"})
    (tree.dir / "tree.json").write_text(json.dumps(TREE))
    bench = result(tmp_path, "benchmarks", {"benchmarks": "."})
    write_jsonl(bench.dir / "x.jsonl", PROBLEMS)
    (bench.dir / "repeats.json").write_text(json.dumps({"x": 1}))
    answered = {}
    for name, answers in (("before", [(u, "", "wrong") for u, _, _ in ANSWERS]), ("after", ANSWERS)):
        answered[name] = result(tmp_path, name, {"report": "eval_report.json"})
        write_jsonl(
            answered[name].dir / "x" / "attempts.jsonl",
            [Attempt(unique_id=u, response=r) for u, r, _ in answers],
        )
        write_jsonl(
            answered[name].dir / "x" / "verdicts.jsonl",
            [Verdict.model_validate({"unique_id": u, "status": s}) for u, _, s in answers],
        )
    selected = result(tmp_path, "select", {"selected": "selected.jsonl"})
    write_jsonl(selected.dir / "selected.jsonl", PROBLEMS[:1])
    return {"tree": tree, "bench": bench, "selected": selected, **answered}


def test_analysis_stage_writes_and_logs_the_naming(
    inputs: dict[str, StageResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        st = stages.Stages(tmp_path / "work")
        i = inputs
        args = (i["tree"], i["bench"], i["before"], i["after"], i["selected"])
        aware = stages.analysis(st, "skill-skill", *args, fmt=FormatConfig(skill_aware=True))
        plain = stages.analysis(st, "skill-plain", *args, fmt=FormatConfig())
        client = MlflowClient(tracking_uri=uri)
        runs = {
            r.info.run_name: r.data.metrics
            for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
        }
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert aware.info["naming_rate"] == 0.5 and aware.info["block_rate"] == 1.0
    lines = aware.path("naming").read_text().splitlines()
    assert lines[0].startswith("benchmark,answers,named,named_right,correct")
    assert (aware.dir / "naming.md").read_text().splitlines()[
        2
    ] == "| x | 2 | 100.0 | 50.0 | 50.0 | 100.0 (1) | 0.0 (1) |"
    metrics = runs["analysis:skill-skill"]
    assert metrics["naming/rate"] == 0.5 and metrics["naming/x/rate"] == 0.5
    assert metrics["naming/acc_named_right"] == 1.0 and metrics["naming/acc_named_wrong"] == 0.0
    assert metrics["naming/block_rate"] == 1.0 and "gain_n_leaves" in metrics
    # a plain arm: the block rate (and counts) only; the key differs with the format
    assert (
        "naming/rate" not in runs["analysis:skill-plain"]
        and "naming/block_rate" in runs["analysis:skill-plain"]
    )
    assert plain.key != aware.key and (plain.dir / "naming.csv").is_file()
