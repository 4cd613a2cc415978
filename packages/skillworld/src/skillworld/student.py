"""The tiny student: transformers' own ``Qwen3ForCausalLM`` with small dimensions, and the plain torch loop
that trains it from scratch on chat-formatted world problems (the paper's question prompt as the user turn,
the teacher solution as the assistant turn, rendered by the tokenizer's Qwen3 template with thinking on).

Fine-tuning goes through ``distill.sft`` (TRL), the project's training path. Pretraining the student from
scratch (the bootstrap: 50K problems, 3,125 steps; the test fixture's quick student) keeps this loop
because TRL is measurably slower on a model this small: ``benchmarks/bench_sft.py`` (same data, model and
batch, one epoch of 1,600 problems at batch 16, side by side in one process) measured TRL at 0.67-0.72x
this loop's speed in four runs (2 threads: 4.8 vs 6.6 and 5.4 vs 8.1 steps/s; 1 thread: 3.9 vs 5.7 and
3.9 vs 5.9 steps/s). The difference is TRL's
chunked log-prob LM head and per-step entropy/accuracy metrics, which save memory on a 150K-token
vocabulary and only cost time on a 1K one; the bootstrap would take about 7.5 minutes instead of 5.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillcore import PoolProblem
from tqdm import tqdm

from skillworld.tokenizer import ENDOFTEXT, IM_END, build_tokenizer, render_chat

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}


def init_student(out_dir: str | Path, seed: int = 0, *, tokenizer: Any = None, **config: Any) -> Path:
    """Create an untrained tiny Qwen3 (``config`` overrides ``DEFAULT_MODEL_CONFIG``) and save it with its
    tokenizer; it loads back with ``AutoModelForCausalLM`` / ``AutoTokenizer``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = Path(out_dir)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    unknown = set(config) - set(Qwen3Config().to_dict())
    if unknown:
        raise ValueError(f"unknown Qwen3Config fields: {sorted(unknown)}")
    settings = {**DEFAULT_MODEL_CONFIG, **config}
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    qwen_config = Qwen3Config(
        vocab_size=len(tokenizer), eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None, **settings
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(qwen_config)
    # Qwen3's own sampling defaults for thinking mode.
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=True, temperature=0.6, top_p=0.95, top_k=20
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# --------------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    epochs: float = 1.0
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    batch_size: int = 32
    weight_decay: float = 0.01
    max_len: int = 512
    seed: int = 0
    time_budget_s: float | None = None  # stop early (after a whole step) when exceeded
    # The matrices are tiny: one thread avoids OpenMP spin contention (2.5x faster than 2 threads on a busy
    # 2-core machine). None keeps torch's default.
    threads: int | None = 1


@dataclass
class TrainResult:
    steps: int
    examples_seen: int
    tokens_seen: int
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("losses")
        return out


def encode_examples(
    tokenizer: Any, problems: Sequence[PoolProblem], max_len: int = 512
) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per problem; the loss covers only the assistant turn."""
    out = []
    for problem in problems:
        prompt = render_chat(tokenizer, problem.question)
        full = render_chat(tokenizer, problem.question, problem.solution)
        if not full.startswith(prompt):
            raise ValueError(f"{problem.unique_id}: chat template prompt is not a prefix of the full text")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[:max_len]
        out.append((ids, len(p_ids)))
    return out


def encode_documents(
    tokenizer: Any, documents: Sequence[str], max_len: int = 512
) -> list[tuple[list[int], int]]:
    """Plain-text documents (no chat template) as pre-training examples: the loss covers every token."""
    return [
        (tokenizer(doc + ENDOFTEXT, add_special_tokens=False)["input_ids"][:max_len], 0) for doc in documents
    ]


def _batches(encoded: list[tuple[list[int], int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled, length-bucketed batches of example indices (little padding, random order)."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    chunk = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(encoded[i][0]))
        batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def train_student(
    model_dir: str | Path,
    problems: Sequence[PoolProblem],
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    documents: Sequence[str] = (),
) -> TrainResult:
    """Train the student in ``model_dir`` on chat-formatted problems and plain-text ``documents`` (shuffled
    together); save to ``out_dir`` (default: in place)."""
    import torch

    cfg = config or TrainConfig()
    if not problems:
        raise ValueError("no training problems given")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(
            model_dir, problems, cfg, out_dir=out_dir, progress=progress, on_step=on_step, documents=documents
        )
    finally:
        torch.set_num_threads(threads_before)


def _train(
    model_dir: str | Path,
    problems: Sequence[PoolProblem],
    cfg: TrainConfig,
    *,
    out_dir: str | Path | None,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
    documents: Sequence[str] = (),
) -> TrainResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    encoded = encode_examples(tokenizer, problems, cfg.max_len) + encode_documents(
        tokenizer, documents, cfg.max_len
    )
    pad_id = tokenizer.pad_token_id
    per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * per_epoch))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    start = time.perf_counter()
    losses: list[float] = []
    step = seen = tokens = 0
    stopped = False
    bar = tqdm(total=total_steps, desc="training student", disable=not progress, unit="step")
    while step < total_steps and not stopped:
        for batch in _batches(encoded, cfg.batch_size, rng):
            if step >= total_steps:
                break
            width = max(len(encoded[i][0]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids, n_prompt = encoded[i]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
                mask[row, : len(ids)] = 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(batch)
            tokens += int(mask.sum())
            losses.append(loss.item())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / 10:.3f}")
            if on_step is not None:
                on_step(step, losses[-1])
            if cfg.time_budget_s is not None and time.perf_counter() - start > cfg.time_budget_s:
                stopped = True
                break
    bar.close()
    model.eval()
    target = Path(out_dir) if out_dir is not None else Path(model_dir)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    tail = losses[-20:]
    return TrainResult(
        steps=step,
        examples_seen=seen,
        tokens_seen=tokens,
        seconds=time.perf_counter() - start,
        final_loss=sum(tail) / len(tail),
        losses=losses,
        stopped_early=stopped,
    )


def generate_answers(
    model_dir: str | Path, questions: Sequence[str], *, max_new_tokens: int = 320, batch_size: int = 64
) -> list[str]:
    """Greedy completions for questions (thinking on). A convenience for smoke checks and tests;
    the pipeline's generation goes through ``distill.engines``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out: list[str] = []
    for start in range(0, len(questions), batch_size):
        texts = [render_chat(tokenizer, q) for q in questions[start : start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        for row in gen[:, enc["input_ids"].shape[1] :]:
            out.append(str(tokenizer.decode(row, skip_special_tokens=True)))
    return out
