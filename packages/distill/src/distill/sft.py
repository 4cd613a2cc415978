"""Supervised fine-tuning with TRL: the project's one training path.

``SFTSettings`` (a typed config, loaded from the preset files in ``distill/presets/sft/``) beside
``train_sft`` (one job: fine-tune a causal LM on prompt-completion examples and save it). The rows are
``distill.formatting.format_examples``'s: the prompt rendered by the student's chat template, the completion
the target text and the end-of-turn token. Each is tokenized by ``distill.formatting.encode_example`` (the
function ``check_rendered`` checks) into ``input_ids`` and a ``completion_mask``, and TRL's ``SFTTrainer``
does the loop with ``completion_only_loss=True``: the loss covers exactly the completion's tokens (Skills
block, reasoning, answer, end-of-turn) and nothing of the prompt, whatever the chat template would do to an
assistant message (no template's generation markers are needed). TRL tokenizing the strings itself would
add the tokenizer's special tokens to the rendered prompt (a second BOS with Llama-3 templates) and append
the eos token to a completion that ends with another end-of-turn token.

Checkpoints go to ``<out_dir>/checkpoints``; a rerun with the same folder resumes from the last one, and a
finished run is not trained again. Full fine-tuning by default; LoRA (peft) with ``lora:``, merged into the
saved model so every engine loads it as a plain checkpoint.

CPU threads: on a 2-core machine two torch threads collapse (16 -> 0.3 steps/s measured) as soon as
another process takes a core, while one thread trains the tiny student about as fast as two on an idle
machine, so ``threads`` defaults to 1 on CPU. GPUs ignore it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
CHECKPOINTS_SUBDIR = "checkpoints"
RESULT_FILE = "sft_result.json"


class LoraSettings(BaseModel):
    """peft LoRA adapters (merged into the base weights when training ends)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class SFTSettings(BaseModel):
    """Training settings; field names follow ``transformers.TrainingArguments`` / ``trl.SFTConfig``."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(default=1e-5, gt=0)
    lr_scheduler_type: str = "cosine"
    lr_scheduler_kwargs: dict[str, Any] = Field(default_factory=dict)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0, description="overrides warmup_ratio when > 0")
    num_train_epochs: float = Field(default=5.0, gt=0)
    max_steps: int = Field(default=-1, description="> 0 stops after that many optimizer steps")
    per_device_train_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=8, ge=1)
    max_length: int = Field(default=8192, ge=16)
    weight_decay: float = Field(default=0.0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    bf16: bool = Field(default=True, description="bf16 on GPU (ignored on CPU, where bf16 matmuls are slow)")
    gradient_checkpointing: bool = True
    group_by_length: bool = Field(default=False, description="batches of similar length (less padding)")
    logging_steps: int = Field(default=10, ge=1)
    save_steps: int = Field(default=200, ge=1, description="checkpoint every N steps (resume point)")
    save_total_limit: int = Field(default=2, ge=1)
    keep_checkpoints: bool = Field(default=False, description="keep the resume points after a finished run")
    seed: int = 0
    lora: LoraSettings | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=1, ge=1, description="torch CPU threads (None: torch's default)")
    extra: dict[str, Any] = Field(default_factory=dict, description="other trl.SFTConfig fields, as given")

    @property
    def global_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps


def is_main_process() -> bool:
    """Rank 0 (or no launcher): the process that writes results, logs to MLflow and registers. Under
    ``torchrun`` or ``accelerate launch`` every rank runs the same entry point."""
    return int(os.environ.get("RANK", "0")) == 0


def preset_names() -> list[str]:
    folder = resources.files("distill").joinpath("presets/sft")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_sft_settings(preset_or_path: str | Path, **overrides: Any) -> SFTSettings:
    """Settings from a preset name (``paper``, ``cpu-demo``) or a YAML file, then ``overrides``."""
    path = Path(preset_or_path)
    if path.suffix in {".yaml", ".yml", ".json"} and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        name = str(preset_or_path)
        if name not in preset_names():
            raise ValueError(
                f"unknown SFT preset {name!r}: choose one of {', '.join(preset_names())} or give a YAML file"
            )
        text = resources.files("distill").joinpath(f"presets/sft/{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{preset_or_path}: an SFT settings file holds a mapping")
    return SFTSettings.model_validate({**data, **overrides})


class SFTResult(BaseModel):
    model_dir: str
    steps: int
    epochs: float
    train_loss: float
    seconds: float
    steps_per_second: float
    tokens_seen: int
    tokens_per_second: float
    resumed_from: str | None = None
    skipped: bool = Field(default=False, description="the folder already held a finished model")
    device: str = "cpu"
    world_size: int = Field(default=1, description="processes that trained (torchrun / accelerate ranks)")


def _device(settings: SFTSettings) -> str:
    import torch

    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return settings.device


def sft_kwargs(
    settings: SFTSettings, output_dir: Path, *, device: str, progress: bool = True
) -> dict[str, Any]:
    """Keyword arguments of ``trl.SFTConfig`` for these settings (plain Python: the GPU arguments are
    tested on CPU machines, where ``SFTConfig`` itself refuses bf16)."""
    on_gpu = device == "cuda"
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "lr_scheduler_kwargs": settings.lr_scheduler_kwargs,
        "warmup_steps": settings.warmup_steps if settings.warmup_steps > 0 else settings.warmup_ratio,
        "num_train_epochs": settings.num_train_epochs,
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "max_length": settings.max_length,
        "weight_decay": settings.weight_decay,
        "adam_beta1": settings.adam_beta1,
        "adam_beta2": settings.adam_beta2,
        "max_grad_norm": settings.max_grad_norm,
        "bf16": settings.bf16 and on_gpu,
        "activation_checkpointing": settings.gradient_checkpointing,  # transformers 5 name
        "logging_steps": settings.logging_steps,
        "save_strategy": "steps",
        "save_steps": settings.save_steps,
        "save_total_limit": settings.save_total_limit,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "use_cpu": not on_gpu,
        "completion_only_loss": True,  # labels from the rows' completion_mask (distill.formatting)
        "report_to": "none",  # metrics go to the active stage run (mlflow_metrics_callback)
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        "dataset_num_proc": None,
    }
    if settings.group_by_length:
        kwargs["train_sampling_strategy"] = "group_by_length"
    kwargs.update(settings.extra)
    return kwargs


def sft_config(settings: SFTSettings, output_dir: Path, *, device: str, progress: bool = True) -> Any:
    """The ``trl.SFTConfig`` for these settings."""
    from trl import SFTConfig

    return SFTConfig(**sft_kwargs(settings, output_dir, device=device, progress=progress))


def mlflow_metrics_callback() -> Any:
    """A ``TrainerCallback`` that forwards the trainer's logs (loss, learning rate, grad norm) to the
    active MLflow run (the stage run), from the main process only. A process that never imported mlflow
    has no active run, so training needs no mlflow installed (the GPU check runs without it)."""
    from transformers import TrainerCallback

    class MlflowMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            mlflow = sys.modules.get("mlflow")
            if mlflow is None or not state.is_world_process_zero or mlflow.active_run() is None or not logs:
                return
            metrics = {
                f"train/{k}": float(v)
                for k, v in logs.items()
                if isinstance(v, int | float) and math.isfinite(float(v))
            }
            if metrics:
                mlflow.log_metrics(metrics, step=int(state.global_step))

    return MlflowMetrics()


def train_sft(
    model: str | Path,
    examples: Sequence[Mapping[str, Any]],
    settings: SFTSettings,
    *,
    out_dir: str | Path,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> SFTResult:
    """Fine-tune ``model`` (HF id, local directory or ``models:/`` URI) on ``examples`` (rows with a
    ``prompt`` and a ``completion`` string: ``distill.formatting.format_examples``) and save the result with its tokenizer and chat
    template to ``<out_dir>/model``.

    Resumable: checkpoints are saved every ``save_steps`` under ``<out_dir>/checkpoints`` and a rerun
    continues from the last one; a folder whose ``sft_result.json`` says it finished is returned as is.
    """
    import torch

    if not examples:
        raise ValueError("no training examples given")
    bad = [
        i
        for i, row in enumerate(examples)
        if not (isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str))
    ]
    if bad:
        raise ValueError(
            f"examples need 'prompt' and 'completion' strings (rows {bad[:5]} do not): "
            "build them with distill.formatting.format_examples"
        )
    out = Path(out_dir)
    done_file = out / RESULT_FILE
    if done_file.exists() and (out / MODEL_SUBDIR / "config.json").exists():
        result = SFTResult.model_validate_json(done_file.read_text(encoding="utf-8"))
        log.info("%s already holds a finished fine-tune (%d steps): not training again", out, result.steps)
        return result.model_copy(update={"skipped": True})
    device = _device(settings)
    threads_before = torch.get_num_threads()
    if device == "cpu" and settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        result = _train(model, examples, settings, out, device=device, progress=progress, callbacks=callbacks)
    finally:
        torch.set_num_threads(threads_before)
    if not is_main_process():
        return result
    done_file.write_text(result.model_dump_json(indent=1), encoding="utf-8")
    if not settings.keep_checkpoints:  # resume points (optimizer states: 3x the model) are no longer needed
        shutil.rmtree(out / CHECKPOINTS_SUBDIR, ignore_errors=True)
    return result


_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_missing(folder: str | Path) -> list[str]:
    """What a checkpoint folder lacks of the files the trainer writes and reads back to resume (empty: it is
    complete): the model weights (one file, or an index and every shard it names; LoRA adapters; or a
    DeepSpeed or FSDP layout, which hold weights and optimizer their own way), ``optimizer.pt`` and
    ``scheduler.pt``, the RNG state (``rng_state.pth``, ``rng_state_<rank>.pth`` per rank) and
    ``trainer_state.json`` (written last; it must parse)."""

    path = Path(folder)
    missing: list[str] = []
    # DeepSpeed (global_step*/) and FSDP (pytorch_model_fsdp*, optimizer_*) keep their own layouts
    sharded = any(path.glob("global_step*")) or any(path.glob("pytorch_model_fsdp*"))
    index = next((path / i for i in _WEIGHT_INDEXES if (path / i).is_file()), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"{index.name} (unreadable)")
        else:
            missing += sorted(s for s in shards if not (path / s).is_file())
    elif not sharded and not any((path / w).is_file() for w in _WEIGHTS):
        missing.append("model weights (model.safetensors)")
    if not sharded:
        missing += [f for f in ("optimizer.pt", "scheduler.pt") if not (path / f).is_file()]
    if not any(path.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        missing.append("trainer_state.json")
    return missing


def last_complete_checkpoint(checkpoints_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder that holds everything a resume reads (``checkpoint_missing``);
    newer incomplete ones (a save cut short: disk full, killed) are skipped, said so, and renamed
    ``incomplete-checkpoint-N`` by the main process (out of the trainer's way: it saves that step again)."""
    import re

    found = []
    for folder in Path(checkpoints_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match and folder.is_dir():
            found.append((int(match[1]), folder))
    for _, folder in sorted(found, reverse=True):
        missing = checkpoint_missing(folder)
        if not missing:
            return str(folder)
        log.warning("skipping the incomplete checkpoint %s (missing %s)", folder, ", ".join(missing))
        if is_main_process():
            aside = folder.with_name(f"incomplete-{folder.name}")
            shutil.rmtree(aside, ignore_errors=True)
            folder.rename(aside)
    return None


def whole_run_loss(session_loss: float, state: Any, resumed_step: int | None) -> float:
    """The mean training loss over every step of the run. After a resume (from step ``resumed_step``) the
    trainer's ``training_loss`` covers only the steps trained since; the steps before come from the losses
    logged before the resume point (kept in the trainer state's ``log_history``), each logged value the
    mean over the steps since the one before. Steps between the last log and the resume point count at the
    mean of those logs."""
    if not resumed_step:
        return session_loss
    total_steps = int(state.global_step)
    if resumed_step <= 0 or total_steps <= resumed_step:
        return session_loss
    before, last = 0.0, 0
    for entry in state.log_history:
        step, loss = entry.get("step"), entry.get("loss")
        if isinstance(step, int) and isinstance(loss, int | float) and last < step <= resumed_step:
            before += float(loss) * (step - last)
            last = step
    mean_before = before / last if last else session_loss
    before += mean_before * (resumed_step - last)
    return (before + session_loss * (total_steps - resumed_step)) / total_steps


def build_trainer(
    model: str | Path,
    examples: Sequence[Mapping[str, Any]],
    settings: SFTSettings,
    checkpoints_dir: str | Path,
    *,
    device: str = "cpu",
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, Any]:
    """The ``SFTTrainer`` (its ``train_dataset`` already tokenized, with ``labels`` -100 outside the
    completion) and the tokenizer."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from distill.formatting import encode_example
    from distill.models import resolve_model

    path = resolve_model(str(model))
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if (settings.bf16 and device == "cuda") else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    peft_config = None
    if settings.lora is not None:
        from peft import LoraConfig

        lora = settings.lora
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
    encoded = [encode_example(tokenizer, row) for row in examples]
    dataset = Dataset.from_list([{"input_ids": ids, "completion_mask": mask} for ids, mask in encoded])
    trainer = SFTTrainer(
        model=lm,
        args=sft_config(settings, Path(checkpoints_dir), device=device, progress=progress),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[mlflow_metrics_callback(), *callbacks],
    )
    return trainer, tokenizer


def _train(
    model: str | Path,
    examples: Sequence[Mapping[str, Any]],
    settings: SFTSettings,
    out: Path,
    *,
    device: str,
    progress: bool,
    callbacks: Sequence[Any],
) -> SFTResult:
    ckpt_dir = out / CHECKPOINTS_SUBDIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume = last_complete_checkpoint(ckpt_dir)
    resumed_step = None
    if resume:
        log.info("resuming fine-tuning from %s", resume)
        resumed_step = int(json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"])
    trainer, tokenizer = build_trainer(
        model, examples, settings, ckpt_dir, device=device, progress=progress, callbacks=callbacks
    )
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    target = out / MODEL_SUBDIR
    if settings.lora is not None:  # a plain checkpoint: every engine loads it without peft
        merged = trainer.model.merge_and_unload()
        if trainer.args.should_save:
            merged.save_pretrained(target)
    else:
        trainer.save_model(str(target))  # the main process only; gathers sharded (FSDP/ZeRO-3) weights
    if trainer.args.should_save:
        tokenizer.save_pretrained(target)
    state = trainer.state
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    steps = int(state.global_step)
    return SFTResult(
        model_dir=str(target.resolve()),
        steps=steps,
        epochs=float(state.epoch or 0.0),
        train_loss=whole_run_loss(float(output.training_loss), state, resumed_step),
        seconds=round(seconds, 3),
        steps_per_second=round(float(output.metrics.get("train_steps_per_second", 0.0)), 4),
        tokens_seen=tokens,
        tokens_per_second=round(tokens / seconds, 1) if seconds > 0 else 0.0,
        resumed_from=resume,
        device=device,
        world_size=int(trainer.accelerator.num_processes),
    )
