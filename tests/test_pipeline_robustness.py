"""Nothing lost, nothing stuck (#25): the pipeline as a user runs it (a subprocess, real SQLite MLflow
stores) when two calls share a workdir, when a call is killed with -9, and when the same shipped student
is registered in a new store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from skillcore import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "distill.py"
# a small world with the shipped student (no --student): the stages a rerun may reuse all run
SMALL = [
    "--preset", "smoke", "--set", "data.world_pool_size=80", "--set", "data.world_suite_size=3",
    "--set", "profile.limit=16", "--budget", "8", "--set", "engine.batch_size=16",
]  # fmt: skip


def env_for(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "COLUMNS": "400"}  # fmt: skip


def start(args: list[str], uri: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=env_for(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stages_of(workdir: Path) -> dict[str, dict]:
    return json.loads((workdir / "summary.json").read_text())["stages"]


def output(stage: dict, name: str) -> Path:
    folder = Path(stage["dir"])
    return folder / json.loads((folder / "manifest.json").read_text())["outputs"][name]


@pytest.mark.slow
def test_two_calls_on_one_workdir_one_refused_and_a_new_store_reuses_the_stages(tmp_path):
    """Two calls started together on one workdir and one fresh store: one holds the workdir, the other is
    refused at once (exit 2, naming the holder); the tag file has each problem once. Then the same call on
    another new store, where the shipped student is registered anew: same fingerprint, stages reused."""
    uri = f"sqlite:///{tmp_path}/first.db"
    workdir = tmp_path / "run"
    args = ["--registry-model", "shared", "--workdir", str(workdir), *SMALL]
    procs = [start(args, uri, tmp_path)]
    time.sleep(1)
    procs.append(start(args, uri, tmp_path))
    outcomes = [p.communicate(timeout=900) for p in procs]
    done = [(p.returncode, out, err) for p, (out, err) in zip(procs, outcomes, strict=True)]
    codes = sorted(code for code, _, _ in done)
    assert codes == [0, 2], [err[-3000:] for _, _, err in done]
    (refused,) = [err for code, _, err in done if code == 2]
    message = " ".join(refused.split())
    assert f"error: {workdir} is in use by pid " in message and "use another --workdir" in message
    assert len(refused.strip().splitlines()) == 1, refused  # one line, no traceback
    stages = stages_of(workdir)
    ids = [r["unique_id"] for r in read_jsonl(output(stages["tag"], "tagged"))]
    assert len(ids) == len(set(ids)) == 80
    assert not list(workdir.glob("*/*.partial"))  # every stage folder finished and renamed into place

    # the same shipped student, registered in a new store: one fingerprint, the stages keyed on it reused
    second = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env_for(f"sqlite:///{tmp_path}/second.db"),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    again = stages_of(workdir)
    assert again["student"]["source"] == "shipped"  # registered in the new store, not found there
    assert again["student"]["fingerprint"] == stages["student"]["fingerprint"]
    for name in (
        "profile",
        "evaluate:base",
        "format:skill-skill",
        "train:skill-skill",
        "evaluate:skill-skill",
    ):
        assert again[name]["reused"] is True and again[name]["key"] == stages[name]["key"], name


@pytest.mark.slow
def test_runs_left_running_by_a_killed_call_are_marked_killed_by_the_next(tmp_path):
    """kill -9 in the middle of profiling leaves the parent run RUNNING (nothing can end it); the next call on the workdir ends it as KILLED with a note, says so, and finishes."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = ["--registry-model", "killed", "--workdir", str(workdir), *SMALL,
            "--set", "profile.limit=48", "--set", "engine.batch_size=8"]  # fmt: skip
    proc = start(args, uri, tmp_path)

    def saved_attempts() -> list[Path]:
        return [p for p in (workdir / "profile").glob("*/attempts.jsonl") if p.stat().st_size > 0]

    while not saved_attempts() and proc.poll() is None:
        time.sleep(0.2)  # a hang is caught by the per-test timeout
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("skilldistill")
    left = {r.info.run_id: r.info.run_name for r in client.search_runs([experiment.experiment_id])
            if r.info.status == "RUNNING"}  # fmt: skip
    assert "distill:killed" in left.values()  # the parent run (and any stage run open at the kill)

    again = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env_for(uri), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    for run_id, name in left.items():
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and run.info.end_time is not None, name
        assert f"left RUNNING by pid {proc.pid}" in run.data.tags["mlflow.note.content"]
        assert f"[mlflow] run {run_id} was left RUNNING by {name} of pid {proc.pid}" in again.stdout
    statuses = {r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert "RUNNING" not in statuses
    assert json.loads((workdir / "mlflow-runs.json").read_text()) == {}


def test_an_unusable_workdir_is_one_line_before_anything_runs(tmp_path):
    """A workdir that cannot be written (here: under a file; a read-only folder fails the same way, but
    root, who runs the tests, writes anywhere) stops the call in one line (exit 2), no traceback, no run."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--registry-model", "nowhere", "--workdir", str(blocker / "run"), *SMALL]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env_for(uri),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: cannot use the workdir {blocker / 'run'}: Not a directory"
    ]
    assert not (tmp_path / "mlflow.db").exists()
