"""The model registry: checkpoint folders logged without loading weights, versions with lineage tags,
aliases (candidate, champion), promotion, and loading models:/name@alias back for generation."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from distill.models import resolve_model
from distill.registry import (
    log_checkpoint,
    name_filter,
    pip_requirements,
    promote_if_better,
    register_checkpoint,
    registered_model_exists,
    set_version_tags,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from transformers import AutoModelForCausalLM, AutoTokenizer, pipelines
from transformers.modeling_utils import PreTrainedModel


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite store (artifacts under tmp_path/mlruns) and model cache for each test."""
    monkeypatch.chdir(tmp_path)  # the store's default artifact root ./mlruns lands here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "registry-test")
    monkeypatch.setenv("SKILLDISTILL_CACHE", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("registry-test")
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to MLflow's default


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_model_inits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every torch model transformers builds (from_pretrained, from_config, ...) runs PreTrainedModel.__init__."""
    built: list[str] = []
    original = PreTrainedModel.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "__init__", counting_init)
    return built


def test_mlflow_checkpoint_folder_path_still_needs_the_shim(tiny_student_dir: Path, store: str) -> None:
    """Pins the upstream bug the shim works around: when this stops failing, the shim can go."""
    with mlflow.start_run(), pytest.raises(AttributeError, match="'str' object has no attribute '__name__'"):
        mlflow.transformers.log_model(
            transformers_model=str(tiny_student_dir.resolve()),
            name="model",
            task="text-generation",
            pip_requirements=pip_requirements(),
        )


def test_log_checkpoint_copies_the_folder_without_loading_weights(
    tiny_student_dir: Path, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tiny_student_dir.resolve()
    original_check_task = pipelines.check_task
    built = _count_model_inits(monkeypatch)
    with mlflow.start_run():
        info = log_checkpoint(tiny_student_dir, registered_name="tiny")
    assert built == []  # no torch model was built to log it
    assert pipelines.check_task is original_check_task  # the shim is active only during the call
    assert isinstance(pipelines.check_task("text-generation")[1]["impl"], str)
    AutoModelForCausalLM.from_pretrained(source)
    assert "Qwen3ForCausalLM" in built  # and the counter does see a model being built

    flavor = info.flavors["transformers"]
    assert flavor["source_model_name"] == str(source)  # MLflow's checkpoint-folder path
    assert flavor["pipeline_model_type"] == "Qwen3ForCausalLM"
    assert flavor["instance_type"] == "TextGenerationPipeline" and flavor["task"] == "text-generation"
    assert info.registered_model_version == 1

    # the logged model/ folder is a byte-for-byte copy of the checkpoint (not a save_pretrained of it)
    logged = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "dl")))
    source_files = {p.name: _sha256(p) for p in source.iterdir() if p.is_file()}
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(source_files)
    assert {p.name: _sha256(p) for p in (logged / "model").iterdir()} == source_files
    assert (logged / "requirements.txt").read_text().split() == pip_requirements()  # no torchvision

    # it loads back through resolve_model, with the same weights and chat template
    local = Path(resolve_model("models:/tiny/1"))
    model = AutoModelForCausalLM.from_pretrained(local)
    reference = AutoModelForCausalLM.from_pretrained(source)
    got, want = model.state_dict(), reference.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    tokenizer, source_tokenizer = AutoTokenizer.from_pretrained(local), AutoTokenizer.from_pretrained(source)
    assert tokenizer.chat_template == source_tokenizer.chat_template
    assert "<think>" in tokenizer.chat_template and "enable_thinking" in tokenizer.chat_template
    # MLflow's own loader reads the flavor config the folder path wrote
    components = mlflow.transformers.load_model("models:/tiny/1", return_type="components")
    assert type(components["model"]).__name__ == "Qwen3ForCausalLM"


def test_log_checkpoint_rejects_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        log_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weight files"):
        log_checkpoint(tmp_path)


def test_register_twice_moves_candidate_and_sets_lineage_tags(tiny_student_dir: Path, store: str) -> None:
    client = MlflowClient()
    assert not registered_model_exists("student")
    lineage = {
        "selection.run_id": "abc123",
        "dataset.digest": "d41d8cd9",
        "strategy": "skill",
        "preset": "cpu-demo",
        "eval.average": 0.25,
        "eval.suites": {"aime24": 0.1, "math_l5": 0.4},
        "skipped": None,
    }
    first = register_checkpoint(tiny_student_dir, "student", tags=lineage, description="first try")
    run = client.get_run(first.run_id or "")
    assert run.data.tags["skilldistill.stage"] == "register"  # opened its own stage run
    assert mlflow.active_run() is None
    with mlflow.start_run() as outer:
        second = register_checkpoint(tiny_student_dir, "student", tags={"eval.average": 0.5})
    assert second.run_id == outer.info.run_id  # logged under the active run

    assert (first.version, second.version) == ("1", "2")
    assert first.uri == "models:/student/1" and second.alias_uri == "models:/student@candidate"
    assert str(client.get_model_version_by_alias("student", "candidate").version) == "2"
    assert registered_model_exists("student")
    v1 = client.get_model_version("student", "1")
    assert v1.description == "first try" and v1.run_id == first.run_id
    assert {k: v1.tags[k] for k in lineage if k != "skipped"} == {
        "selection.run_id": "abc123",
        "dataset.digest": "d41d8cd9",
        "strategy": "skill",
        "preset": "cpu-demo",
        "eval.average": "0.25",
        "eval.suites": '{"aime24": 0.1, "math_l5": 0.4}',
    }
    assert "skipped" not in v1.tags
    assert client.get_model_version("student", "2").tags == {"eval.average": "0.5"}


def _version(name: str, tags: dict[str, Any], source: Path) -> str:
    """A registry version whose only content that matters here is its tags (promotion reads no weights)."""
    client = MlflowClient()
    if not registered_model_exists(name):
        client.create_registered_model(name)
    version = client.create_model_version(name, source=str(source), tags={})
    set_version_tags(name, version.version, tags)
    return str(version.version)


def test_promotion_moves_champion_only_to_a_strictly_better_candidate(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = MlflowClient()
    name = "promo"
    v1 = _version(name, {"eval.average": 0.5}, tmp_path)
    caplog.set_level(logging.INFO, logger="distill.registry")
    first = promote_if_better(name, v1)
    assert first.promoted and first.previous_version is None and "is the first 'champion'" in first.reason
    assert f"{name} version 1: promoted to 'champion'" in caplog.text

    v2 = _version(name, {"eval.average": "0.6"}, tmp_path)
    better = promote_if_better(name, int(v2))
    assert better.promoted and (better.previous_version, better.previous_score) == ("1", 0.5)
    assert better.score == 0.6 and "beats" in better.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2

    v3 = _version(name, {"eval.average": 0.55}, tmp_path)
    worse = promote_if_better(name, v3)
    assert not worse.promoted and "0.55 does not beat 'champion' version 2 (0.6" in worse.reason
    tie = promote_if_better(name, _version(name, {"eval.average": 0.6}, tmp_path))
    assert not tie.promoted  # strictly better only
    again = promote_if_better(name, v2)
    assert not again.promoted and "is already 'champion'" in again.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2

    # lower is better, under another alias and tag
    loss_a = _version(name, {"eval.loss": 1.2}, tmp_path)
    loss_b = _version(name, {"eval.loss": 0.9}, tmp_path)
    opts: dict[str, Any] = {"metric_tag": "eval.loss", "champion": "lowest-loss", "higher_is_better": False}
    assert promote_if_better(name, loss_a, **opts).promoted
    assert promote_if_better(name, loss_b, **opts).promoted
    assert not promote_if_better(name, loss_a, **opts).promoted
    assert str(client.get_model_version_by_alias(name, "lowest-loss").version) == loss_b


def test_promotion_needs_a_numeric_score(store: str, tmp_path: Path) -> None:
    client = MlflowClient()
    name = "promo"
    unscored = _version(name, {"strategy": "random"}, tmp_path)
    with pytest.raises(ValueError, match=r"version 1 of 'promo' has no 'eval.average' tag"):
        promote_if_better(name, unscored)
    garbled = _version(name, {"eval.average": "n/a"}, tmp_path)
    with pytest.raises(ValueError, match=r"'n/a' is not a number"):
        promote_if_better(name, garbled)
    with pytest.raises(ValueError, match="not a finite number"):
        promote_if_better(name, _version(name, {"eval.average": "nan"}, tmp_path))
    with pytest.raises(MlflowException, match="promo"):  # a version that does not exist
        promote_if_better(name, 99)
    # a champion set by hand without a score cannot be compared with
    client.set_registered_model_alias(name, "champion", unscored)
    scored = _version(name, {"eval.average": 0.3}, tmp_path)
    with pytest.raises(ValueError, match=r"version 1 of 'promo' has no 'eval.average' tag"):
        promote_if_better(name, scored)
    assert str(client.get_model_version_by_alias(name, "champion").version) == unscored


def test_candidate_and_champion_load_back_and_generate(tiny_student_dir: Path, store: str) -> None:
    from distill.engines import SamplingConfig, make_engine, question_prompts
    from distill.engines.hf import HFEngine

    registered = register_checkpoint(tiny_student_dir, "gen", tags={"eval.average": 0.4})
    assert promote_if_better("gen", registered.version).promoted
    candidate = Path(resolve_model(registered.alias_uri))
    assert Path(resolve_model("models:/gen@champion")) == candidate == Path(resolve_model(registered.uri))
    tokenizer = AutoTokenizer.from_pretrained(candidate)
    assert AutoModelForCausalLM.from_pretrained(candidate).config.model_type == "qwen3"

    engine = make_engine("hf", registered.alias_uri, device="cpu", batch_size=2)
    assert isinstance(engine, HFEngine)
    try:
        params = SamplingConfig(temperature=0.0, max_new_tokens=4)
        out = engine.generate(question_prompts(["Add 2 and 3.", "What is 7 - 4?"]), params, progress=False)
    finally:
        engine.close()
    assert [len(g) for g in out] == [1, 1]
    assert all(0 < g[0].n_tokens <= 4 for g in out)
    assert engine.tokenizer.chat_template == tokenizer.chat_template


def test_names_with_quotes_are_found(store: str, tmp_path: Path) -> None:
    """A quote in the name used to break the search filter, which read as "not registered"."""
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/config.json")
    for name in ("it's-a-student", 'the "best" student'):
        assert not registered_model_exists(name)
        client.create_registered_model(name)
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        assert registered_model_exists(name)
        assert name_filter(name) in (f"name='{name}'", f'name="{name}"')
    with pytest.raises(ValueError, match="both quote"):
        name_filter("""it's "both" """)
