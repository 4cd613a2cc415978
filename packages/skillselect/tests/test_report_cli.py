import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from skillcore.io import read_jsonl, write_jsonl
from skillcore.profile import SkillProfile
from skillcore.tracking import pipeline_run
from skillselect import Pool, log_selection, select
from skillselect.cli import app
from skillselect.testing import random_records
from typer.testing import CliRunner


def test_log_selection_to_sqlite_store_and_read_back(tree, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    tagged, verdicts = random_records(60, seed=3)
    pool = Pool.from_records(tagged, verdicts)
    sel = select(pool, tree, k=12, strategy="skill", seed=4, w_max=10.0, exclude_ids=["q0001"])
    with pipeline_run("distill-test", experiment="skillselect-test") as parent:
        run_id = log_selection(sel, source="pool.jsonl")
    assert mlflow.active_run() is None
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["skilldistill.stage"] == "select"
    assert run.data.tags["skillselect.strategy"] == "skill"
    assert run.data.params["k"] == "12" and run.data.params["w_max"] == "10.0"
    assert run.data.params["strategy"] == "skill" and run.data.params["n_exclude_ids"] == "1"
    assert run.data.metrics["n_selected"] == 12
    assert run.data.metrics["l2_to_target"] == sel.summary["l2_to_target"]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "selected-skill-k12"
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    listed = {a.path for a in client.list_artifacts(run_id, "select")}
    assert listed == {
        "select/report.json",
        "select/report.csv",
        "select/summary.json",
        "select/target_vs_selected.png",
    }
    report = pd.read_csv(client.download_artifacts(run_id, "select/report.csv", str(tmp_path)))
    assert report["selected"].tolist() == sel.report["selected"].tolist()
    rows = list(
        read_jsonl(client.download_artifacts(run_id, "datasets/selected-skill-k12.jsonl", str(tmp_path)))
    )
    assert [r["unique_id"] for r in rows] == sel.unique_ids
    assert rows[0]["solution"].startswith("<think>")


def write_inputs(tree, tmp_path):
    tagged, verdicts = random_records(90, seed=6)
    tree.save(tmp_path / "tree.json")
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    (tmp_path / "heldout.txt").write_text("q0000\nq0001\n")
    return tagged, verdicts


def test_cli_end_to_end_with_verdicts(tree, tmp_path):
    tagged, verdicts = write_inputs(tree, tmp_path)
    out, report_dir = tmp_path / "selected.jsonl", tmp_path / "report"
    args = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--verdicts", str(tmp_path / "verdicts.jsonl")]
    args += ["--tree", str(tmp_path / "tree.json"), "--k", "20", "--strategy", "skill", "--seed", "3"]
    args += ["--out", str(out), "--report-dir", str(report_dir), "-T", "0.5", "--w-max", "10"]
    args += ["--exclude", str(tmp_path / "heldout.txt")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_selected"] == 20 and summary["n_excluded"] == 2
    rows = list(read_jsonl(out))
    expected = select(
        Pool.from_records(tagged, verdicts),
        tree,
        k=20,
        seed=3,
        temperature=0.5,
        w_max=10.0,
        exclude_ids=["q0000", "q0001"],
    )
    assert [r["unique_id"] for r in rows] == expected.unique_ids
    assert rows[0]["chains"] and rows[0]["question"]
    assert sorted(p.name for p in report_dir.iterdir()) == [
        "report.csv",
        "selected_ids.txt",
        "summary.json",
        "target_vs_selected.png",
    ]
    saved = json.loads((report_dir / "summary.json").read_text())
    assert saved["config"]["temperature"] == 0.5 and saved["summary"]["n_selected"] == 20
    assert (report_dir / "target_vs_selected.png").stat().st_size > 10_000


def test_cli_with_a_profile_and_errors(tree, tmp_path):
    tagged, verdicts = write_inputs(tree, tmp_path)
    SkillProfile.from_records(tree, tagged, verdicts).save(tmp_path / "profile.json")
    runner = CliRunner()
    base = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--tree", str(tmp_path / "tree.json")]
    result = runner.invoke(
        app,
        [
            *base,
            "--profile",
            str(tmp_path / "profile.json"),
            "--k",
            "10",
            "--strategy",
            "skill-match",
            "--out",
            str(tmp_path / "m.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list(read_jsonl(tmp_path / "m.jsonl"))) == 10
    too_many = runner.invoke(app, [*base, "--k", "1000", "--strategy", "random"])
    assert too_many.exit_code == 2 and "exceeds what the pool can give" in too_many.output
    no_acc = runner.invoke(app, [*base, "--k", "5"])
    assert no_acc.exit_code == 2 and "needs per-leaf accuracy" in no_acc.output
    partial = runner.invoke(app, [*base, "--k", "1000", "--strategy", "random", "--allow-partial"])
    assert partial.exit_code == 0 and json.loads(partial.stdout)["n_selected"] == 90
    (tmp_path / "bad.jsonl").write_text('{"unique_id": "a"}\n')
    bad = runner.invoke(
        app, ["select", "--pool", str(tmp_path / "bad.jsonl"), "--tree", str(tmp_path / "tree.json")]
    )
    assert bad.exit_code == 2 and "row 1: not a TaggedProblem" in bad.output


def test_console_script_and_mlflow_flag(tree, tmp_path):
    write_inputs(tree, tmp_path)
    exe = [str(Path(sys.executable).parent / "skillselect")]  # the console script
    listed = subprocess.run([*exe, "strategies"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[0] for line in listed.splitlines()] == [
        "skill",
        "skill-match",
        "random",
        "difficulty",
        "balanced",
    ]
    uri = f"sqlite:///{tmp_path}/cli.db"
    env = {"MLFLOW_TRACKING_URI": uri, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [
        *exe,
        "select",
        "--pool",
        str(tmp_path / "pool.jsonl"),
        "--verdicts",
        str(tmp_path / "verdicts.jsonl"),
        "--tree",
        str(tmp_path / "tree.json"),
        "--k",
        "8",
        "--mlflow",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = json.loads(done.stdout)["mlflow_run_id"]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.metrics["n_selected"] == 8


def test_cli_option_plumbing(tree, tmp_path):
    tagged, verdicts = write_inputs(tree, tmp_path)
    base = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--verdicts", str(tmp_path / "verdicts.jsonl")]
    base += ["--tree", str(tmp_path / "tree.json"), "--report-dir", str(tmp_path / "r")]
    flags = [
        "--k",
        "12",
        "--strategy",
        "skill-match",
        "--posterior",
        "--prior",
        "2,3",
        "--correct-portion",
        "0.5",
    ]
    flags += ["--skill", "Algebra", "--skill", "Counting", "--max-depth", "2"]
    result = CliRunner().invoke(app, [*base, *flags])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_selected_correct"] == 6
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())["config"]
    assert (
        saved["prior"] == [2.0, 3.0]
        and saved["skills"] == ["Algebra", "Counting"]
        and saved["max_depth"] == 2
    )
    report = pd.read_csv(tmp_path / "r" / "report.csv")
    assert report["chain"].tolist() == ["Algebra->Linear", "Algebra->Quadratic", "Counting"]
    expected = select(
        Pool.from_records(tagged, verdicts),
        tree,
        k=12,
        strategy="skill-match",
        use_posterior=True,
        prior=(2.0, 3.0),
        correct_portion=0.5,
        skills=["Algebra", "Counting"],
        max_depth=2,
    )
    assert (tmp_path / "r" / "selected_ids.txt").read_text().split() == expected.unique_ids
    bad = CliRunner().invoke(app, [*base, "--prior", "2"])
    assert bad.exit_code == 2 and "alpha,beta" in bad.output


def test_cli_candidates_option_and_k_over_candidates(tree, tmp_path):
    tagged, verdicts = random_records(90, seed=6, judged_share=0.5)
    judged = {v.unique_id for v in verdicts}
    assert 20 < len(judged) < 70
    tree.save(tmp_path / "tree.json")
    write_jsonl(tmp_path / "pool.jsonl", tagged)
    write_jsonl(tmp_path / "verdicts.jsonl", verdicts)
    base = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--verdicts", str(tmp_path / "verdicts.jsonl")]
    base += ["--tree", str(tmp_path / "tree.json"), "--k", "60", "--strategy", "random"]
    runner = CliRunner()
    every = runner.invoke(app, [*base, "--out", str(tmp_path / "all.jsonl")])  # the default: all
    assert every.exit_code == 0, every.output
    summary = json.loads(every.stdout)
    assert (summary["candidates"], summary["n_candidates"], summary["n_judged_candidates"]) == (
        "all",
        90,
        len(judged),
    )
    assert summary["k_over_candidates"] == pytest.approx(60 / 90)
    assert f"K / candidates = 60 / 90 = 66.67% (candidates=all: {len(judged)} of them judged)" in every.stderr
    assert {r["unique_id"] for r in read_jsonl(tmp_path / "all.jsonl")} - judged  # unjudged ones drawn
    only = runner.invoke(
        app, [*base, "--k", "20", "--candidates", "judged", "--out", str(tmp_path / "judged.jsonl")]
    )
    assert only.exit_code == 0, only.output
    summary = json.loads(only.stdout)
    assert summary["n_candidates"] == summary["n_judged_candidates"] == len(judged)
    assert summary["k_over_candidates"] == pytest.approx(20 / len(judged))
    assert {r["unique_id"] for r in read_jsonl(tmp_path / "judged.jsonl")} <= judged
    bad = runner.invoke(app, [*base, "--candidates", "some"])
    assert bad.exit_code == 2 and "--candidates must be 'all' or 'judged'" in bad.output
    no_verdicts = ["select", "--pool", str(tmp_path / "pool.jsonl"), "--tree", str(tmp_path / "tree.json")]
    none = runner.invoke(app, [*no_verdicts, "--k", "5", "--strategy", "random", "--candidates", "judged"])
    assert none.exit_code == 2 and "no pool problem is judged" in none.output
