"""Model references: Hugging Face ids, local directories, MLflow ``models:/name/version`` and ``models:/name@alias``.

``resolve_model`` turns a reference into something ``from_pretrained`` (and vLLM, and ``transformers
serve``) accept: a local directory for local and MLflow models, the id itself for Hub ids. MLflow models
are downloaded once into a cache folder keyed by name, version and the logged model that version points to
in this tracking store (an alias is resolved to its version first, so moving the alias fetches the new
version; a fresh store that numbers a new model version 1 again does not get the old download).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

MLFLOW_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w\-.]+))$")
HF_ID = re.compile(r"^[A-Za-z0-9][\w\-.]*(/[\w\-.]+)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelRefError(ValueError):
    """A model reference is malformed or does not point to a model."""


def model_cache_dir() -> Path:
    root = os.environ.get("SKILLDISTILL_CACHE") or Path.home() / ".cache" / "skilldistill"
    return Path(root) / "models"


def is_mlflow_uri(ref: str) -> bool:
    return ref.startswith("models:/")


def parse_mlflow_uri(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` -> (name, "3", None); ``models:/name@champion`` -> (name, None, "champion")."""
    match = MLFLOW_URI.match(ref)
    if not match:
        raise ModelRefError(
            f"not an MLflow model URI: {ref!r} (expected models:/name/version or models:/name@alias)"
        )
    return match["name"], match["version"], match["alias"]


def resolve_model(ref: str | Path, *, cache_dir: str | Path | None = None) -> str:
    """A local directory (local and MLflow models) or the Hub id itself."""
    text = str(ref)
    if is_mlflow_uri(text):
        return str(_resolve_mlflow(text, Path(cache_dir) if cache_dir else model_cache_dir()))
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelRefError(f"{path} is a directory but holds no config.json (not a saved model)")
        return str(path.resolve())
    if path.exists():
        raise ModelRefError(f"{path} is a file; a model reference is a directory, a Hub id or models:/...")
    if text.startswith((".", "/", "~")) or not HF_ID.match(text):
        raise ModelRefError(f"model {text!r} is not a local directory, a Hugging Face id or a models:/ URI")
    return text


_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether Hugging Face downloads are off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), read now."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def check_model_ref(ref: str | Path, *, fetch: bool = False) -> str:
    """Check a model reference up front, cheaply, without loading weights.

    An MLflow URI must be well formed (the registry is asked only when the model is loaded). A local
    directory must hold a ``config.json`` that parses as a JSON object. A Hub id while offline
    (``hub_offline()``) must have its ``config.json`` in the local Hugging Face cache; online, with
    ``fetch``, its ``config.json`` (a few KB) is fetched to prove the id exists and is reachable. Returns
    what ``resolve_model`` returns for local directories and Hub ids, the URI itself for MLflow models.
    Raises ``ModelRefError`` saying what is wrong.
    """
    text = str(ref)
    if is_mlflow_uri(text):
        parse_mlflow_uri(text)
        return text
    resolved = resolve_model(text)
    local = Path(resolved)
    if local.is_dir():
        config = local / "config.json"
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelRefError(f"model {text!r}: {config} is not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelRefError(f"model {text!r}: {config} is not a JSON object")
        missing = missing_weights(local)
        if missing:
            raise ModelRefError(f"model {text!r}: {missing}")
        return resolved
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json")
        if not isinstance(cached, str):
            raise ModelRefError(
                f"model {text!r} is a Hugging Face id, but Hub access is off (HF_HUB_OFFLINE) and it is not "
                "in the local Hugging Face cache"
            )
    elif fetch:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(resolved)
        except (OSError, ValueError) as exc:
            raise ModelRefError(
                f"cannot load the model {text!r} from the Hugging Face Hub: {str(exc).splitlines()[0]}"
            ) from None
    return resolved


_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def missing_weights(folder: Path) -> str | None:
    """What a saved model folder lacks of its weights, in words (None: they are there): a weight file
    (``*.safetensors``, ``*.bin``, ...), or, where a shard index is present, every shard it names."""
    for name in _WEIGHT_INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index} is not a readable shard index"
            absent = sorted(str(s) for s in shards if not (folder / str(s)).is_file())
            if absent:
                return (
                    f"{folder} lacks {len(absent)} weight shard(s) named in {name}: {', '.join(absent[:5])}"
                )
            return None
    if any(
        p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES) and p.name != "training_args.bin"
        for p in folder.iterdir()
    ):
        return None
    return (
        f"{folder} holds no weights (no model.safetensors, pytorch_model.bin or other "
        f"{'/'.join(_WEIGHT_SUFFIXES)} file): a config.json alone is not a model"
    )


def model_context_length(resolved: str | Path) -> int | None:
    """The context length (``max_position_embeddings`` of ``config.json``) of a local model directory, or
    of a Hub id whose ``config.json`` is in the local Hugging Face cache; None when it is not known here
    (an MLflow URI, an uncached Hub id, a config without it). Never downloads anything."""
    local = Path(resolved)
    config: Path | None = local / "config.json" if local.is_dir() else None
    if config is None and not is_mlflow_uri(str(resolved)) and HF_ID.match(str(resolved)):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(resolved), "config.json")
        config = Path(cached) if isinstance(cached, str) else None
    if config is None:
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    for source in (data, data.get("text_config")):  # multimodal configs nest the language model's
        value = source.get("max_position_embeddings") if isinstance(source, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_fingerprint(ref: str, resolved: str) -> dict[str, Any]:
    """What pins down the weights behind ``ref`` (``resolved`` is ``resolve_model(ref)``), cheaply.

    An MLflow URI: the content of the downloaded model (SHA-256 of its config and weight files, computed once
    per download), not where it is registered, so the same model registered in two stores has one
    fingerprint. A local directory: its config and weight files' names, sizes and modification times, so
    retraining in place changes it. A Hub id: the id. Resumable jobs compare fingerprints before reusing
    saved answers; the pipeline keys its stages on them.
    """
    if is_mlflow_uri(ref):
        return {"mlflow_content": _content_digest(Path(resolved))}
    path = Path(resolved)
    if not path.is_dir():
        return {"ref": ref}
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _fingerprinted_files(path)]
    return {"ref": ref, "path": str(path.resolve()), "files": stats}


def _fingerprinted_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name == "config.json" or p.name.endswith(_WEIGHT_SUFFIXES))


def _content_digest(folder: Path) -> str:
    """SHA-256 over the names and SHA-256s of a downloaded model's config and weight files, kept beside the
    folder (``<folder>.content.json``): a download is never changed in place, so it is read once."""
    sidecar = folder.with_name(folder.name + ".content.json")
    try:
        return str(json.loads(sidecar.read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    parts = []
    for file in _fingerprinted_files(folder):
        sha = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
        parts.append([file.name, sha.hexdigest()])
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    from skillcore.io import atomic_write_text

    atomic_write_text(sidecar, json.dumps({"sha256": digest, "files": parts}))
    return digest


def _resolve_mlflow(ref: str, cache: Path) -> Path:
    import mlflow
    from mlflow import MlflowClient
    from skillcore.tracking import resolve_tracking_uri

    resolve_tracking_uri()
    name, version, alias = parse_mlflow_uri(ref)
    client = MlflowClient()
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        else:
            found = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as exc:
        raise ModelRefError(f"{ref}: {exc.message}") from exc
    version = str(found.version)
    # Version numbers restart in every store (each fresh demo store registers a version 1), so the cache
    # key also names the store and the logged model behind the version.
    origin = f"{mlflow.get_tracking_uri()}|{found.source}|{found.run_id}"
    target = cache / _safe(name) / f"{version}-{hashlib.sha256(origin.encode()).hexdigest()[:12]}"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp)
        staged = _assemble(Path(tmp), ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a concurrent download finished first
            shutil.rmtree(staged)
        else:
            staged.rename(target)
    return target


def _assemble(root: Path, ref: str) -> Path:
    """One folder with the weights' config and the tokenizer, from any MLflow layout.

    ``mlflow.transformers`` keeps the model under ``model/`` and the tokenizer under
    ``components/tokenizer/``; a plain ``log_artifacts`` of a saved folder keeps them together.
    """
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ModelRefError(f"{ref}: the downloaded model holds no config.json")
    model_dir = configs[0].parent
    if not any((model_dir / f).is_file() for f in _TOKENIZER_FILES):
        tokenizers = sorted(
            {p.parent for f in _TOKENIZER_FILES for p in root.rglob(f)}, key=lambda p: len(p.parts)
        )
        if tokenizers:
            for item in tokenizers[0].iterdir():
                if item.is_file() and not (model_dir / item.name).exists():
                    shutil.copy2(item, model_dir / item.name)
    staged = root / "_resolved"
    shutil.move(str(model_dir), staged)
    return staged


def _safe(name: str) -> str:
    return re.sub(r"[^\w\-.]", "_", name)
