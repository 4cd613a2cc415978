"""Bootstrap: train, log to MLflow, register, no-op when registered, load back from models:/name@alias;
and the baseline profile through distill's engine and judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from skillworld.bootstrap import BOOTSTRAP_MIX, BootstrapConfig, bootstrap, leaf_tiers, skewed_weights
from skillworld.tokenizer import qwen3_chat_template, render_chat
from skillworld.world import generate_mix
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "head_dim": 8}


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


def test_skewed_mix_has_all_tiers() -> None:
    tiers = leaf_tiers()
    assert set(tiers.values()) == {"mastered", "weak", "barely_seen", "hard"}
    weights = skewed_weights()
    total = sum(weights.values())
    assert max(weights.values()) / total > 0.05 and min(weights.values()) / total < 0.01
    mix = generate_mix(3000, 0, BOOTSTRAP_MIX)
    share = {leaf: 0 for leaf in weights}
    for p in mix:
        for leaf in p.metadata["skills"]:
            share[leaf] += 1
    barely = [leaf for leaf, t in tiers.items() if t == "barely_seen"]
    mastered = [leaf for leaf, t in tiers.items() if t == "mastered"]
    assert max(share[leaf] for leaf in barely) < min(share[leaf] for leaf in mastered)


def test_bootstrap_registers_and_loads_back(sqlite_store: str, tmp_path: Path) -> None:
    from distill.models import resolve_model

    cfg = BootstrapConfig(n_problems=48, batch_size=16, tokenizer_texts=1500, warmup_steps=2, model=TINY)
    result = bootstrap(tmp_path / "student", cfg, progress=False)
    assert not result.skipped and result.model_uri == "models:/qwen3-tiny-base@base"
    assert result.train["steps"] == 3 and math.isfinite(result.train["final_loss"])

    client = MlflowClient()
    version = client.get_model_version_by_alias("qwen3-tiny-base", "base")
    run = client.get_run(result.run_id)
    assert version.run_id == result.run_id
    assert run.data.params["n_problems"] == "48" and "train_loss" in run.data.metrics
    assert any(d.dataset.name == "bootstrap-mix" for d in run.inputs.dataset_inputs)

    again = bootstrap(tmp_path / "other", cfg, progress=False)
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
