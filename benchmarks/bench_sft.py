"""SFT and evaluation throughput on the tiny student: TRL (the project's training path) against a plain torch
loop, side by side in one process, and evaluation problems per second.

Run: .venv/bin/python benchmarks/bench_sft.py [--examples 1600] [--threads 1] [--eval-problems 200]

1. Training: the same world problems, the same freshly initialised 4-layer student, batch 16, lr 3e-3,
   one epoch, one torch thread, through ``distill.sft.train_sft`` (TRL ``SFTTrainer``, assistant-only loss,
   length-grouped batches) and through the reference loop below (the loop ``skillworld.student`` had before
   training moved to TRL: length-bucketed batches, AdamW, cosine schedule). Steps/s and trained tokens/s
   (non-padding tokens of the batches) are printed for both; the time includes tokenization.
2. Evaluation: ``distill.eval.evaluate`` on world suites, greedy, one sample, 384 new tokens: problems/s.

Run it with nothing else on the cores: with two cores, any other process distorts the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any


def load_warning() -> None:
    one_minute = os.getloadavg()[0]
    if one_minute > 0.5:
        print(f"warning: load average {one_minute:.2f}: another process is using the cores")


def reference_loop(model_dir: Path, rows: list[dict[str, Any]], *, batch_size: int, lr: float) -> dict[str, float]:
    """A plain torch loop with the same data, loss mask (assistant turn) and schedule shape as TRL's run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    encoded = []
    for row in rows:
        prompt = tok.apply_chat_template(row["messages"][:1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(row["messages"], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        encoded.append(((p_ids + c_ids)[:512], len(p_ids)))
    rng = random.Random(0)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    batches = []
    for s in range(0, len(order), batch_size * 32):
        part = sorted(order[s : s + batch_size * 32], key=lambda i: len(encoded[i][0]))
        batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    rng.shuffle(batches)
    total = len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(0.1 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))),
    )
    tokens = 0
    for batch in batches:
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            seq, n_prompt = encoded[i]
            ids[r, : len(seq)] = torch.tensor(seq)
            labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
            mask[r, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        tokens += int(mask.sum())
    seconds = time.perf_counter() - start
    return {"steps": total, "seconds": seconds, "steps_per_s": total / seconds, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-problems", type=int, default=200, help="world suite problems to evaluate")
    args = parser.parse_args()
    import torch
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate
    from distill.formatting import FormatConfig, format_examples
    from distill.sft import load_sft_settings, train_sft
    from skillworld import generate_benchmarks, generate_pool
    from skillworld.student import init_student
    from skillworld.tokenizer import build_tokenizer

    load_warning()
    torch.set_num_threads(args.threads)
    rows, _ = format_examples(generate_pool(args.examples, seed=5), FormatConfig())
    with tempfile.TemporaryDirectory() as tmp:
        base = init_student(Path(tmp) / "base", tokenizer=build_tokenizer(n_texts=2000))
        settings = load_sft_settings(
            "cpu-demo",
            learning_rate=3e-3,
            num_train_epochs=1,
            per_device_train_batch_size=16,
            save_steps=10_000,
            threads=args.threads,
        )
        print(f"training: {len(rows)} examples, batch 16, one epoch, {args.threads} thread(s)")
        ref = reference_loop(base, rows, batch_size=16, lr=3e-3)
        print(
            f"  plain torch loop : {ref['steps']:.0f} steps in {ref['seconds']:.1f}s = "
            f"{ref['steps_per_s']:.2f} steps/s, {ref['tokens_per_s']:,.0f} tokens/s"
        )
        start = time.perf_counter()
        trl = train_sft(base, rows, settings, out_dir=Path(tmp) / "trl", progress=False)
        seconds = time.perf_counter() - start
        print(
            f"  TRL SFTTrainer   : {trl.steps} steps in {seconds:.1f}s = {trl.steps / seconds:.2f} steps/s, "
            f"{trl.tokens_seen / seconds:,.0f} tokens/s (train loop alone: {trl.steps_per_second:.2f} steps/s, "
            f"{trl.tokens_per_second:,.0f} tokens/s)"
        )
        print(f"  TRL / plain: {ref['seconds'] / seconds:.2f}x the speed")

        suites = generate_benchmarks(0, max(1, args.eval_problems // 5))
        config = EvalConfig(
            samples_per_problem=1, sampling=SamplingConfig(temperature=0.0, max_new_tokens=384), judge_workers=1
        )
        with make_engine("hf", trl.model_dir, device="cpu", batch_size=64) as engine:
            start = time.perf_counter()
            report = evaluate(engine, suites, config, out_dir=Path(tmp) / "eval", progress=False)
            seconds = time.perf_counter() - start
        n = sum(run.score.n_problems for run in report.benchmarks.values())
        print(f"evaluation: {n} problems, greedy, 384 tokens: {seconds:.1f}s = {n / seconds:.1f} problems/s")


if __name__ == "__main__":
    main()
