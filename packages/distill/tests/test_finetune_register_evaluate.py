"""The SFT -> registry -> evaluation round trip on CPU: the tiny student fine-tuned for a few steps through
TRL with skill-aware targets, logged to a real MLflow store, registered, loaded back through
``models:/...@candidate`` and evaluated on a small world suite; champion promotion follows the scores."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from distill.engines import make_engine
from distill.eval import EvalConfig, evaluate
from distill.formatting import FormatConfig, format_examples
from distill.models import model_fingerprint, resolve_model
from distill.registry import promote_if_better, register_checkpoint
from distill.sft import load_sft_settings, train_sft
from mlflow import MlflowClient


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SKILLDISTILL_CACHE", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("finetune-test")
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


def test_finetune_register_load_candidate_and_evaluate(
    tiny_student_dir: Path, world_pool_small, world_benchmarks_small, tmp_path: Path, store: str
) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_student_dir)
    rows, stats = format_examples(world_pool_small[:32], FormatConfig(skill_aware=True), tokenizer)
    assert stats.with_skills == 32 and stats.placement == "think"
    settings = load_sft_settings("cpu-demo", num_train_epochs=1, save_steps=100, logging_steps=1)
    with mlflow.start_run(run_name="train") as run:
        result = train_sft(tiny_student_dir, rows, settings, out_dir=tmp_path / "sft", progress=False)
        registered = register_checkpoint(
            result.model_dir,
            "tiny-skill",
            tags={"skilldistill.strategy": "skill", "train_steps": result.steps},
        )
    client = MlflowClient(store)
    assert result.steps == 2 and registered.version == "1" and registered.run_id == run.info.run_id
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert client.get_model_version("tiny-skill", "1").tags["train_steps"] == "2"

    suite = {"amc23": world_benchmarks_small["amc23"][:6]}
    config = EvalConfig(
        samples_per_problem=1, sampling={"temperature": 0.0, "max_new_tokens": 64}, judge_workers=0
    )
    with make_engine("hf", "models:/tiny-skill@candidate", device="cpu", batch_size=6) as engine:
        content = model_fingerprint(
            "models:/tiny-skill@candidate", resolve_model("models:/tiny-skill@candidate")
        )
        assert engine.fingerprint == {"kind": "hf", **content} and "mlflow_content" in content
        report = evaluate(engine, suite, config, out_dir=tmp_path / "eval", progress=False)
    score = report.benchmarks["amc23"].score
    assert score.n_problems == 6 and sum(score.status_counts.values()) == 6

    # the registered weights are the fine-tuned ones, not the base student's
    from safetensors.torch import load_file

    local = Path(resolve_model("models:/tiny-skill@candidate"))
    tuned, base = load_file(local / "model.safetensors"), load_file(tiny_student_dir / "model.safetensors")
    assert any(not (tuned[k] == base[k]).all() for k in base)

    # promotion on the evaluation's score: first version becomes champion, a worse second does not
    client.set_model_version_tag("tiny-skill", "1", "eval.average", str(report.headline))
    assert promote_if_better("tiny-skill", "1").promoted
    second = register_checkpoint(result.model_dir, "tiny-skill", tags={"eval.average": report.headline - 0.1})
    decision = promote_if_better("tiny-skill", second.version)
    assert not decision.promoted and "does not beat" in decision.reason
    assert str(client.get_model_version_by_alias("tiny-skill", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("tiny-skill", "candidate").version) == "2"
