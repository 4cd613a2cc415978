"""Bootstrap the tiny base student: train from scratch on a two-part corpus, save, log, register.

The corpus has the two parts a real model's history has. **Textbook passages** (pre-training text: a skill
named in a heading or a sentence, what it is, a worked example; the loss covers every token) teach
procedures and the words skills are named with. **Chat problems** (the paper's prompt as the user turn, the
teacher trace as the assistant turn) teach the student to apply them in an answer; half of their parts open
with a plain sentence naming the skill ("This is a least common multiple question."), so the student
knows which name goes with which question, but never the ``Skills:`` chain format that skill-aware
fine-tuning teaches.

A leaf's tier is how many chat problems it gets (``TIERS``), and the bounds each tier declares are what
the shipped student measured on the one-skill probes (``benchmarks/world_regime.py``; the paper's regime:
a strong student with a few weak skills and a trap, docs/world-calibration.md, candidate F):

- **mastered** (21 leaves): every leaf's passages and its share of 60,000 chat problems; 33-100% alone,
  19 of them at 60% or above.
- **weak** (4: order of operations, long multiplication, arithmetic series, modular exponentiation): half
  a mastered leaf's chat share (modular exponentiation a fifteenth); 37-53%.
- **hard** (1, exact division, the trap): a two-digit divisor and a quotient of three to five digits that
  the trace writes without the long division, so it cannot be guessed; 0%.

The default configuration's student (128-dim, 4 layers, 0.92M parameters) is shipped with the package
(``data/base-student``, about 3.7 MB, with the SHA-256 of every file in its ``manifest.json``):
``bootstrap()`` registers a verified copy of it instead of training for 52 minutes (11,250 steps at one
thread), and ``bootstrap(retrain=True)`` (``skillworld bootstrap --retrain``) trains it again from the same
corpus and seed, and says whether the weights came out bit for bit the same (training is deterministic at a
fixed thread count and torch build).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from skillworld.world import Mix, generate_mix, generate_textbook, leaf_names

log = logging.getLogger(__name__)

DEFAULT_REGISTERED_NAME = "qwen3-tiny-base"
DEFAULT_ALIAS = "base"
MANIFEST = "manifest.json"
SHIPPED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class Tier:
    """How a tier's leaves enter the corpus, and the one-skill probe accuracy the shipped student has on
    them (``bounds``, inclusive; checked by the tests)."""

    chat: float  # relative weight of each leaf in the chat problems
    textbook: float  # relative weight of each leaf in the textbook passages
    bounds: tuple[float, float]


# Every leaf is mastered unless a tier below names it. Two leaves carry their own chat weight: basic
# probability needs twice the share to pass 80%, and modular exponentiation at the weak tier's 0.5 came
# out mastered (its procedure is short), so it gets about a tenth of that (docs/world-calibration.md).
CHAT_WEIGHTS = {"Basic probability": 2.0, "Modular exponentiation": 0.065}
TIER_LEAVES: dict[str, tuple[str, ...]] = {
    "weak": ("Order of operations", "Long multiplication", "Arithmetic series", "Modular exponentiation"),
    "hard": ("Exact division",),
}
TIERS: dict[str, Tier] = {
    "mastered": Tier(chat=1.0, textbook=1.0, bounds=(0.3, 1.0)),
    "weak": Tier(chat=0.5, textbook=1.0, bounds=(0.3, 0.6)),
    "hard": Tier(chat=0.1, textbook=1.0, bounds=(0.0, 0.1)),
}


def leaf_tiers() -> dict[str, str]:
    """Leaf -> bootstrap tier; every leaf not named weak or hard is mastered."""
    tiers: dict[str, str] = {}
    for tier, leaves in TIER_LEAVES.items():
        tiers.update(dict.fromkeys(leaves, tier))
    unknown = set(tiers) - set(leaf_names())
    if unknown:
        raise RuntimeError(f"bootstrap tiers name leaves the world does not have: {sorted(unknown)}")
    return {leaf: tiers.get(leaf, "mastered") for leaf in leaf_names()}


def chat_weights() -> dict[str, float]:
    return {leaf: CHAT_WEIGHTS.get(leaf, TIERS[tier].chat) for leaf, tier in leaf_tiers().items()}


def textbook_weights() -> dict[str, float]:
    return {leaf: TIERS[tier].textbook for leaf, tier in leaf_tiers().items()}


BOOTSTRAP_MIX = Mix(
    n_skills={1: 0.8, 2: 0.15, 3: 0.05},
    levels={1: 0.5, 2: 0.3, 3: 0.2},
    leaf_weights=chat_weights(),
    skill_mentions=0.5,
)
TEXTBOOK_LEVELS = {1: 0.4, 2: 0.4, 3: 0.2}


@dataclass
class BootstrapConfig:
    seed: int = 0
    n_problems: int = 60_000  # chat problems
    n_textbook: int = 30_000  # textbook passages
    epochs: float = 2.0
    batch_size: int = 16
    # 1e-2 (the first default) left the loss at 0.17 where 3e-3 reaches 0.09 on the same data and steps.
    lr: float = 3e-3
    warmup_steps: int = 30
    vocab_size: int = 1024
    tokenizer_texts: int = 6000
    # Overrides of student.DEFAULT_MODEL_CONFIG: twice its width (0.92M parameters). The 64-wide student
    # could not hold 21 mastered leaves (docs/world-calibration.md).
    model: dict[str, Any] = field(
        default_factory=lambda: {"hidden_size": 128, "intermediate_size": 384, "head_dim": 32}
    )
    time_budget_s: float | None = None
    # One thread: it survives another process on the cores, and the shipped student is reproduced bit for
    # bit at one thread (a different thread count sums in another order).
    threads: int | None = 1


def bootstrap_corpus(cfg: BootstrapConfig) -> tuple[list[Any], list[str]]:
    """The chat problems and the textbook passages the student is trained on."""
    problems = generate_mix(cfg.n_problems, cfg.seed, BOOTSTRAP_MIX)
    passages = generate_textbook(cfg.n_textbook, cfg.seed, textbook_weights(), TEXTBOOK_LEVELS)
    return problems, passages


# ----------------------------------------------------------------------------------- shipped student
class ShippedStudentError(RuntimeError):
    """The shipped base student is missing a file or a file does not match its recorded digest."""


def shipped_student_dir() -> Path:
    return Path(str(resources.files("skillworld").joinpath("data/base-student")))


def file_digests(folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in SHIPPED_FILES}


def write_manifest(folder: str | Path, cfg: BootstrapConfig, train: dict[str, Any]) -> dict[str, Any]:
    """Record what made the student in ``folder`` and the SHA-256 of each of its files."""
    import tokenizers
    import torch
    import transformers

    manifest = {
        "config": asdict(cfg),
        "train": train,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "sha256": file_digests(folder),
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def verify_shipped(folder: str | Path | None = None) -> dict[str, Any]:
    """The shipped student's manifest, after checking every file against its digest."""
    folder = Path(folder) if folder is not None else shipped_student_dir()
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        actual = file_digests(folder)
    except (OSError, ValueError) as exc:
        raise ShippedStudentError(f"the shipped base student in {folder} is incomplete: {exc}") from exc
    bad = sorted(name for name, digest in actual.items() if manifest["sha256"].get(name) != digest)
    if bad:
        raise ShippedStudentError(
            f"the shipped base student in {folder} does not match its manifest ({', '.join(bad)}): reinstall "
            "the package or rebuild it with `skillworld bootstrap --retrain`"
        )
    return manifest


@dataclass
class BootstrapResult:
    model_dir: Path
    skipped: bool
    model_uri: str | None = None
    run_id: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    source: str = "trained"  # or "shipped": a verified copy of the packaged student


def bootstrap(
    out_dir: str | Path,
    config: BootstrapConfig | None = None,
    *,
    retrain: bool = False,
    register: bool = True,
    registered_name: str = DEFAULT_REGISTERED_NAME,
    alias: str = DEFAULT_ALIAS,
    force: bool = False,
    progress: bool = True,
) -> BootstrapResult:
    """Put the base student in ``out_dir``; with ``register``, log an MLflow run and register the model.

    The default configuration copies the shipped student (verified against its digests) unless
    ``retrain``; any other configuration trains. A no-op (``skipped=True``) when ``registered_name``
    already has a version in the registry, unless ``force``.
    """
    from distill.registry import register_checkpoint, registered_model_exists
    from skillcore.tracking import log_dataset, log_json, resolve_tracking_uri, stage_run

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
    shipped = not retrain and cfg == BootstrapConfig()
    if shipped:
        manifest = verify_shipped()
        out.mkdir(parents=True, exist_ok=True)
        for name in (*SHIPPED_FILES, MANIFEST):
            shutil.copyfile(shipped_student_dir() / name, out / name)
        train = dict(manifest["train"])
        log.info("copied the shipped base student (trained in %.0fs) to %s", train.get("seconds", 0), out)
    params = {
        **{k: v for k, v in asdict(cfg).items() if k != "model"},
        "model": _model_config(cfg),
        "tiers": {tier: asdict(spec) for tier, spec in TIERS.items()},
        "source": "shipped" if shipped else "trained",
    }
    if not register:
        if not shipped:
            train = _train_base(out, cfg, progress)
        return BootstrapResult(
            model_dir=out,
            skipped=False,
            train=train,
            seconds=time.perf_counter() - start,
            source=params["source"],
        )

    import mlflow

    with stage_run("bootstrap", params=params) as run:
        if not shipped:

            def on_step(step: int, loss: float) -> None:
                if step == 1 or step % 10 == 0:
                    mlflow.log_metric("train_loss", loss, step=step)

            train = _train_base(out, cfg, progress, on_step=on_step, log_corpus=log_dataset)
        names = {"seconds": "train_seconds", "final_loss": "final_loss", "tokens_seen": "tokens_seen"}
        mlflow.log_metrics({names.get(k, k): float(train[k]) for k in (*names, "n_parameters") if k in train})
        log_json(
            {"tiers": leaf_tiers(), "chat": chat_weights(), "textbook": textbook_weights()},
            "bootstrap_mix.json",
        )
        # Logged from the saved folder (no second copy of the model in memory), under this run.
        registered = register_checkpoint(
            out,
            registered_name,
            tags={
                "skilldistill.stage": "bootstrap",
                "seed": cfg.seed,
                "final_loss": train["final_loss"],
                "source": params["source"],
                "model_sha256": file_digests(out)["model.safetensors"],
            },
            alias=alias,
        )
        uri = registered.alias_uri
        run_id = run.info.run_id
    return BootstrapResult(
        model_dir=out,
        skipped=False,
        model_uri=uri,
        run_id=run_id,
        train=train,
        seconds=time.perf_counter() - start,
        source=params["source"],
    )


def _model_config(cfg: BootstrapConfig) -> dict[str, Any]:
    from skillworld.student import DEFAULT_MODEL_CONFIG

    return {**DEFAULT_MODEL_CONFIG, **cfg.model}


def _train_base(
    out: Path,
    cfg: BootstrapConfig,
    progress: bool,
    *,
    on_step: Any = None,
    log_corpus: Any = None,
) -> dict[str, Any]:
    """Train from scratch into ``out`` and write its manifest; the training figures."""
    from transformers import AutoModelForCausalLM

    from skillworld.student import TrainConfig, count_parameters, init_student, train_student
    from skillworld.tokenizer import build_tokenizer

    problems, passages = bootstrap_corpus(cfg)
    if log_corpus is not None:
        log_corpus(problems, name="bootstrap-mix", context="training")
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
    result = train_student(out, problems, train_cfg, progress=progress, on_step=on_step, documents=passages)
    train = result.as_dict()
    train["n_parameters"] = count_parameters(AutoModelForCausalLM.from_pretrained(out))
    train["n_textbook"] = len(passages)
    write_manifest(out, cfg, train)
    return train
