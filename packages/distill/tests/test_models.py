"""Model references: local directories, Hub ids, MLflow models:/name/version and models:/name@alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distill.models import (
    ModelRefError,
    check_model_ref,
    model_fingerprint,
    parse_mlflow_uri,
    resolve_model,
)


def test_check_model_ref_up_front(
    tiny_student_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_model_ref(tiny_student_dir) == str(tiny_student_dir.resolve())
    assert check_model_ref("models:/student@champion") == "models:/student@champion"  # not fetched
    with pytest.raises(ModelRefError):
        check_model_ref("models:/bad/uri/x")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": ')
    with pytest.raises(ModelRefError, match=r"config\.json is not readable JSON"):
        check_model_ref(broken)
    (broken / "config.json").write_text("[1]")
    with pytest.raises(ModelRefError, match="not a JSON object"):
        check_model_ref(broken)

    cache = tmp_path / "hub"
    snapshot = cache / "models--org--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--org--cached" / "refs").mkdir()
    (cache / "models--org--cached" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert check_model_ref("org/not-cached") == "org/not-cached"  # online: the Hub decides later
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model_ref("org/cached") == "org/cached"
    with pytest.raises(ModelRefError, match="not in the local Hugging Face cache"):
        check_model_ref("org/not-cached")


def test_local_and_hub_references(tiny_student_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(tiny_student_dir) == str(tiny_student_dir.resolve())
    assert resolve_model("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelRefError, match=r"no config\.json"):
        resolve_model(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelRefError, match="is a file"):
        resolve_model(tmp_path / "f.txt")
    with pytest.raises(ModelRefError, match="not a local directory"):
        resolve_model("./missing/dir")
    with pytest.raises(ModelRefError, match="not an MLflow model URI"):
        resolve_model("models:/bad/uri/extra")


def test_parse_mlflow_uri() -> None:
    assert parse_mlflow_uri("models:/student/3") == ("student", "3", None)
    assert parse_mlflow_uri("models:/student@champion") == ("student", None, "champion")


def _register_in_store(store: Path, model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point MLflow at the SQLite store ``store`` and register ``model`` there as ``tiny-student``."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    mlflow.set_experiment("models-test")
    with mlflow.start_run():
        mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="student",
            task="text-generation",
            pip_requirements=["transformers", "torch"],
            registered_model_name="tiny-student",
        )


def test_mlflow_registry_round_trip(
    tiny_student_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(tmp_path)  # the stores' default artifact root ./mlruns lands here
    model = AutoModelForCausalLM.from_pretrained(tiny_student_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_student_dir)
    _register_in_store(tmp_path / "mlflow.db", model, tokenizer, monkeypatch)
    MlflowClient().set_registered_model_alias("tiny-student", "champion", "1")

    cache = tmp_path / "cache"
    by_version = Path(resolve_model("models:/tiny-student/1", cache_dir=cache))
    by_alias = Path(resolve_model("models:/tiny-student@champion", cache_dir=cache))
    assert by_version == by_alias and by_version.parent == cache / "tiny-student"
    assert by_version.name.startswith("1-")  # the version, then a key of the store and logged model
    assert (by_version / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(by_version)
    assert loaded.config.vocab_size == model.config.vocab_size
    assert AutoTokenizer.from_pretrained(by_version).chat_template == tokenizer.chat_template

    # a fresh store numbers its first version 1 again: that is another model, not the cached download
    retrained = AutoModelForCausalLM.from_pretrained(tiny_student_dir)
    retrained.model.norm.weight.data.fill_(0.5)
    _register_in_store(tmp_path / "other.db", retrained, tokenizer, monkeypatch)
    fresh = Path(resolve_model("models:/tiny-student/1", cache_dir=cache))
    assert fresh != by_version and fresh.name.startswith("1-")
    assert float(AutoModelForCausalLM.from_pretrained(fresh).model.norm.weight[0].item()) == 0.5
    assert float(AutoModelForCausalLM.from_pretrained(by_version).model.norm.weight[0].item()) != 0.5
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")

    # cached: a second resolution does not download again
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: pytest.fail("downloaded twice"))
    assert Path(resolve_model("models:/tiny-student@champion", cache_dir=cache)) == by_version
    # the fingerprint is the model's content, not the store it is registered in: the fresh store's
    # version 1 (other weights) differs, the same weights reached by version or alias agree
    content = model_fingerprint("models:/tiny-student@champion", str(by_alias))
    assert content == model_fingerprint("models:/tiny-student/1", str(by_version))
    assert content != model_fingerprint("models:/tiny-student/1", str(fresh))

    with pytest.raises(ModelRefError, match="tiny-student"):
        resolve_model("models:/tiny-student@nonexistent", cache_dir=cache)
    with pytest.raises(ModelRefError):
        resolve_model("models:/tiny-student/7", cache_dir=cache)


def test_fingerprint_of_a_local_model_changes_when_retrained_in_place(
    tiny_student_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from transformers import AutoModelForCausalLM

    local = tmp_path / "student"
    shutil.copytree(tiny_student_dir, local)
    before = model_fingerprint(str(local), resolve_model(local))
    assert {name for name, _, _ in before["files"]} >= {"config.json", "model.safetensors"}
    assert model_fingerprint(str(local), resolve_model(local)) == before  # stable while untouched

    model = AutoModelForCausalLM.from_pretrained(local)
    model.save_pretrained(local)  # the same checkpoint written again, as a retraining would
    assert model_fingerprint(str(local), resolve_model(local)) != before
    assert model_fingerprint("Qwen/Qwen3-4B", "Qwen/Qwen3-4B") == {"ref": "Qwen/Qwen3-4B"}


def test_model_context_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from distill.models import model_context_length

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    assert model_context_length(model) == 1024
    (model / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert model_context_length(model) == 4096  # multimodal configs nest it
    for broken in ("{", "[]", '{"max_position_embeddings": "big"}', "{}"):
        (model / "config.json").write_text(broken)
        assert model_context_length(model) is None
    assert model_context_length("models:/student@champion") is None  # not known without the registry
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert model_context_length("nobody/not-cached") is None  # never downloaded
