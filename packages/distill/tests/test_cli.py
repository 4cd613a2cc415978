"""The `distill` CLI: profile (resumable, MLflow), weakest, judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distill.cli import app
from skillcore import read_jsonl, write_jsonl
from typer.testing import CliRunner


def test_profile_weakest_judge(
    tiny_student_dir: Path, world_tree, world_pool_small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    world_tree.save(tmp_path / "tree.json")
    write_jsonl(tmp_path / "pool.jsonl", world_pool_small[:8])
    runner = CliRunner()
    args = [
        "profile",
        "--model", str(tiny_student_dir),
        "--tree", str(tmp_path / "tree.json"),
        "--pool", str(tmp_path / "pool.jsonl"),
        "--out", str(tmp_path / "out"),
        "--max-new-tokens", "96",
        "--device", "cpu",
        "--limit", "6",
        "--chunk-size", "3",
        "--top", "3",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "MLflow run:" in result.output and "| # | skill |" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["attempts"] == 6 and summary["generated_now"] == 6

    again = runner.invoke(app, [*args, "--no-mlflow"])  # resumes: nothing left to generate
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["resumed"] == 6

    greedy = [*args, "--no-mlflow", "--temperature", "0"]  # other settings: refused, then redone on request
    refused = runner.invoke(app, greedy)
    assert refused.exit_code == 2 and "--restart" in refused.output
    redone = runner.invoke(app, [*greedy, "--restart"])
    assert redone.exit_code == 0, redone.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generated_now"] == 6 and summary["resumed"] == 0

    weak = runner.invoke(
        app,
        [
            "weakest",
            "--profile",
            str(tmp_path / "out" / "profile.json"),
            "--tree",
            str(tmp_path / "tree.json"),
            "--k",
            "2",
            "--json",
        ],
    )
    assert weak.exit_code == 0, weak.output
    rows = json.loads(weak.output)
    assert len(rows) == 2 and rows[0]["accuracy"] <= rows[1]["accuracy"]

    judged = runner.invoke(
        app,
        [
            "judge",
            "--attempts",
            str(tmp_path / "out" / "attempts.jsonl"),
            "--pool",
            str(tmp_path / "pool.jsonl"),
            "--out",
            str(tmp_path / "v.jsonl"),
            "--workers",
            "0",
        ],
    )
    assert judged.exit_code == 0, judged.output
    mine = [(v["unique_id"], v["status"]) for v in read_jsonl(tmp_path / "v.jsonl")]
    saved = [(v["unique_id"], v["status"]) for v in read_jsonl(tmp_path / "out" / "verdicts.jsonl")]
    assert sorted(mine) == sorted(saved)


def test_profile_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "tree.json").write_text('{"name": "root", "children": [{"name": "a"}]}')
    base = ["profile", "--model", "m", "--tree", str(tmp_path / "tree.json"), "--out", str(tmp_path / "o")]
    no_url = runner.invoke(app, [*base, "--pool", str(tmp_path / "missing.jsonl"), "--engine", "openai"])
    assert no_url.exit_code == 2 and "base-url" in no_url.output
    no_pool = runner.invoke(app, [*base, "--pool", str(tmp_path / "missing.jsonl")])
    assert no_pool.exit_code == 2 and "missing.jsonl" in no_pool.output


def test_sft_evaluate_register(
    tiny_student_dir: Path,
    world_pool_small,
    world_benchmarks_small,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SKILLDISTILL_CACHE", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "selected.jsonl", world_pool_small[:16])
    for name, rows in world_benchmarks_small.items():
        write_jsonl(tmp_path / "world" / "benchmarks" / f"{name}.jsonl", rows)
    runner = CliRunner()
    trained = runner.invoke(
        app,
        ["sft", "--model", str(tiny_student_dir), "--data", str(tmp_path / "selected.jsonl"),
         "--out", str(tmp_path / "sft"), "--preset", "cpu-demo", "--set", "num_train_epochs=1",
         "--set", "save_steps=100"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "16 examples, 16 with a Skills block (0 dropped), placed at think" in trained.output
    assert "1 steps" in trained.output
    lines = [json.loads(line) for line in (tmp_path / "sft" / "train.jsonl").read_text().splitlines()]
    assert all(row["completion"].startswith("<think>\nSkills:\n") for row in lines)
    assert all(row["prompt"].endswith("<|im_start|>assistant\n") for row in lines)

    evaluated = runner.invoke(
        app,
        ["evaluate", "--model", str(tmp_path / "sft" / "model"), "--out", str(tmp_path / "eval"),
         "--benchmarks", "amc23,math-l5", "--world", str(tmp_path / "world"), "--preset", "cpu-demo",
         "--limit", "3", "--device", "cpu", "--no-mlflow"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "| amc23 | 3 |" in evaluated.output and "| math-l5 | 3 |" in evaluated.output

    registered = runner.invoke(
        app,
        ["register", "--model-dir", str(tmp_path / "sft" / "model"), "--name", "cli-student",
         "--eval-report", str(tmp_path / "eval" / "eval_report.json"), "--tag", "strategy=skill"],
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert "models:/cli-student/1" in registered.output and "first 'champion'" in registered.output
    version = MlflowClient(uri).get_model_version_by_alias("cli-student", "champion")
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert float(version.tags["eval.average"]) == pytest.approx(report["headline"])
    assert version.tags["strategy"] == "skill"

    bad = runner.invoke(app, ["evaluate", "--model", str(tiny_student_dir), "--out", str(tmp_path / "x"),
                              "--benchmarks", "aime2024"])  # fmt: skip
    assert bad.exit_code == 2 and "aime2024" in bad.output


def test_sharded_evaluation_merges_into_one_report(
    tiny_student_dir: Path, world_benchmarks_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Shards (one per GPU on a real machine) answer disjoint problems into one folder; the unsharded call
    then generates nothing and scores every problem; a shard that does not exist is refused."""
    from distill.rollout import shard_of

    for name, rows in world_benchmarks_small.items():
        write_jsonl(tmp_path / "world" / "benchmarks" / f"{name}.jsonl", rows)
    runner = CliRunner()
    base = ["evaluate", "--model", str(tiny_student_dir), "--out", str(tmp_path / "eval"), "--benchmarks",
            "amc23", "--world", str(tmp_path / "world"), "--preset", "cpu-demo", "--limit", "8",
            "--device", "cpu", "--no-mlflow"]  # fmt: skip
    ids = [p.unique_id for p in world_benchmarks_small["amc23"][:8]]
    for index in (0, 1):
        result = runner.invoke(app, [*base, "--shard", f"{index}/2"])
        assert result.exit_code == 0, result.output
        shard_rows = list(read_jsonl(tmp_path / "eval" / "amc23" / f"attempts.shard-{index}-of-2.jsonl"))
        assert sorted(r["unique_id"] for r in shard_rows) == sorted(i for i in ids if shard_of(i, 2) == index)
    assert not (tmp_path / "eval" / "amc23" / "attempts.jsonl").exists()
    merged = runner.invoke(app, base)
    assert merged.exit_code == 0, merged.output
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert report["benchmarks"]["amc23"]["n_problems"] == 8
    assert sum(report["benchmarks"]["amc23"]["status_counts"].values()) == 8
    merged_file = tmp_path / "eval" / "amc23" / "attempts.jsonl"
    assert not merged_file.exists() or merged_file.read_text() == ""  # nothing was left to generate
    bad = runner.invoke(app, [*base, "--shard", "2/2"])
    assert bad.exit_code == 2 and "0 <= I < N" in bad.output


def test_workers_answer_the_shards_in_processes_and_merge(
    tiny_student_dir: Path, world_benchmarks_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """``--workers 2``: two spawned processes write one shard file each (disjoint problems, every problem
    once), the calling process scores them all, and the greedy answers are the single process's."""
    from distill.rollout import shard_of

    for name, rows in world_benchmarks_small.items():
        write_jsonl(tmp_path / "world" / "benchmarks" / f"{name}.jsonl", rows)
    runner = CliRunner()
    ids = [p.unique_id for p in world_benchmarks_small["amc23"][:8]]
    answers = {}
    for workers in (1, 2):
        out = tmp_path / f"eval-{workers}"
        result = runner.invoke(app, ["evaluate", "--model", str(tiny_student_dir), "--out", str(out),
                                     "--benchmarks", "amc23", "--world", str(tmp_path / "world"), "--preset",
                                     "cpu-demo", "--limit", "8", "--device", "cpu", "--no-mlflow",
                                     "--batch-size", "1", "--workers", str(workers)])  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = [r for path in sorted((out / "amc23").glob("attempts*.jsonl")) for r in read_jsonl(path)]
        assert sorted(r["unique_id"] for r in rows) == sorted(ids)  # every problem answered once
        answers[workers] = {r["unique_id"]: r["response"] for r in rows}
        report = json.loads((out / "eval_report.json").read_text())
        assert sum(report["benchmarks"]["amc23"]["status_counts"].values()) == 8
    for index in (0, 1):
        shard_rows = list(read_jsonl(tmp_path / "eval-2" / "amc23" / f"attempts.shard-{index}-of-2.jsonl"))
        assert sorted(r["unique_id"] for r in shard_rows) == sorted(i for i in ids if shard_of(i, 2) == index)
    assert answers[2] == answers[1]  # batch size 1: no padding, the same greedy answers
    from distill.parallel import answer_in_shards

    with pytest.raises(ValueError, match="for the hf engine"):
        answer_in_shards(print, 2, engine="vllm")


def test_profile_and_weakest_take_the_tree_duplicate_policy(tmp_path: Path) -> None:
    from skillcore import SkillProfile, SkillTree
    from skillcore.synthetic import with_duplicate_siblings

    leaves = [["A", "x"], ["A", "y"], ["A", "z"], ["B", "u"], ["B", "v"]]
    tree = SkillTree.from_dict(
        {
            "name": "r",
            "children": [{"name": n, "children": [{"name": c} for a, c in leaves if a == n]} for n in "AB"],
        }
    )
    (tmp_path / "dup.json").write_text(json.dumps(with_duplicate_siblings(tree.to_dict())))
    SkillProfile.from_arrays(tree, [[leaf] for leaf in leaves], [4] * 5, [0, 1, 2, 3, 4]).save(
        tmp_path / "profile.json"
    )
    runner = CliRunner(env={"COLUMNS": "400"})  # rich's error box would wrap or cut a long path

    def flat(output: str) -> str:
        return " ".join(output.replace("│", " ").split())

    base = ["profile", "--model", "m", "--tree", str(tmp_path / "dup.json"), "--out", str(tmp_path / "o")]
    base += ["--pool", str(tmp_path / "missing.jsonl"), "--no-mlflow"]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    merged = runner.invoke(app, [*base, "--tree-duplicates", "merge"])  # the tree is read; the pool is not
    assert (
        merged.exit_code == 2 and "missing.jsonl" in flat(merged.output) and "duplicate" not in merged.output
    )

    weak = ["weakest", "--profile", str(tmp_path / "profile.json"), "--tree", str(tmp_path / "dup.json")]
    weak += ["--k", "2", "--json"]
    refused = runner.invoke(app, weak)
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    shown = runner.invoke(app, [*weak, "--tree-duplicates", "merge"])
    assert shown.exit_code == 0, shown.output
    assert len(json.loads(shown.stdout)) == 2
    assert SkillTree.load(tmp_path / "dup.json", duplicates="merge").content_hash() == tree.content_hash()
