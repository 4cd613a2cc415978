"""`skilltagger cascade` as a user runs it: against a scripted OpenAI-compatible server that tags right (the
outputs, the report, a rerun that asks the LLM nothing the cache holds, usage errors), and end to end
against a real `transformers serve` with the tiny Qwen3 student (it tags badly: the mechanics are checked,
not the quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from skillcore import TaggedProblem, read_jsonl, write_jsonl
from skilltag.testing import ScriptedModel, knows_chains, small_problems
from skilltagger.cli import app
from typer.testing import CliRunner


def _args(pool: Path, out: Path, tree: Path, url: str, model: str, **extra: Any) -> list[str]:
    args = ["cascade", "--tree", str(tree), "--pool", str(pool), "--out", str(out), "--base-url", url]
    args += ["--model", model, "--threads", "1"]
    for key, value in {"seed-size": 12, "holdout": 4, "threshold": 0.65, **extra}.items():
        args += [f"--{key}", str(value)]
    return args


def test_cascade_command_with_a_scripted_llm(
    tmp_path: Path, tree_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "cascade-test")
    problems = small_problems(30)
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, problems)
    out = tmp_path / "tagged.jsonl"
    runner = CliRunner()
    model = ScriptedModel(knows_chains(problems))
    with model as url:
        done = runner.invoke(app, _args(pool, out, tree_file, url, "scripted"))
        assert done.exit_code == 0, done.output
        first = len(model.asked)
        report = json.loads((tmp_path / "tagged.jsonl.cascade.json").read_text())
        again = runner.invoke(app, [*_args(pool, out, tree_file, url, "scripted"), "--no-mlflow"])
        assert again.exit_code == 0, again.output
        assert len(model.asked) == first  # the rerun found every LLM answer in the cache
    rows = [TaggedProblem.model_validate(r) for r in read_jsonl(out)]
    assert [r.unique_id for r in rows] == [p["unique_id"] for p in problems]
    assert report["problems"] == 30 and report["seed"] == 12 and report["holdout"] == 4
    assert report["llm"]["problems"] == 12 + report["fallbacks"]
    assert report["llm"]["requests"] == first  # depth-2 tree: a root and a category request each
    assert first == 2 * report["llm"]["problems"]
    exemplars = list(read_jsonl(tmp_path / "tagged.jsonl.exemplars.jsonl"))
    assert len(exemplars) == 8
    sources = [r.metadata["tagger"]["cascade"]["source"] for r in rows]
    assert sources.count("seed") == 8 and sources.count("holdout") == 4
    assert sources.count("fallback") == report["fallbacks"]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["problems"] == 30 and summary["llm_calls"] == 0  # all from the cache this time
    assert {"saved_calls_per_100k", "agreement_f1", "fallbacks"} <= set(summary)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["cascade-test"])
    assert len(runs) == 1 and runs["metrics.llm_calls"].iloc[0] == first


def test_cascade_command_usage_errors(tmp_path: Path, tree_file: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, small_problems(6))
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    url = "http://127.0.0.1:9/v1"
    missing = runner.invoke(app, [*_args(pool, out, tmp_path / "nope.json", url, "m"), "--no-mlflow"])
    assert missing.exit_code == 2 and "not found" in missing.output
    holdout = runner.invoke(app, [*_args(pool, out, tree_file, url, "m", holdout=12), "--no-mlflow"])
    assert holdout.exit_code == 2 and "holdout" in holdout.output
    no_url = runner.invoke(app, ["cascade", "--tree", str(tree_file), "--pool", str(pool), "--out", str(out)])
    assert no_url.exit_code == 2 and "--base-url" in no_url.output
    write_jsonl(pool, [{"unique_id": "x", "solution": "no question"}])
    bad = runner.invoke(app, [*_args(pool, out, tree_file, url, "m"), "--no-mlflow"])
    said = " ".join(bad.output.replace("│", " ").split())  # the error box's borders and wrapping out
    assert bad.exit_code == 2 and "row 1" in said and "question" in said
    assert not out.exists()


def test_cascade_command_against_transformers_serve(
    tiny_student_dir: Path, tmp_path: Path, tree_file: Path
) -> None:
    from distill.testing import openai_server

    problems = small_problems(8)
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, problems)
    out = tmp_path / "tagged.jsonl"
    with openai_server(tiny_student_dir) as url:
        # every score is at most 1: with threshold 1.01 every cheap-tagged problem goes back to the LLM
        extra = {"seed-size": 4, "holdout": 1, "threshold": 1.01}
        args = _args(pool, out, tree_file, url, str(tiny_student_dir), **extra)
        done = CliRunner().invoke(app, [*args, "--no-mlflow"])
    assert done.exit_code == 0, done.output
    rows = [TaggedProblem.model_validate(r) for r in read_jsonl(out)]
    assert len(rows) == 8
    report = json.loads((tmp_path / "tagged.jsonl.cascade.json").read_text())
    assert report["fallbacks"] == 4 and report["llm"]["problems"] == 8  # the seed, then the rest
    assert report["llm"]["requests"] >= report["llm"]["problems"]  # at least the root of each walk
    assert report["llm"]["fallback_requests"] >= 4
    assert report["agreement"]["n"] == 1
    for row in rows:  # whatever the tiny model said, only real chains survive
        assert all(len(c) == 2 for c in row.chains)
        source = row.metadata["tagger"]["cascade"]["source"]
        assert row.metadata["tagger"]["backend"] == ("embedding" if source == "cheap" else "openai")
    print(json.dumps({k: report[k] for k in ("fallbacks", "llm", "sources")}))
