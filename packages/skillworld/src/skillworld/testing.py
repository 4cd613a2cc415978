"""Test helpers shared by every package: a quickly trained tiny student.

The student is cached across test sessions under ``$SKILLWORLD_CACHE`` (default ``~/.cache/skillworld``),
keyed by a hash of the code and settings that make it, so only the first session on a machine pays the
training time; each session gets its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

QUICK_MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
QUICK_TRAIN: dict[str, Any] = {"n_problems": 2400, "batch_size": 16, "lr": 1e-2, "warmup_steps": 10}
# The key already covers every skillworld file and library version; bump this for any other reason to retrain.
QUICK_STUDENT_VERSION = 1


def cache_root() -> Path:
    return Path(os.environ.get("SKILLWORLD_CACHE", Path.home() / ".cache" / "skillworld"))


def _package_root() -> Path:
    return Path(str(resources.files("skillworld")))


def _source_files() -> list[Path]:
    """Every file of the skillworld package that can shape a trained student: the training loop, the
    tokenizer, the generators, the world and its data (this file included)."""
    return sorted(p for p in _package_root().rglob("*") if p.is_file() and p.suffix in {".py", ".json"})


def _cache_key(seed: int) -> str:
    """Changes with the settings, every skillworld source and data file, and the versions of the libraries
    that train and tokenize: a stale student can never hide a change to the code that trains it."""
    import tokenizers
    import torch
    import transformers

    extra = {"v": QUICK_STUDENT_VERSION, "seed": seed, "model": QUICK_MODEL_CONFIG, "train": QUICK_TRAIN}
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for path in _source_files():
        digest.update(str(path.relative_to(_package_root())).encode() + b"\0" + path.read_bytes())
    digest.update(f"{torch.__version__}/{transformers.__version__}/{tokenizers.__version__}".encode())
    return digest.hexdigest()[:16]


def train_quick_student(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny student trained for 150 steps (about a minute) on easy one-skill problems: it answers in the
    ``<think>...</think> ... \\boxed{...}`` shape, with mostly wrong answers."""
    from skillworld.student import TrainConfig, init_student, train_student
    from skillworld.tokenizer import build_tokenizer
    from skillworld.world import Mix, generate_mix

    settings = QUICK_TRAIN
    out = init_student(out_dir, seed=seed, tokenizer=build_tokenizer(n_texts=3000), **QUICK_MODEL_CONFIG)
    problems = generate_mix(settings["n_problems"], seed, Mix(n_skills={1: 1.0}, levels={1: 1.0}))
    config = TrainConfig(
        epochs=1.0,
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        warmup_steps=settings["warmup_steps"],
        seed=seed,
    )
    train_student(out, problems, config, progress=False)
    return out


def quick_student(dest: str | Path, seed: int = 0) -> Path:
    """Copy of the cached quick student at ``dest`` (trained and cached first when missing)."""
    key = _cache_key(seed)
    cached = cache_root() / f"quick-student-{key}"
    if not (cached / "config.json").exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".quick-student-", dir=cached.parent))
        try:
            train_quick_student(tmp, seed)
            try:
                tmp.rename(cached)
            except OSError:  # another session finished first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    dest = Path(dest)
    shutil.copytree(cached, dest, dirs_exist_ok=True)
    return dest
