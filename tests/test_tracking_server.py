"""A shared tracking server as teams run it: ``mlflow server`` on a real PostgreSQL backend store with
``--serve-artifacts``, and the pipeline run against it over HTTP; runs, datasets, artifacts and the
registered model version are read back through the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from skillcore.testing import mlflow_server, postgres_cluster

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pipeline_against_a_postgres_backed_tracking_server(
    tiny_student_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with postgres_cluster() as backend, mlflow_server(backend, tmp_path / "artifacts") as url:
        assert backend.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        workdir = tmp_path / "run"
        result = subprocess.run(
            [sys.executable, str(ROOT / "pipelines" / "distill.py"), "--registry-model", "pg-student",
             "--workdir", str(workdir), "--student", str(tiny_student_dir), "--preset", "smoke",
             "--set", "data.world_pool_size=120", "--set", "data.world_suite_size=4", "--set", "profile.limit=24",
             "--budget", "8", "--set", "profile.sampling.max_new_tokens=64", "--set", "evaluate.eval.limit=2"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"tracking store: {url} (from MLFLOW_TRACKING_URI)" in result.stdout

        client = MlflowClient(tracking_uri=url, registry_uri=url)
        summary = json.loads((workdir / "summary.json").read_text())
        parent = client.get_run(summary["run_id"])
        children = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        assert {r.info.run_name for r in children} >= {"tag", "profile", "select:skill", "register"}
        contexts = {
            {t.key: t.value for t in d.tags}.get("mlflow.data.context")
            for r in children
            for d in r.inputs.dataset_inputs
        }
        assert {"pool", "tagged", "training", "evaluation"} <= contexts
        # artifacts went through the server's proxy into its artifact folder, not a local mlruns/
        stages_file = client.download_artifacts(parent.info.run_id, "pipeline/stages.json", str(tmp_path))
        stages = json.loads(Path(stages_file).read_text())
        assert stages["register"]["model"] == "models:/pg-student/1"
        assert any((tmp_path / "artifacts").rglob("stages.json")) and not (tmp_path / "mlruns").exists()

        version = client.get_model_version_by_alias("pg-student", "candidate")
        assert version.version in ("1", 1) and version.tags["skilldistill.strategy"] == "skill"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("SKILLDISTILL_CACHE", str(tmp_path / "cache"))
        from distill.models import resolve_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = resolve_model("models:/pg-student@candidate")  # downloaded over HTTP
        assert AutoTokenizer.from_pretrained(local).chat_template
        assert AutoModelForCausalLM.from_pretrained(local).config.model_type == "qwen3"
