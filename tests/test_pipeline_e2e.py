"""The pipeline end to end on a small offline world, as a user runs it: a subprocess, a real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from skillcore import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "distill.py"


def run_pipeline(args: list[str], tracking_uri: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_resumes(tmp_path, tiny_student_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = [
        "--registry-model", "e2e-student", "--workdir", str(workdir), "--student", str(tiny_student_dir),
        "--pool-size", "240", "--suite-size", "5", "--profile-limit", "40", "--k", "12",
        "--max-new-tokens", "96", "--batch-size", "20", "--sft-preset", "cpu-demo", "--eval-preset", "cpu-demo",
    ]  # fmt: skip
    first = run_pipeline(args, uri, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    summary = json.loads((workdir / "summary.json").read_text())
    stages = summary["stages"]
    assert {"data", "student", "tag", "profile", "select:skill", "select:random"} <= set(stages)
    assert {"train:skill-skill", "evaluate:base", "evaluate:skill-skill", "register"} <= set(stages)
    assert stages["tag"]["problems"] == 240 and stages["profile"]["problems"] == 40
    assert stages["train:skill-skill"]["steps"] == 3  # 12 examples, batch 16, 3 epochs (cpu-demo)
    assert stages["register"]["model"] == "models:/e2e-student/1" and stages["register"]["champion"] is True

    verdicts = {r["unique_id"] for r in read_jsonl(workdir / "profile" / "verdicts.jsonl")}
    assert len(verdicts) == 40
    for name in ("skill", "random"):
        selected = list(read_jsonl(workdir / "select" / name / "selected.jsonl"))
        assert len(selected) == 12 and {r["unique_id"] for r in selected} <= verdicts
        assert all(r["chains"] for r in selected)

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(summary["run_id"])
    assert parent.data.params["registry_model"] == "e2e-student"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {r.data.tags.get("skilldistill.stage") for r in children} >= {"data", "tag", "profile", "select"}
    assert {r.info.run_name for r in children} >= {"select:skill", "select:random"}
    contexts = {
        {t.key: t.value for t in d.tags}.get("mlflow.data.context")
        for r in children
        for d in r.inputs.dataset_inputs
    }
    assert {"pool", "tagged", "training", "evaluation"} <= contexts
    assert {r.info.run_name for r in children} >= {"train:skill-skill", "evaluate:base", "register"}

    # the fine-tuned student is registered with its lineage, as candidate and (first version) champion
    version = client.get_model_version_by_alias("e2e-student", "candidate")
    assert client.get_model_version_by_alias("e2e-student", "champion").version == version.version
    train_run = next(r for r in children if r.info.run_name == "train:skill-skill")
    assert version.tags["skilldistill.train_run_id"] == train_run.info.run_id
    assert (
        version.tags["skilldistill.strategy"] == "skill"
        and version.tags["skilldistill.skill_aware"] == "True"
    )
    report = json.loads((workdir / "evaluate" / "skill-skill" / "eval_report.json").read_text())
    assert float(version.tags["eval.average"]) == pytest.approx(report["headline"], abs=1e-6)
    assert set(report["benchmarks"]) == {"aime24", "aime25", "amc23", "math-l5", "olympiadbench"}
    assert all(b["n_problems"] == 5 for b in report["benchmarks"].values())
    assert "train/train_loss" in train_run.data.metrics  # the trainer's logs reach the stage run
    assert (workdir / "analysis" / "skill-skill" / "skill_gains.png").stat().st_size > 5_000
    trained_text = (workdir / "train").glob("skill-skill-*/train.jsonl")
    assert all(
        "Skills:" in json.loads(line)["messages"][-1]["content"] for f in trained_text for line in f.open()
    )

    # A rerun resumes: nothing regenerated, nothing re-tagged, no attempt repeated.
    tagged_before = (workdir / "tag" / "tagged.jsonl").read_text()
    second = run_pipeline(args, uri, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((workdir / "summary.json").read_text())["stages"]
    assert again["data"].get("resumed") is True
    assert (workdir / "tag" / "tagged.jsonl").read_text() == tagged_before
    assert sum(1 for _ in read_jsonl(workdir / "profile" / "attempts.jsonl")) == 40
    assert again["train:skill-skill"]["reused"] is True and again["register"]["reused"] is True
    assert len(client.search_model_versions("name='e2e-student'")) == 1  # not registered twice


def test_pipeline_rejects_a_pool_without_a_tree(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"unique_id": "a", "question": "1+1?", "expected_answer": "2"}\n')
    result = run_pipeline(
        ["--registry-model", "x", "--workdir", str(tmp_path / "w"), "--pool", str(pool)],
        f"sqlite:///{tmp_path}/mlflow.db",
        tmp_path,
    )
    assert result.returncode == 2
    assert "--pool needs --tree" in result.stderr


@pytest.mark.slow
def test_pipeline_through_the_running_services(tmp_path, tiny_student_dir):
    """--tagger grpc://... and --profiler http://...: the same stages, served by the real services."""
    from distill.testing import free_port, server_process
    from skilltagger.client import TaggerClient
    from skillworld import world_tree

    workdir = tmp_path / "run"
    workdir.mkdir()
    world_tree().save(tmp_path / "tree.json")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/services-mlflow.db",
        "SKILLPROFILER_ALLOWED_ROOTS": f"{tmp_path}:{tiny_student_dir}",
        "SKILLPROFILER_WORK_DIR": str(tmp_path / "profiles"),
        "SKILLPROFILER_JUDGE_WORKERS": "1",
        "BENTOML_HOME": str(tmp_path / "bentoml-home"),
    }
    grpc_port, http_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    tagger = subprocess.Popen(
        [str(bin_dir / "skilltagger"), "serve", "--tree", str(tmp_path / "tree.json"), "--port", str(grpc_port),
         "--cache", str(tmp_path / "tags.sqlite")],
        env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        with TaggerClient.from_address(f"grpc://127.0.0.1:{grpc_port}") as client:
            client.wait_ready(timeout=180)
        with server_process(
            [str(bin_dir / "bentoml"), "serve", "skillprofiler.service:Profiler", "--port", str(http_port)],
            ready_url=f"http://127.0.0.1:{http_port}/readyz", env=env, cwd=tmp_path, startup_timeout_s=180,
        ):  # fmt: skip
            result = run_pipeline(
                ["--registry-model", "svc", "--workdir", str(workdir), "--student", str(tiny_student_dir),
                 "--pool-size", "120", "--suite-size", "5", "--profile-limit", "24", "--k", "8",
                 "--max-new-tokens", "96", "--batch-size", "24", "--sft-preset", "cpu-demo",
                 "--eval-preset", "cpu-demo", "--eval-limit", "2",
                 "--tagger", f"grpc://127.0.0.1:{grpc_port}", "--profiler", f"http://127.0.0.1:{http_port}"],
                f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
            )  # fmt: skip
    finally:
        tagger.terminate()
        tagger.wait(timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = json.loads((workdir / "summary.json").read_text())["stages"]
    assert stages["tag"]["problems"] == 120 and stages["profile"]["problems"] == 24
    # The profiler service wrote the verdicts in its own work dir; selection read them from there.
    verdict_files = list((tmp_path / "profiles").rglob("verdicts.jsonl"))
    assert len(verdict_files) == 1 and sum(1 for _ in read_jsonl(verdict_files[0])) == 24
    assert len(list(read_jsonl(workdir / "select" / "skill" / "selected.jsonl"))) == 8
    assert stages["register"]["model"] == "models:/svc/1"


def test_pipeline_on_a_user_pool_in_openmathreasoning_format(tmp_path, tiny_student_dir):
    """--pool/--tree/--pool-format: a corpus in OpenMathReasoning's fields, no offline world involved."""
    from skillworld import generate_pool, world_tree

    world_tree().save(tmp_path / "tree.json")
    rows = [
        {"problem": p.question, "generated_solution": p.solution, "expected_answer": p.expected_answer}
        for p in generate_pool(30, seed=5)
    ]
    pool = tmp_path / "omr.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a real benchmark in its public format (math-ai/amc23: id, question, answer), read from a local file
    amc = tmp_path / "amc23.jsonl"
    amc.write_text(
        "".join(
            json.dumps({"id": i, "question": p.question, "answer": float(p.expected_answer), "url": "-"})
            + "\n"
            for i, p in enumerate(q for q in generate_pool(40, seed=7) if q.expected_answer.isdigit())
        )
    )
    exemplars = tmp_path / "exemplars.jsonl"
    exemplars.write_text("".join(p.model_dump_json() + "\n" for p in generate_pool(300, seed=6)))
    workdir = tmp_path / "run"
    result = run_pipeline(
        ["--registry-model", "omr", "--workdir", str(workdir), "--pool", str(pool), "--tree",
         str(tmp_path / "tree.json"), "--pool-format", "openmathreasoning", "--exemplars", str(exemplars),
         "--student", str(tiny_student_dir), "--profile-limit", "10", "--k", "4", "--max-new-tokens", "64",
         "--sft-preset", "cpu-demo", "--eval-preset", "cpu-demo", "--benchmarks", "amc23",
         "--benchmark-source", f"amc23={amc}", "--eval-limit", "4"],
        f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tagged = list(read_jsonl(workdir / "tag" / "tagged.jsonl"))
    assert len(tagged) == 30 and {r["question"] for r in tagged} == {r["problem"] for r in rows}
    assert not (workdir / "world").exists()
    assert len(list(read_jsonl(workdir / "select" / "skill" / "selected.jsonl"))) == 4
    report = json.loads((workdir / "evaluate" / "base" / "eval_report.json").read_text())
    assert list(report["benchmarks"]) == ["amc23"] and report["benchmarks"]["amc23"]["n_problems"] == 4
    # the benchmark carried no chains: the tagger attributed them, so the per-skill analysis exists
    assert (workdir / "analysis" / "skill-skill" / "skill_gains.csv").is_file()
    bad = run_pipeline(
        ["--registry-model", "omr", "--pool", str(pool), "--tree", str(tmp_path / "tree.json"),
         "--pool-format", "nope"],
        f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "--pool-format must be one of" in bad.stderr


@pytest.mark.slow
def test_sigterm_mid_run_leaves_killed_runs_and_a_resumable_workdir(tmp_path, tiny_student_dir):
    import signal
    import time

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = [
        "--registry-model", "stopped", "--workdir", str(workdir), "--student", str(tiny_student_dir),
        "--pool-size", "200", "--suite-size", "3", "--profile-limit", "192", "--k", "8",
        "--max-new-tokens", "96", "--batch-size", "16", "--sft-preset", "cpu-demo", "--eval-preset", "cpu-demo",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    attempts = workdir / "profile" / "attempts.jsonl"
    while not (attempts.exists() and attempts.stat().st_size > 0) and proc.poll() is None:
        time.sleep(0.2)  # a hang is caught by the per-test timeout
    assert proc.poll() is None, "the pipeline ended before profiling had saved its first chunk"
    proc.send_signal(signal.SIGTERM)  # mid-profiling: the first chunk is saved, the rest is not
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("skilldistill").experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status["distill:stopped"] == "KILLED" and status["tag"] == "FINISHED"
    assert "RUNNING" not in status.values()
    experiment = client.get_experiment_by_name("skilldistill")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    saved = sum(1 for _ in read_jsonl(attempts))
    assert 0 < saved < 192

    again = run_pipeline(args, uri, tmp_path)  # resumes: the saved answers are kept
    assert again.returncode == 0, again.stderr[-3000:]
    assert sum(1 for _ in read_jsonl(attempts)) == 192
    assert "resuming" in again.stderr and f"{saved} of 192 problems already answered" in again.stderr


def test_bad_inputs_fail_before_any_stage_runs(tmp_path):
    """A bad model, tree or engine ends in one clear message (exit 2), before a run or a stage starts."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = ["--registry-model", "x", "--workdir", str(tmp_path / "w")]
    cases = [
        (["--student", str(tmp_path / "no-such-model")], "Invalid value for --student"),
        (["--student", "nobody/no-such-model-anywhere"], "cannot load the model"),
        (["--pool", str(tmp_path / "p.jsonl"), "--tree", str(tmp_path / "missing.json")], "--tree"),
    ]
    from distill.engines.vllm_engine import vllm_unavailable_reason

    if vllm_unavailable_reason() is not None:  # on a GPU machine with vllm the engine is fine
        cases.append((["--engine", "vllm"], "--engine hf"))
    for extra, message in cases:
        result = run_pipeline([*base, *extra], uri, tmp_path)
        assert result.returncode == 2, (extra, result.stderr[-2000:])
        assert message in " ".join(result.stderr.split()), (extra, result.stderr[-2000:])
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_demo_defaults_register_the_shipped_student_and_train_with_the_cpu_demo_preset(tmp_path):
    """What `make demo` runs (no --student, no presets), on a small world: the base student is the one
    shipped with skillworld, and training uses the cpu-demo preset file the world was calibrated with."""
    from distill.sft import load_sft_settings
    from skillworld.bootstrap import verify_shipped

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = [
        "--registry-model", "demo-defaults", "--workdir", str(workdir), "--pool-size", "120",
        "--suite-size", "3", "--profile-limit", "24", "--k", "16", "--max-new-tokens", "64",
    ]  # fmt: skip
    result = run_pipeline(args, uri, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = json.loads((workdir / "summary.json").read_text())["stages"]
    assert (
        stages["student"]["source"] == "shipped"
        and stages["student"]["model"] == "models:/qwen3-tiny-base@base"
    )
    train = stages["train:skill-skill"]
    assert train["preset"] == "cpu-demo"
    settings = load_sft_settings("cpu-demo")
    assert train["steps"] == settings.num_train_epochs  # 16 examples = one batch of 16 per epoch
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    base = client.get_model_version_by_alias("qwen3-tiny-base", "base")
    assert base.tags["model_sha256"] == verify_shipped()["sha256"]["model.safetensors"]
    trained = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`skilldistill.stage` = 'train'",
    )
    assert len(trained) == 1
    assert float(trained[0].data.params["sft.learning_rate"]) == settings.learning_rate
