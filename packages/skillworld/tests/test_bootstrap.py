"""Bootstrap: the two-part corpus and its tiers, the shipped student (digests, tiers, registration), a
retrain that reproduces bit for bit, log to MLflow, register, no-op when registered, load back from
models:/name@alias; and the baseline profile through distill's engine and judge."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from skillworld.bootstrap import (
    BOOTSTRAP_MIX,
    TIERS,
    BootstrapConfig,
    ShippedStudentError,
    bootstrap,
    bootstrap_corpus,
    chat_weights,
    file_digests,
    leaf_tiers,
    shipped_student_dir,
    verify_shipped,
)
from skillworld.tokenizer import qwen3_chat_template, render_chat
from skillworld.world import generate_mix, leaf_names
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "head_dim": 8}
TINY_CFG = BootstrapConfig(
    n_problems=48, n_textbook=16, epochs=1.0, batch_size=16, tokenizer_texts=1500, warmup_steps=2, model=TINY
)


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "skillworld-test")
    monkeypatch.setenv("SKILLDISTILL_CACHE", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_chat_mix_has_all_tiers() -> None:
    tiers = leaf_tiers()
    assert set(tiers.values()) == set(TIERS) == {"mastered", "weak", "hard"}
    assert Counter(tiers.values()) == {"mastered": 21, "weak": 4, "hard": 1}
    weights = chat_weights()
    total = sum(weights.values())
    assert max(weights.values()) / total > 0.05 and min(weights.values()) / total < 0.01
    mix = generate_mix(3000, 0, BOOTSTRAP_MIX)
    share = {leaf: 0 for leaf in weights}
    for p in mix:
        for leaf in p.metadata["skills"]:
            share[leaf] += 1
    by_tier = {t: [share[leaf] for leaf, tt in tiers.items() if tt == t] for t in TIERS}
    assert max(by_tier["weak"]) < min(by_tier["mastered"])  # weak leaves are mostly textbook knowledge
    assert max(by_tier["hard"]) < min(by_tier["mastered"])


def test_corpus_names_skills_in_natural_text_never_in_the_skills_format() -> None:
    problems, passages = bootstrap_corpus(BootstrapConfig(n_problems=2000, n_textbook=1000))
    texts = [p.solution for p in problems] + passages
    assert not any("Skills:" in t for t in texts)
    # no line is a chain of tree names joined by the chain separator
    names = "|".join(re.escape(n) for n in leaf_names())
    assert not any(re.search(rf"(?m)^\w[\w ]* -> (?:{names})$", t) for t in texts)
    tiers = leaf_tiers()
    lower = " ".join(passages).lower()
    for leaf, tier in tiers.items():  # every taught skill is named in the passages, in running text
        assert (leaf.lower() in lower) == (TIERS[tier].textbook > 0), leaf
    mentioned = sum(
        1
        for p in problems
        if any(p.metadata["skills"][0].lower() in line.lower() for line in p.solution.splitlines()[1:2])
    )
    assert 0.3 < mentioned / len(problems) < 0.7  # half of the chat traces open by naming their skill


def test_tokenizer_covers_skill_names() -> None:
    tokenizer = AutoTokenizer.from_pretrained(shipped_student_dir())
    for leaf in leaf_names():
        n = len(tokenizer(leaf, add_special_tokens=False)["input_ids"])
        assert n <= len(leaf) / 2.4, (leaf, n)  # words and word pieces, not bytes


def test_shipped_student_is_verified(tmp_path: Path) -> None:
    manifest = verify_shipped()
    assert manifest["config"] == json.loads(json.dumps(asdict(BootstrapConfig())))
    assert manifest["sha256"] == file_digests(shipped_student_dir())
    broken = tmp_path / "broken"
    shutil.copytree(shipped_student_dir(), broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (broken / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ShippedStudentError, match=r"model\.safetensors"):
        verify_shipped(broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ShippedStudentError, match="incomplete"):
        verify_shipped(broken)


def test_shipped_student_has_the_declared_tiers(tmp_path: Path) -> None:
    """Greedy one-skill probe accuracy of the shipped student on every leaf, per tier: the figures the
    world's calibration declares (``TIERS[...].bounds``), and the paper's regime in leaf counts (at least
    12 leaves at 60% or above, at least 4 weak but not hopeless at 15-45%, a trap at or below 10%)."""
    from skillworld.probes import probe_accuracy, probe_problems

    tiers = leaf_tiers()
    accuracy = probe_accuracy(shipped_student_dir(), tmp_path / "probe", progress=False)
    assert set(accuracy) == set(tiers)
    counts = Counter(p.chains[0][-1] for p in probe_problems())
    for leaf, acc in accuracy.items():
        low, high = TIERS[tiers[leaf]].bounds
        slack = 1 / counts[leaf]  # one greedy answer may flip with another CPU's float rounding
        assert low - slack <= acc <= high + slack, (leaf, tiers[leaf], acc)
    values = list(accuracy.values())
    assert sum(a >= 0.6 for a in values) >= 12
    assert sum(0.15 <= a <= 0.45 for a in values) >= 4
    assert sum(a <= 0.1 for a in values) >= 1


def test_shipped_student_answers_half_the_pool(tmp_path: Path) -> None:
    """The paper's regime on the pool the demo selects from: the base student answers 45-75% of it
    (greedy, 300 problems of the world's pool)."""
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate
    from skillworld.world import generate_pool

    problems = generate_pool(300, 0)
    config = EvalConfig(
        samples_per_problem=1, sampling=SamplingConfig(temperature=0.0, max_new_tokens=384, seed=0), seed=0
    )
    with make_engine("hf", str(shipped_student_dir()), batch_size=64, device="cpu") as engine:
        report = evaluate(engine, {"pool": problems}, config, out_dir=tmp_path / "pool", progress=False)
    verdicts = report.benchmarks["pool"].rollout.verdicts
    assert len(verdicts) == 300
    assert 0.45 <= sum(v.correct for v in verdicts) / 300 <= 0.75


def test_retrain_reproduces_bit_for_bit(tmp_path: Path) -> None:
    first = bootstrap(tmp_path / "a", TINY_CFG, register=False, progress=False)
    second = bootstrap(tmp_path / "b", TINY_CFG, register=False, progress=False)
    assert first.source == second.source == "trained"
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    manifest = verify_shipped(tmp_path / "a")  # a trained folder carries the same manifest as the shipped one
    assert manifest["train"]["steps"] == 4 and manifest["train"]["n_textbook"] == 16


def test_default_bootstrap_registers_the_shipped_student(sqlite_store: str, tmp_path: Path) -> None:
    from distill.models import resolve_model

    result = bootstrap(tmp_path / "student", progress=False)
    assert result.source == "shipped" and result.model_uri == "models:/qwen3-tiny-base@base"
    assert file_digests(tmp_path / "student") == verify_shipped()["sha256"]
    version = MlflowClient().get_model_version_by_alias("qwen3-tiny-base", "base")
    assert version.tags["source"] == "shipped"
    assert version.tags["model_sha256"] == verify_shipped()["sha256"]["model.safetensors"]
    local = resolve_model("models:/qwen3-tiny-base@base")
    assert file_digests(local)["model.safetensors"] == version.tags["model_sha256"]


def test_bootstrap_registers_and_loads_back(sqlite_store: str, tmp_path: Path) -> None:
    from distill.models import resolve_model

    result = bootstrap(tmp_path / "student", TINY_CFG, progress=False)
    assert not result.skipped and result.model_uri == "models:/qwen3-tiny-base@base"
    assert result.source == "trained"
    assert result.train["steps"] == 4 and math.isfinite(result.train["final_loss"])

    client = MlflowClient()
    version = client.get_model_version_by_alias("qwen3-tiny-base", "base")
    run = client.get_run(result.run_id)
    assert version.run_id == result.run_id
    assert run.data.params["n_problems"] == "48" and "train_loss" in run.data.metrics
    assert any(d.dataset.name == "bootstrap-mix" for d in run.inputs.dataset_inputs)

    again = bootstrap(tmp_path / "other", TINY_CFG, progress=False)
    assert again.skipped and not (tmp_path / "other").exists()
    assert len(client.search_model_versions("name='qwen3-tiny-base'")) == 1

    local = resolve_model("models:/qwen3-tiny-base@base")
    model = AutoModelForCausalLM.from_pretrained(local)
    tokenizer = AutoTokenizer.from_pretrained(local)
    assert isinstance(model, Qwen3ForCausalLM) and model.config.hidden_size == 32
    assert tokenizer.chat_template == qwen3_chat_template()
    enc = tokenizer(render_chat(tokenizer, "Add 2 and 3."), return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 5 or int(out[0, -1]) == tokenizer.eos_token_id


def test_baseline_profile_reports_per_leaf_accuracy(
    tiny_student_dir: Path, world_benchmarks_small, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from skillworld.baseline import format_table, run_baseline_profile

    suites = {name: rows[:4] for name, rows in world_benchmarks_small.items()}
    report = run_baseline_profile(
        str(tiny_student_dir), tmp_path / "bp", suites=suites, max_new_tokens=48, batch_size=8, progress=False
    )
    assert set(report["suites"]) == set(suites)
    assert sum(s["n"] for s in report["suites"].values()) == 20
    leaves = {chain[-1] for rows in suites.values() for p in rows for chain in p.chains}
    assert set(report["leaves"]) == leaves
    assert all(0.0 <= v["accuracy"] <= 1.0 and v["n"] >= 1 for v in report["leaves"].values())
    singles = [p for rows in suites.values() for p in rows if len(p.chains) == 1]
    assert set(report["single_skill_leaves"]) == {p.chains[0][-1] for p in singles}
    assert sum(v["n"] for v in report["single_skill_leaves"].values()) == len(singles)
    saved = json.loads((tmp_path / "bp" / "baseline_report.json").read_text())
    assert saved["suites"].keys() == report["suites"].keys()
    assert saved["engine"]["path"] == str(tiny_student_dir.resolve())
    assert "model.safetensors" in {name for name, _, _ in saved["engine"]["files"]}
    table = format_table(report)
    assert "all problems" in table and "1-skill" in table and all(name[:8] in table for name in suites)
