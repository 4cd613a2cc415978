"""SFT and evaluation throughput on the tiny student: TRL (the project's training path) against a plain torch
loop, side by side in one process, and evaluation problems per second.

Run: .venv/bin/python benchmarks/bench_sft.py [--examples 1600] [--threads 1] [--eval-problems 200]

1. Training: the same world problems, the same freshly initialised 4-layer student, batch 16, lr 3e-3,
   one epoch, through ``distill.sft.train_sft`` (TRL ``SFTTrainer``, assistant-only loss, length-grouped
   batches) and through ``skillworld.student.train_student`` (the plain torch loop that pretrains the tiny
   student: length-bucketed batches, AdamW, cosine schedule, loss on the assistant turn). Steps/s and
   non-padding tokens/s are printed for both; the time includes tokenization.
2. Evaluation: ``distill.eval.evaluate`` on world suites, greedy, one sample, 384 new tokens: problems/s.

Run it with nothing else on the cores: with two cores, any other process distorts the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def load_warning() -> None:
    one_minute = os.getloadavg()[0]
    if one_minute > 0.5:
        print(f"warning: load average {one_minute:.2f}: another process is using the cores")


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
    from skillworld.student import TrainConfig, init_student, train_student
    from skillworld.tokenizer import build_tokenizer

    load_warning()
    torch.set_num_threads(args.threads)
    problems = generate_pool(args.examples, seed=5)
    rows, _ = format_examples(problems, FormatConfig())
    with tempfile.TemporaryDirectory() as tmp:
        base = init_student(Path(tmp) / "base", tokenizer=build_tokenizer(n_texts=2000))
        settings = load_sft_settings(
            "cpu-demo",
            learning_rate=3e-3,
            warmup_steps=10,
            num_train_epochs=1,
            per_device_train_batch_size=16,
            save_steps=10_000,
            threads=args.threads,
        )
        print(f"training: {len(rows)} examples, batch 16, one epoch, {args.threads} thread(s)")
        start = time.perf_counter()
        plain_cfg = TrainConfig(epochs=1.0, lr=3e-3, batch_size=16, warmup_steps=10, threads=args.threads)
        ref = train_student(base, problems, plain_cfg, out_dir=Path(tmp) / "plain", progress=False)
        plain_s = time.perf_counter() - start
        print(
            f"  plain torch loop : {ref.steps} steps in {plain_s:.1f}s = {ref.steps / plain_s:.2f} steps/s, "
            f"{ref.tokens_seen / plain_s:,.0f} tokens/s"
        )
        start = time.perf_counter()
        trl = train_sft(base, rows, settings, out_dir=Path(tmp) / "trl", progress=False)
        seconds = time.perf_counter() - start
        print(
            f"  TRL SFTTrainer   : {trl.steps} steps in {seconds:.1f}s = {trl.steps / seconds:.2f} steps/s, "
            f"{trl.tokens_seen / seconds:,.0f} tokens/s (train loop alone: {trl.steps_per_second:.2f} steps/s, "
            f"{trl.tokens_per_second:,.0f} tokens/s)"
        )
        print(f"  TRL / plain: {plain_s / seconds:.2f}x the speed")

        suites = generate_benchmarks(0, max(1, args.eval_problems // 5))
        config = EvalConfig(
            samples_per_problem=1,
            sampling=SamplingConfig(temperature=0.0, max_new_tokens=384),
            judge_workers=1,
        )
        with make_engine("hf", trl.model_dir, device="cpu", batch_size=64) as engine:
            start = time.perf_counter()
            report = evaluate(engine, suites, config, out_dir=Path(tmp) / "eval", progress=False)
            seconds = time.perf_counter() - start
        n = sum(run.score.n_problems for run in report.benchmarks.values())
        print(f"evaluation: {n} problems, greedy, 384 tokens: {seconds:.1f}s = {n / seconds:.1f} problems/s")


if __name__ == "__main__":
    main()
