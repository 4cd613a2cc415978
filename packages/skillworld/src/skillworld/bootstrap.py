"""Bootstrap the tiny base student: train from scratch on a skewed mix of the world, save, log, register.

The mix decides the student's skill gaps: some leaves get most of the data (mastered), some a few
percent (weak), some almost nothing (barely seen), and the three hard leaves get a fair share they
still cannot learn (their traces skip a step the student would have to guess).
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

MASTERED = (
    "Multi-digit addition",
    "Order of operations",
    "Remainders by digit sums",
    "Percentages",
    "Multiplication principle",
    "Geometric sequences",
)
WEAK = (
    "Multi-digit subtraction",
    "Greatest common divisor",
    "Least common multiple",
    "Linear equations",
    "Permutations",
    "Basic probability",
    "Arithmetic sequences",
    "Recursive sequences",
)
BARELY_SEEN = (
    "Long multiplication",
    "Counting divisors",
    "Adding fractions",
    "Multiplying fractions",
    "Simplifying fractions",
    "Evaluating polynomials",
    "Systems of linear equations",
    "Combinations",
    "Arithmetic series",
)
TIER_WEIGHTS = {"mastered": 1.0, "weak": 0.25, "barely_seen": 0.04, "hard": 0.3}


def skewed_weights() -> dict[str, float]:
    tiers = {**dict.fromkeys(MASTERED, "mastered"), **dict.fromkeys(WEAK, "weak")}
    tiers.update(dict.fromkeys(BARELY_SEEN, "barely_seen"))
    tiers.update(dict.fromkeys(HARD_LEAVES, "hard"))
    missing = set(leaf_names()) - set(tiers)
    if missing:
        raise RuntimeError(f"leaves without a bootstrap tier: {sorted(missing)}")
    return {leaf: TIER_WEIGHTS[tiers[leaf]] for leaf in leaf_names()}


def leaf_tiers() -> dict[str, str]:
    weights = skewed_weights()
    by_weight = {v: k for k, v in TIER_WEIGHTS.items()}
    return {leaf: by_weight[w] for leaf, w in weights.items()}


BOOTSTRAP_MIX = Mix(
    n_skills={1: 0.85, 2: 0.15}, levels={1: 0.6, 2: 0.3, 3: 0.1}, leaf_weights=skewed_weights()
)


@dataclass
class BootstrapConfig:
    seed: int = 0
    # Measured here (2 cores shared with other jobs): 60K problems = 3,750 steps in ~10 min, loss 0.12.
    # About 30K fits the 5-minute target on the same busy machine, with a weaker student.
    n_problems: int = 60_000
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 1e-2
    warmup_steps: int = 30
    vocab_size: int = 1024
    tokenizer_texts: int = 6000
    model: dict[str, Any] = field(default_factory=dict)  # overrides of student.DEFAULT_MODEL_CONFIG
    time_budget_s: float | None = None


@dataclass
class BootstrapResult:
    model_dir: Path
    skipped: bool
    model_uri: str | None = None
    run_id: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def registered_model_exists(name: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return bool(MlflowClient().search_model_versions(f"name='{name}'", max_results=1))
    except MlflowException:
        return False


def pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference adds torchvision, which is not installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "tokenizers", "mlflow")]


def log_and_register(model_dir: Path, name: str, alias: str) -> str:
    """Log the saved student with ``mlflow.transformers`` under the active run, register it, set ``alias``."""
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    info = mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tokenizer},
        name="model",
        task="text-generation",
        registered_model_name=name,
        pip_requirements=pip_requirements(),
    )
    version = info.registered_model_version
    MlflowClient().set_registered_model_alias(name, alias, str(version))
    return f"models:/{name}@{alias}"


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
    )
    params = {
        **{k: v for k, v in asdict(cfg).items() if k != "model"},
        "model": {**DEFAULT_MODEL_CONFIG, **cfg.model},
        "tier_weights": TIER_WEIGHTS,
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
        uri = log_and_register(out, registered_name, alias)
        run_id = run.info.run_id
    return BootstrapResult(
        model_dir=out,
        skipped=False,
        model_uri=uri,
        run_id=run_id,
        train=result.as_dict(),
        seconds=time.perf_counter() - start,
    )
