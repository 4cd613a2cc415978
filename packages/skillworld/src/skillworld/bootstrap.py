"""Bootstrap the tiny base student: train from scratch on a skewed mix of the world, save, log, register.

The mix decides the student's skill gaps. A 64-dimensional model gets about six million tokens in five
CPU minutes, and it learns a skill only when that skill gets a large share of them: spread over many
skills, the same tokens taught the format everywhere and the facts nowhere (the first bootstrap wrote
"5 + 5 = 14" in perfectly shaped traces). So three leaves get most of the data (mastered), nine a few
percent each (weak, and the three hard leaves whose traces skip steps the student would have to guess),
and the rest almost nothing (barely seen).

The mastered leaves are ones five minutes can take above 80%. Permutations and combinations have small,
finite inputs and short products, and reach 90-100% on half a share; basic probability (a sum over a few
hundred pairs, then a reduction) needs four times that. Multi-digit addition stayed at 30-60% with a
full share (the student picks the wrong digit of a long number), so it is a weak leaf.
``skillworld baseline-profile`` shows what a bootstrap reached.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillworld.generators import HARD_LEAVES
from skillworld.world import Mix, generate_mix, leaf_names

log = logging.getLogger(__name__)

DEFAULT_REGISTERED_NAME = "qwen3-tiny-base"
DEFAULT_ALIAS = "base"

# Mastered leaves with their weights (on the same scale as the other tiers' weights below).
MASTERED = {"Permutations": 0.5, "Combinations": 0.5, "Basic probability": 2.0}
WEAK = (
    "Multi-digit addition",
    "Multi-digit subtraction",
    "Multiplication principle",
    "Percentages",
    "Greatest common divisor",
    "Remainders by digit sums",
)
TIER_WEIGHTS = {"weak": 0.15, "hard": 0.15, "barely_seen": 0.01}


def leaf_tiers() -> dict[str, str]:
    """Leaf -> bootstrap tier; every leaf not named mastered, weak or hard is barely seen."""
    tiers = {**dict.fromkeys(MASTERED, "mastered"), **dict.fromkeys(WEAK, "weak")}
    tiers.update(dict.fromkeys(HARD_LEAVES, "hard"))
    unknown = set(tiers) - set(leaf_names())
    if unknown:
        raise RuntimeError(f"bootstrap tiers name leaves the world does not have: {sorted(unknown)}")
    return {leaf: tiers.get(leaf, "barely_seen") for leaf in leaf_names()}


def skewed_weights() -> dict[str, float]:
    return {
        leaf: MASTERED[leaf] if tier == "mastered" else TIER_WEIGHTS[tier]
        for leaf, tier in leaf_tiers().items()
    }


BOOTSTRAP_MIX = Mix(
    n_skills={1: 0.95, 2: 0.05}, levels={1: 0.5, 2: 0.3, 3: 0.2}, leaf_weights=skewed_weights()
)


@dataclass
class BootstrapConfig:
    seed: int = 0
    n_problems: int = 50_000
    epochs: float = 1.0
    batch_size: int = 16
    # 1e-2 (the first default) left the loss at 0.17 where 3e-3 reaches 0.09 on the same data and steps.
    lr: float = 3e-3
    warmup_steps: int = 30
    vocab_size: int = 1024
    tokenizer_texts: int = 6000
    model: dict[str, Any] = field(default_factory=dict)  # overrides of student.DEFAULT_MODEL_CONFIG
    time_budget_s: float | None = None
    # The bootstrap runs alone: two threads train at 22K tokens/s on an idle 2-core machine, one at 15K.
    threads: int | None = 2


@dataclass
class BootstrapResult:
    model_dir: Path
    skipped: bool
    model_uri: str | None = None
    run_id: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def bootstrap(
    out_dir: str | Path,
    config: BootstrapConfig | None = None,
    *,
    register: bool = True,
    registered_name: str = DEFAULT_REGISTERED_NAME,
    alias: str = DEFAULT_ALIAS,
    force: bool = False,
    progress: bool = True,
) -> BootstrapResult:
    """Train the base student into ``out_dir``; with ``register``, log an MLflow run and register the model.

    A no-op (``skipped=True``) when ``registered_name`` already has a version in the registry, unless
    ``force``.
    """
    from distill.registry import register_checkpoint, registered_model_exists
    from skillcore.tracking import log_dataset, log_json, resolve_tracking_uri, stage_run

    from skillworld.student import (
        DEFAULT_MODEL_CONFIG,
        TrainConfig,
        count_parameters,
        init_student,
        train_student,
    )
    from skillworld.tokenizer import build_tokenizer

    cfg = config or BootstrapConfig()
    out = Path(out_dir)
    if register:
        resolve_tracking_uri()
        if not force and registered_model_exists(registered_name):
            log.info("registered model %s already exists: nothing to do", registered_name)
            return BootstrapResult(
                model_dir=out, skipped=True, model_uri=f"models:/{registered_name}@{alias}"
            )
    start = time.perf_counter()
    problems = generate_mix(cfg.n_problems, cfg.seed, BOOTSTRAP_MIX)
    tokenizer = build_tokenizer(cfg.vocab_size, n_texts=cfg.tokenizer_texts, seed=cfg.seed)
    init_student(out, seed=cfg.seed, tokenizer=tokenizer, **cfg.model)
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        time_budget_s=cfg.time_budget_s,
        threads=cfg.threads,
    )
    params = {
        **{k: v for k, v in asdict(cfg).items() if k != "model"},
        "model": {**DEFAULT_MODEL_CONFIG, **cfg.model},
        "tier_weights": {"mastered": MASTERED, **TIER_WEIGHTS},
    }
    if not register:
        result = train_student(out, problems, train_cfg, progress=progress)
        return BootstrapResult(
            model_dir=out, skipped=False, train=result.as_dict(), seconds=time.perf_counter() - start
        )

    import mlflow

    with stage_run("bootstrap", params=params) as run:
        log_dataset(problems, name="bootstrap-mix", context="training")

        def on_step(step: int, loss: float) -> None:
            if step == 1 or step % 10 == 0:
                mlflow.log_metric("train_loss", loss, step=step)

        result = train_student(out, problems, train_cfg, progress=progress, on_step=on_step)
        from transformers import AutoModelForCausalLM

        n_params = count_parameters(AutoModelForCausalLM.from_pretrained(out))
        mlflow.log_metrics(
            {
                "train_seconds": result.seconds,
                "final_loss": result.final_loss,
                "tokens_seen": result.tokens_seen,
                "n_parameters": n_params,
            }
        )
        log_json({"tiers": leaf_tiers(), "weights": skewed_weights()}, "bootstrap_mix.json")
        # Logged from the saved folder (no second copy of the model in memory), under this run.
        registered = register_checkpoint(
            out,
            registered_name,
            tags={"skilldistill.stage": "bootstrap", "seed": cfg.seed, "final_loss": result.final_loss},
            alias=alias,
        )
        uri = registered.alias_uri
        run_id = run.info.run_id
    return BootstrapResult(
        model_dir=out,
        skipped=False,
        model_uri=uri,
        run_id=run_id,
        train=result.as_dict(),
        seconds=time.perf_counter() - start,
    )
