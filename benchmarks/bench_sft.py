"""SFT and evaluation throughput on the tiny student: TRL (the project's training path) against a plain torch
loop, side by side in one process, and evaluation problems per second.

1. Training: the same world problems, the same freshly initialised 4-layer student, batch 16, lr 3e-3,
   one epoch, through ``distill.sft.train_sft`` (TRL ``SFTTrainer``, completion-only loss, length-grouped
   batches; the measured round) and through ``skillworld.student.train_student`` (the plain torch loop that
   pretrains the tiny student: length-bucketed batches, AdamW, cosine schedule, loss on the assistant
   turn; the baseline, timed just before). Steps/s and non-padding tokens/s for both; the time includes
   tokenization. One thread, and two threads in the full set (threads measured on purpose: it needs both
   cores to itself, and any other process distorts it).
2. Evaluation: ``distill.eval.evaluate`` of the cached quick student (skillworld.testing) on world suites,
   greedy, one sample, 384 new tokens, ``hf`` engine (batch 64) and judge: problems/s.

    .venv/bin/pytest benchmarks/bench_sft.py --benchmark-enable            # or: make bench
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

N_EXAMPLES = 1600
BATCH = 16


@pytest.mark.parametrize(
    "threads", [pytest.param(1, id="1thread"), pytest.param(2, marks=pytest.mark.large, id="2threads")]
)
def test_sft_trl_vs_plain_loop(bench: Any, benchmark: Any, tmp_path: Path, threads: int) -> None:
    from distill.formatting import FormatConfig, format_examples
    from distill.sft import load_sft_settings, train_sft
    from skillworld import generate_pool
    from skillworld.student import TrainConfig, init_student, train_student
    from skillworld.tokenizer import build_tokenizer

    bench.conditions(threads=threads, cores=threads)
    problems = generate_pool(N_EXAMPLES, seed=5)
    tokenizer = build_tokenizer(n_texts=2000)
    rows, _ = format_examples(problems, FormatConfig(), tokenizer)
    base = init_student(tmp_path / "base", tokenizer=tokenizer)
    settings = load_sft_settings(
        "cpu-demo",
        learning_rate=3e-3,
        warmup_steps=10,
        num_train_epochs=1,
        per_device_train_batch_size=BATCH,
        save_steps=10_000,
        threads=threads,
    )
    plain_cfg = TrainConfig(epochs=1.0, lr=3e-3, batch_size=BATCH, warmup_steps=10, threads=threads)
    results: dict[str, Any] = {}

    def plain() -> None:
        results["plain"] = train_student(
            base, problems, plain_cfg, out_dir=tmp_path / "plain", progress=False
        )

    def trl() -> Any:
        return train_sft(base, rows, settings, out_dir=tmp_path / "trl", progress=False)

    trl_result = benchmark.pedantic(trl, setup=bench.baseline(plain), rounds=1)
    ref = results["plain"]
    r = bench.record_ratio("trl", "plain")
    trl_sps, plain_sps = trl_result.steps / r["trl_min_s"], ref.steps / r["plain_min_s"]
    trl_tps, plain_tps = trl_result.tokens_seen / r["trl_min_s"], ref.tokens_seen / r["plain_min_s"]
    bench.info.update(
        examples=len(rows),
        trl_steps=trl_result.steps,
        plain_steps=ref.steps,
        trl_steps_per_s=round(trl_sps, 3),
        plain_steps_per_s=round(plain_sps, 3),
        trl_tokens_per_s=round(trl_tps),
        plain_tokens_per_s=round(plain_tps),
        trl_train_loop_steps_per_s=round(trl_result.steps_per_second, 3),
        trl_loss=round(trl_result.train_loss, 4),
        plain_loss=round(ref.final_loss, 4),
    )
    bench.figure(
        f"SFT of the 4-layer student, {len(rows):,} examples, batch {BATCH}, one epoch, {threads} thread(s): "
        "TRL vs the plain loop (`skillworld.student`)",
        f"{trl_sps:.1f} vs {plain_sps:.1f} steps/s ({trl_tps / 1000:.1f}K vs {plain_tps / 1000:.1f}K tokens/s, "
        f"{trl_tps / plain_tps:.2f}x)",
        order=600 + threads,
    )


def test_evaluation_throughput(bench: Any, benchmark: Any, tmp_path: Path) -> None:
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate
    from skillworld import generate_benchmarks
    from skillworld.testing import quick_student

    n_problems, max_new_tokens = 200, 384
    bench.conditions(threads=1)
    model_dir = quick_student(tmp_path / "model")
    suites = generate_benchmarks(0, n_problems // 5)
    config = EvalConfig(
        samples_per_problem=1,
        sampling=SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens),
        judge_workers=1,
    )
    with make_engine("hf", str(model_dir), device="cpu", batch_size=64) as engine:
        report = benchmark.pedantic(
            lambda: evaluate(engine, suites, config, out_dir=tmp_path / "eval", progress=False), rounds=1
        )
    n = sum(run.score.n_problems for run in report.benchmarks.values())
    rate = n / bench.best()
    bench.info.update(n_problems=n, problems_per_s=round(rate, 2), max_new_tokens=max_new_tokens)
    bench.figure(
        f"evaluation: {n} world-suite problems, greedy, one answer, {max_new_tokens} tokens, `hf` engine + judge, "
        "quick student, 1 thread",
        f"{rate:.1f} problems/s",
        order=610,
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))
