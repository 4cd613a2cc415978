"""The pipeline end to end on a small offline world, as a user runs it: a subprocess, a real MLflow store.

The assertions check what the stages computed, not only that they ran: tagging quality against the world's
held-back truth, that the skill selection leans on the profile's weak leaves more than random does, the
trained arm's evaluation records, and which stages a rerun or a changed setting reuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from skillcore import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "distill.py"


def run_pipeline(args: list[str], tracking_uri: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "400",
    }  # fmt: skip  (error boxes on one line: messages are matched whole)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def message(result: subprocess.CompletedProcess[str]) -> str:
    """stderr with the error box's borders and line breaks taken out."""
    return " ".join(result.stderr.replace("│", " ").split())


def stages_of(workdir: Path) -> dict[str, dict]:
    return json.loads((workdir / "summary.json").read_text())["stages"]


def out(stage: dict, name: str) -> Path:
    """An output file of a finished stage, through its manifest."""
    folder = Path(stage["dir"])
    return folder / json.loads((folder / "manifest.json").read_text())["outputs"][name]


def leaf_counts(tagged: Path, verdicts: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Per-leaf accuracy and problem counts over the judged problems, computed here from the profile's
    verdicts and the tagged chains (a problem counts once per distinct leaf it reaches)."""
    correct = {v["unique_id"]: v["status"] == "correct" for v in read_jsonl(verdicts)}
    hits: dict[str, list[int]] = defaultdict(list)
    for row in read_jsonl(tagged):
        if row["unique_id"] in correct:
            for leaf in {chain[-1] for chain in row["chains"]}:
                hits[leaf].append(int(correct[row["unique_id"]]))
    return {leaf: sum(v) / len(v) for leaf, v in hits.items()}, {leaf: len(v) for leaf, v in hits.items()}


def target_shares(report: Path) -> dict[str, float]:
    import csv

    with report.open() as fh:
        return {row["chain"].split("->")[-1]: float(row["target_share"]) for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_pipeline_runs_every_stage_reuses_them_and_reruns_what_a_change_touches(tmp_path, tiny_student_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = ["--registry-model", "e2e-student", "--workdir", str(workdir), "--student", str(tiny_student_dir),
            "--preset", "smoke"]  # fmt: skip
    first = run_pipeline(args, uri, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    stages = stages_of(workdir)
    assert {"data", "student", "tag", "benchmarks", "profile", "select:skill", "select:random"} <= set(stages)
    assert {"format:skill-skill", "train:skill-skill", "evaluate:base", "evaluate:skill-skill"} <= set(stages)
    assert {"analysis:skill-skill", "register"} <= set(stages)
    assert not any(s.get("reused") for s in stages.values())
    # tagging: every pool problem, and leaf F1 against the world's held-back truth computed here
    tagged = out(stages["tag"], "tagged")
    truth = {r["unique_id"]: r["chains"] for r in read_jsonl(out(stages["data"], "truth"))}
    rows = list(read_jsonl(tagged))
    assert len(rows) == 240 and stages["tag"]["problems"] == 240
    gold = {(r["unique_id"], c[-1]) for r in rows for c in truth[r["unique_id"]]}
    pred = {(r["unique_id"], c[-1]) for r in rows for c in r["chains"]}
    precision, recall = len(gold & pred) / len(pred), len(gold & pred) / len(gold)
    assert stages["tag"]["leaf_f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-3)
    assert stages["tag"]["leaf_f1"] > 0.8
    # profiling: 40 answered; selection: both strategies draw 12 problems from every tagged problem
    # (select.candidates: all, unjudged ones included), aiming where their definitions say, and the skill
    # strategy leans on the leaves this profile found weak
    verdicts = out(stages["profile"], "verdicts")
    judged = {r["unique_id"] for r in read_jsonl(verdicts)}
    assert len(judged) == 40 and stages["profile"]["problems"] == 40
    accuracy, _ = leaf_counts(tagged, verdicts)
    with_chain = [r for r in rows if r["chains"]]
    for name in ("skill", "random"):
        ids = [r["unique_id"] for r in read_jsonl(out(stages[f"select:{name}"], "selected"))]
        assert len(ids) == 12 == len(set(ids)) and set(ids) <= {r["unique_id"] for r in with_chain}
        assert set(ids) - judged, name  # 12 of 240 with 40 judged: unjudged problems come in
        assert stages[f"select:{name}"]["candidates"] == "all"
        assert stages[f"select:{name}"]["n_judged_candidates"] == 40
    # K / candidates: random draws from every tagged problem with a chain
    assert stages["select:random"]["n_candidates"] == len(with_chain)
    assert stages["select:random"]["k_over_candidates"] == round(12 / len(with_chain), 4)
    # the skill strategy aims at weights min(acc^-T, w_max^T) of this profile (T = 0.5, w_max = 10), random
    # at the candidates' (every tagged problem's) own leaf shares: recomputed here, compared with each
    # selection's report
    weights = {leaf: min(acc**-0.5, 10**0.5) if acc > 0 else 10**0.5 for leaf, acc in accuracy.items()}
    skill_target = target_shares(out(stages["select:skill"], "report") / "report.csv")
    random_target = target_shares(out(stages["select:random"], "report") / "report.csv")
    pool_counts: dict[str, int] = defaultdict(int)
    for row in with_chain:
        for leaf in {chain[-1] for chain in row["chains"]}:
            pool_counts[leaf] += 1
    for leaf in accuracy:
        assert skill_target[leaf] == pytest.approx(weights[leaf] / sum(weights.values()), abs=1e-9), leaf
    for leaf in pool_counts:
        assert random_target[leaf] == pytest.approx(pool_counts[leaf] / sum(pool_counts.values()), abs=1e-9)
    weak = [leaf for leaf, acc in accuracy.items() if acc < stages["profile"]["accuracy"]]
    assert sum(skill_target[leaf] for leaf in weak) > sum(random_target[leaf] for leaf in weak)
    # training: 12 examples, batch 16, 3 epochs (cpu-demo); targets carry the Skills block
    assert stages["train:skill-skill"]["steps"] == 3
    train_rows = list(read_jsonl(out(stages["format:skill-skill"], "train")))
    assert len(train_rows) == 12 and all(r["completion"].startswith("<think>\nSkills:\n") for r in train_rows)
    assert stages["format:skill-skill"]["placement"] == "think"  # the tiny student's Qwen3 template
    # evaluation: the trained arm's per-problem records agree with its report and with the stage figures
    report = json.loads(out(stages["evaluate:skill-skill"], "report").read_text())
    assert set(report["benchmarks"]) == {"aime24", "aime25", "amc23", "math-l5", "olympiadbench"}
    answers = Path(stages["evaluate:skill-skill"]["dir"])
    for bench, score in report["benchmarks"].items():
        records = list(read_jsonl(answers / bench / "problems.jsonl"))
        bench_verdicts = list(read_jsonl(answers / bench / "verdicts.jsonl"))
        assert len(records) == score["n_problems"] == 5 and len(bench_verdicts) == 5
        assert stages["evaluate:skill-skill"]["scores"][bench] == pytest.approx(
            sum(v["status"] == "correct" for v in bench_verdicts) / 5, abs=1e-6
        )
    assert (out(stages["analysis:skill-skill"], "figure")).stat().st_size > 5_000
    assert stages["register"]["model"] == "models:/e2e-student/1" and stages["register"]["champion"] is True

    client = MlflowClient(tracking_uri=uri)
    summary = json.loads((workdir / "summary.json").read_text())
    parent = client.get_run(summary["run_id"])
    assert parent.data.params["registry_model"] == "e2e-student" and parent.data.params["select.k"] == "12"
    config_file = client.download_artifacts(parent.info.run_id, "pipeline/config.json", str(tmp_path))
    assert json.loads(Path(config_file).read_text())["select"]["k"] == 12  # the resolved config is logged
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    names = {r.info.run_name for r in children}
    assert names >= {"data", "tag", "profile", "select:skill", "select:random", "train:skill-skill"}
    assert names >= {"evaluate:base", "evaluate:skill-skill", "analysis:skill-skill", "register"}
    # each stage run carries its cache key
    keyed = {r.info.run_name: r.data.tags.get("skilldistill.stage_key") for r in children}
    assert (
        keyed["tag"] == stages["tag"]["key"]
        and keyed["train:skill-skill"] == stages["train:skill-skill"]["key"]
    )
    assert keyed["select:skill"] == stages["select:skill"]["key"]
    train_run = next(r for r in children if r.info.run_name == "train:skill-skill")
    assert train_run.data.params["format.placement_used"] == "think"
    contexts = {
        {t.key: t.value for t in d.tags}.get("mlflow.data.context")
        for r in children
        for d in r.inputs.dataset_inputs
    }
    assert {"pool", "tagged", "profiling", "attempts", "verdicts", "training", "evaluation"} <= contexts
    version = client.get_model_version_by_alias("e2e-student", "candidate")
    assert client.get_model_version_by_alias("e2e-student", "champion").version == version.version
    train_run = next(r for r in children if r.info.run_name == "train:skill-skill")
    assert version.tags["skilldistill.train_run_id"] == train_run.info.run_id
    assert version.tags["skilldistill.train_key"] == stages["train:skill-skill"]["key"]
    assert (
        version.tags["skilldistill.strategy"] == "skill"
        and version.tags["skilldistill.skill_aware"] == "True"
    )
    assert float(version.tags["eval.average"]) == pytest.approx(report["headline"], abs=1e-6)
    assert "train/train_loss" in train_run.data.metrics  # the trainer's logs reach the stage run

    # A rerun reuses every stage: same keys, nothing recomputed, nothing registered twice.
    second = run_pipeline(args, uri, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    again = stages_of(workdir)
    cached = [name for name, s in stages.items() if "key" in s]
    assert all(again[name]["reused"] and again[name]["key"] == stages[name]["key"] for name in cached)
    assert again["register"]["reused"] is True
    assert len(client.search_model_versions("name='e2e-student'")) == 1

    # One selection setting changed: selection and what follows rerun; data, tagging, profiling and the
    # base evaluation are reused.
    third = run_pipeline([*args, "--set", "select.w_max=2"], uri, tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    changed = stages_of(workdir)
    for name in ("data", "tag", "benchmarks", "profile", "evaluate:base", "select:random"):
        assert changed[name]["reused"] and changed[name]["key"] == stages[name]["key"], name
    for name in ("select:skill", "format:skill-skill", "train:skill-skill", "evaluate:skill-skill"):
        assert not changed[name]["reused"] and changed[name]["key"] != stages[name]["key"], name
    assert changed["register"]["model"] == "models:/e2e-student/2"


def test_pipeline_rejects_a_pool_without_a_tree(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"unique_id": "a", "question": "1+1?", "expected_answer": "2"}\n')
    result = run_pipeline(
        ["--registry-model", "x", "--workdir", str(tmp_path / "w"), "--pool", str(pool)],
        f"sqlite:///{tmp_path}/mlflow.db",
        tmp_path,
    )
    assert result.returncode == 2
    assert "data.pool needs data.tree" in message(result)


@pytest.mark.slow
def test_pipeline_through_the_running_services(tmp_path, tiny_student_dir):
    """--tagger grpc://... and --profiler http://...: the same stages, served by the real services, whose
    own records show the calls; a tagging service that serves another tree is refused."""
    from distill.testing import free_port, server_process
    from skilltag.cache import TagCache
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
    services = ["--tagger", f"grpc://127.0.0.1:{grpc_port}", "--profiler", f"http://127.0.0.1:{http_port}"]
    small = ["--preset", "smoke", "--set", "data.world_pool_size=120", "--set", "profile.limit=24",
             "--budget", "8", "--set", "evaluate.eval.limit=2"]  # fmt: skip
    try:
        with TaggerClient.from_address(f"grpc://127.0.0.1:{grpc_port}") as client:
            client.wait_ready(timeout=180)
        with server_process(
            [str(bin_dir / "bentoml"), "serve", "skillprofiler.service:Profiler", "--port", str(http_port)],
            ready_url=f"http://127.0.0.1:{http_port}/readyz", env=env, cwd=tmp_path, startup_timeout_s=180,
        ):  # fmt: skip
            result = run_pipeline(
                ["--registry-model", "svc", "--workdir", str(workdir), "--student", str(tiny_student_dir),
                 *small, *services],
                f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
            )  # fmt: skip
            # a tree other than the one the service serves: refused before anything is tagged
            subtree = world_tree().to_dict()
            subtree["children"] = subtree["children"][:2]
            (tmp_path / "other-tree.json").write_text(json.dumps(subtree))
            pool = tmp_path / "pool.jsonl"
            pool.write_text(
                '{"unique_id": "a", "question": "1+1?", "solution": "2", "expected_answer": "2"}\n'
            )
            refused = run_pipeline(
                ["--registry-model", "other", "--workdir", str(tmp_path / "other"), "--student",
                 str(tiny_student_dir), "--pool", str(pool), "--tree", str(tmp_path / "other-tree.json"), *services],
                f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
            )  # fmt: skip
    finally:
        tagger.terminate()
        tagger.wait(timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = stages_of(workdir)
    assert stages["tag"]["problems"] == 120 and stages["profile"]["problems"] == 24
    # The tagging service's own cache holds a row for every pool problem it tagged (and the pipeline's
    # in-process cache was never made).
    with TagCache(tmp_path / "tags.sqlite") as cache:
        assert len(cache) >= 120
    assert not (workdir / "tag" / "cache.sqlite").exists()
    # The profiler service wrote the verdicts in its own work dir; the stage copied them.
    verdict_files = list((tmp_path / "profiles").rglob("verdicts.jsonl"))
    assert len(verdict_files) == 1 and sum(1 for _ in read_jsonl(verdict_files[0])) == 24
    assert out(stages["profile"], "verdicts").read_text() == verdict_files[0].read_text()
    assert stages["profile"]["service_dir"] == str(verdict_files[0].parent)
    assert len(list(read_jsonl(out(stages["select:skill"], "selected")))) == 8
    assert stages["register"]["model"] == "models:/svc/1"
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "serves another skill tree" in message(refused)
    assert not (tmp_path / "other" / "tag").exists()


def test_pipeline_on_a_user_pool_in_openmathreasoning_format(tmp_path, tiny_student_dir):
    """--pool/--tree with data.pool_format: a corpus in OpenMathReasoning's fields, no offline world."""
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
    base = ["--registry-model", "omr", "--workdir", str(workdir), "--pool", str(pool), "--tree",
            str(tmp_path / "tree.json"), "--student", str(tiny_student_dir), "--preset", "smoke"]  # fmt: skip
    result = run_pipeline(
        [*base, "--set", "data.pool_format=openmathreasoning", "--set", f"data.exemplars={exemplars}",
         "--set", "profile.limit=10", "--budget", "4", "--set", "profile.sampling.max_new_tokens=64",
         "--benchmarks", "amc23", "--set", f"evaluate.sources.amc23={amc}", "--set", "evaluate.eval.limit=4"],
        f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stages = stages_of(workdir)
    tagged = list(read_jsonl(out(stages["tag"], "tagged")))
    assert len(tagged) == 30 and {r["question"] for r in tagged} == {r["problem"] for r in rows}
    assert "truth" not in stages["data"] and stages["data"]["source"] == str(pool)
    assert len(list(read_jsonl(out(stages["select:skill"], "selected")))) == 4
    report = json.loads(out(stages["evaluate:base"], "report").read_text())
    assert list(report["benchmarks"]) == ["amc23"] and report["benchmarks"]["amc23"]["n_problems"] == 4
    # the benchmark carried no chains: the tagger attributed them, so the per-skill analysis exists
    assert out(stages["analysis:skill-skill"], "gains").is_file()

    # bad input: an unknown pool format, a row without a question (named by its line)
    bad = run_pipeline([*base, "--set", "data.pool_format=nope"], f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    assert bad.returncode == 2 and "data.pool_format must be one of" in bad.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text(pool.read_text() + '{"generated_solution": "x", "expected_answer": "1"}\n')
    missing = run_pipeline(
        [*base[:4], "--pool", str(broken), *base[6:], "--set", "data.pool_format=openmathreasoning"],
        f"sqlite:///{tmp_path}/mlflow.db", tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert f"{broken} row 31" in message(missing)


@pytest.mark.slow
def test_sigterm_mid_run_leaves_killed_runs_and_a_resumable_workdir(tmp_path, tiny_student_dir):
    import signal
    import time

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = [
        "--registry-model", "stopped", "--workdir", str(workdir), "--student", str(tiny_student_dir),
        "--preset", "smoke", "--set", "data.world_pool_size=200", "--set", "data.world_suite_size=3",
        "--set", "profile.limit=192", "--budget", "8", "--set", "engine.batch_size=16",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def saved_attempts() -> list[Path]:
        return [p for p in (workdir / "profile").glob("*/attempts.jsonl") if p.stat().st_size > 0]

    while not saved_attempts() and proc.poll() is None:
        time.sleep(0.2)  # a hang is caught by the per-test timeout
    assert proc.poll() is None, "the pipeline ended before profiling had saved its first chunk"
    proc.send_signal(signal.SIGTERM)  # mid-profiling: the first chunk is saved, the rest is not
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("skilldistill")
    runs = client.search_runs([experiment.experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status["distill:stopped"] == "KILLED" and status["tag"] == "FINISHED"
    assert "RUNNING" not in status.values()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (attempts,) = saved_attempts()
    assert not (attempts.parent / "manifest.json").exists()  # unfinished: resumed, not reused
    saved = sum(1 for _ in read_jsonl(attempts))
    assert 0 < saved < 192

    assert attempts.parent.name.endswith(".partial")  # work in progress, under its temporary name
    again = run_pipeline(args, uri, tmp_path)  # resumes: the saved answers are kept
    assert again.returncode == 0, again.stderr[-3000:]
    finished = Path(stages_of(workdir)["profile"]["dir"])  # renamed into place when it finished
    assert finished.name == attempts.parent.name.removesuffix(".partial") and not attempts.parent.exists()
    assert sum(1 for _ in read_jsonl(finished / "attempts.jsonl")) == 192
    assert "resuming the unfinished work" in again.stderr
    assert f"{saved} of 192 problems already answered" in again.stderr
    assert stages_of(workdir)["tag"]["reused"] is True


def test_bad_inputs_fail_before_any_stage_runs(tmp_path):
    """A bad model, tree, engine or setting ends in one clear message (exit 2), before a run or a stage."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = ["--registry-model", "x", "--workdir", str(tmp_path / "w")]
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"unique_id": "a", "question": "1+1?", "expected_answer": "2"}\n')
    broken_model = tmp_path / "broken-model"
    broken_model.mkdir()
    (broken_model / "config.json").write_text("{not json")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("select:\n  k: 1\n    w_max: 2\n")
    from skillcore.testing import hostile_trees

    trees = hostile_trees(tmp_path / "trees")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text('{"model_type": "qwen3"}')
    cases = [
        (["--pool", str(pool), "--tree", str(trees["self_reference"])], "the skill tree contains itself"),
        (["--pool", str(pool), "--tree", str(trees["deep"])], "nested too deeply to read"),
        (["--student", str(no_weights)], "holds no weights"),
        (["--student", str(tmp_path / "no-such-model")], "Invalid value for --student"),
        (["--student", "nobody/no-such-model-anywhere"], "Hub access is off (HF_HUB_OFFLINE)"),
        (["--student", str(broken_model)], "is not readable JSON"),
        (["--pool", str(tmp_path / "p.jsonl"), "--tree", str(pool)], "pool file not found"),
        (["--pool", str(pool), "--tree", str(tmp_path / "missing.json")], "--tree"),
        (["--set", "select.w_max=0.5"], "select.w_max"),
        (["--set", "train.sft.lerning_rate=1e-4"], "train.sft.lerning_rate"),
        (["--set", "nonsense"], "--set takes section.key=value"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--config", str(bad_config)], "bad.yaml line 3: not valid YAML"),
        (["--config", str(tmp_path / "none.yaml")], "config file not found"),
        (["--benchmarks", "aime24,nope"], "unknown benchmark(s) ['nope']"),
        (["--tagger", "localhost:50051"], "grpc://host:port"),
    ]
    from distill.engines.vllm_engine import vllm_unavailable_reason

    if vllm_unavailable_reason() is not None:  # on a GPU machine with vllm the engine is fine
        cases.append((["--engine", "vllm"], "--engine hf"))
    for extra, expected in cases:
        result = run_pipeline([*base, *extra], uri, tmp_path)
        assert result.returncode == 2, (extra, result.stderr[-2000:])
        assert expected in message(result), (extra, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (extra, result.stderr[-2000:])
    assert not (tmp_path / "w").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_demo_defaults_register_the_shipped_student_and_train_with_the_cpu_demo_preset(tmp_path):
    """What `make demo` runs (no --student), on a small world: the base student is the one shipped with
    skillworld, and training uses the cpu-demo SFT preset file the world was calibrated with."""
    from distill.sft import load_sft_settings
    from skillworld.bootstrap import verify_shipped

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    workdir = tmp_path / "run"
    args = [
        "--registry-model", "demo-defaults", "--workdir", str(workdir), "--set", "data.world_pool_size=120",
        "--set", "data.world_suite_size=3", "--set", "profile.limit=24", "--budget", "16",
        "--set", "profile.sampling.max_new_tokens=64",
    ]  # fmt: skip
    result = run_pipeline(args, uri, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compare runs in the MLflow UI: " in result.stdout and "done: MLflow run " in result.stdout
    stages = stages_of(workdir)
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
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["config"]["select"]["temperature"] == 0.5 and summary["config"]["select"]["w_max"] == 10
