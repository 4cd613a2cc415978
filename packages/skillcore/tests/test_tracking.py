import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
from mlflow.tracking import MlflowClient
from skillcore.records import PoolProblem
from skillcore.tracking import (
    log_dataset,
    log_figure,
    log_json,
    pipeline_run,
    resolve_tracking_uri,
    stage_run,
)


def test_runs_inputs_and_artifacts_round_trip(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts land under tmp_path
    assert resolve_tracking_uri() == uri
    rows = [PoolProblem(unique_id=f"p{i}", question=f"q{i}", expected_answer=str(i)) for i in range(5)]
    with (
        pipeline_run(
            "distill-test", experiment="skillcore-test", params={"k": 3, "sel": {"T": 0.5}}
        ) as parent,
        stage_run("select") as child,
    ):
        ds = log_dataset(rows, name="selected", context="training", artifact=True)
        log_json({"leaves": 3}, "report/summary.json")
        fig, ax = plt.subplots()
        ax.bar(["a", "b"], [1, 2])
        log_figure(fig, "report/target.png")
        mlflow.log_metric("selected", 5)

    client = MlflowClient(tracking_uri=uri)
    parent_run = client.get_run(parent.info.run_id)
    assert parent_run.data.params == {"k": "3", "sel.T": "0.5"}
    child_run = client.get_run(child.info.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child_run.data.tags["skilldistill.stage"] == "select"
    inputs = child_run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "selected" and inputs[0].dataset.digest == ds.digest
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    listed = {a.path for a in client.list_artifacts(child.info.run_id, "report")}
    assert listed == {"report/summary.json", "report/target.png"}
    summary = client.download_artifacts(child.info.run_id, "report/summary.json", str(tmp_path))
    with open(summary) as fh:
        assert json.load(fh) == {"leaves": 3}
    data = client.download_artifacts(child.info.run_id, "datasets/selected.jsonl", str(tmp_path))
    with open(data) as fh:
        assert sum(1 for _ in fh) == 5


def test_one_rule_decides_the_tracking_store(tmp_path, monkeypatch):
    """env > a URI set in the process > the project's [tool.skilldistill] (nearest pyproject.toml above the
    current folder, relative paths anchored at it) > MLflow's default; every answer says where it came from."""
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from skillcore.tracking import tracking_store, use_experiment

    project = tmp_path / "project"
    (project / "packages" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.skilldistill]\ntracking_uri = "sqlite:///store/mlflow.db"\n'
        'artifact_root = "store/artifacts"\n'
    )
    (project / "store").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.chdir(project / "packages" / "deep")  # a command run from a sub-folder...
    store = tracking_store()
    assert store.uri == f"sqlite:///{project / 'store' / 'mlflow.db'}"  # ...opens the project's store
    assert store.source == f"{project / 'pyproject.toml'} [tool.skilldistill]"
    assert store.artifact_root == str(project / "store" / "artifacts")
    assert resolve_tracking_uri() == store.uri and tracking_store() == store
    assert "from " + str(project / "pyproject.toml") in tracking_store().describe()
    use_experiment("anchored")
    experiment = mlflow.get_experiment_by_name("anchored")
    assert experiment.artifact_location == (project / "store" / "artifacts").as_uri()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert (
        tracking_store().source == "MLFLOW_TRACKING_URI" and tracking_store().uri == "http://127.0.0.1:5999"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/other.db")  # a caller's own choice wins over the project
    assert tracking_store().uri == f"sqlite:///{tmp_path}/other.db"

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri exports it
    assert tracking_store().source.startswith("MLflow default")
    mlflow.set_tracking_uri(None)


FIRST_USE = """
import os, sys, time
from pathlib import Path
import mlflow  # imported before the start signal: the processes race on the store, not on imports
from skillcore.tracking import pipeline_run, stage_run
go = Path(sys.argv[1])
(go.parent / f"{go.name}-ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.005)
with pipeline_run("first-use", experiment="fresh"), stage_run("tag"):
    mlflow.log_metric("x", 1.0)
print("ok")
"""


def test_two_first_calls_on_a_new_sqlite_store_both_succeed(tmp_path):
    """Processes opening one new SQLite store at the same moment: each creates the tables unless the store's
    first use is serialised; without that the later ones fail ("table experiments already exists")."""
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "first_use.py"
    script.write_text(FIRST_USE)
    for attempt in range(1):
        uri = f"sqlite:///{tmp_path}/store{attempt}/mlflow.db"
        (tmp_path / f"store{attempt}").mkdir()
        go = tmp_path / f"go{attempt}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(go)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob(f"go{attempt}-ready-*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        outcomes = [p.communicate(timeout=300) for p in procs]
        for proc, (out, err) in zip(procs, outcomes, strict=True):
            assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
        runs = MlflowClient(tracking_uri=uri).search_runs(
            [MlflowClient(tracking_uri=uri).get_experiment_by_name("fresh").experiment_id]
        )
        assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
