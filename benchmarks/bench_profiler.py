"""Profiling throughput: judged answers per second, and the ``hf`` engine against a plain generate loop.

1. Judge: world-pool answers (teacher solutions, some with a wrong or missing box) and answers written
   differently from their reference (each goes through math-verify), judged by ``MathJudge`` with 2 worker
   subprocesses (the measured rounds; it needs both cores) and inline in the main thread (the baseline,
   timed alternately in the same process).
2. Generation: the same chat prompts, greedy, through ``HFEngine.generate`` (measured) and through a plain
   batched ``model.generate`` loop (baseline: left padding, prompts in pool order, same batch size), one
   torch thread. Both produce the same tokens, so tokens per second compare directly; target ratio >= 0.8.

    .venv/bin/pytest benchmarks/bench_profiler.py --benchmark-enable       # or: make bench / make bench-quick
"""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from skillworld import generate_pool

N_ANSWERS = 2000
WORKERS = 2


def judge_items(kind: str) -> list[Any]:
    from distill.judge import JudgeItem

    rng = random.Random(0)
    if kind == "world":
        pool = generate_pool(N_ANSWERS // 4, seed=1)
        items = []
        for i in range(N_ANSWERS):
            p = pool[i % len(pool)]
            roll = rng.random()
            if roll < 0.6:
                response = p.solution
            elif roll < 0.9:
                response = re.sub(
                    r"\\boxed\{.*\}", lambda _: f"\\\\boxed{{{rng.randint(0, 999)}}}", p.solution
                )
            else:
                response = p.solution.split("\\boxed")[0]
            items.append(
                JudgeItem(
                    unique_id=f"{p.unique_id}-{i}", response=response, expected_answer=p.expected_answer
                )
            )
        return items
    hard = []  # every answer written differently from its reference, so each one goes through math-verify
    for i in range(N_ANSWERS // 2):
        a, b = rng.randint(1, 97), rng.randint(2, 99)
        shown = f"{a / b:.6f}" if i % 2 else f"\\dfrac{{{a * 2}}}{{{b * 2}}}"
        hard.append(
            JudgeItem(
                unique_id=f"h{i}", response=f"\\boxed{{{shown}}}", expected_answer=f"\\frac{{{a}}}{{{b}}}"
            )
        )
    return hard


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("world", marks=pytest.mark.quick),
        pytest.param("math-verify-bound", marks=pytest.mark.large),
    ],
)
def test_judge(bench: Any, benchmark: Any, kind: str) -> None:
    from distill.judge import MathJudge

    items = judge_items(kind)
    bench.conditions(threads=None, cores=WORKERS)
    with MathJudge(workers=WORKERS, timeout_s=5) as judge, MathJudge(workers=0, timeout_s=5) as inline:
        judge.judge(items[:20])  # start the workers and warm the parsers
        inline.judge(items[:20])
        setup = bench.baseline(lambda: inline.judge(items))
        verdicts = benchmark.pedantic(lambda: judge.judge(items), setup=setup, rounds=3)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    r = bench.record_ratio("workers", "inline")
    n = len(items)
    bench.info.update(n_answers=n, statuses=counts, workers=WORKERS)
    bench.figure(
        f"judged answers per second, {n:,} {kind} answers, {WORKERS} worker processes (inline, main thread)",
        f"{n / r['workers_min_s']:,.0f} ({n / r['inline_min_s']:,.0f})",
        order=400 + (kind != "world"),
    )


TOWER = "\\boxed{2^{2^{2^{2^{2^{2}}}}}}"  # math-verify works on it until its timeout


def test_judge_fairness(bench: Any, benchmark: Any) -> None:
    """A small batch's latency alone (baseline) and while a slow batch (power towers, each judged until
    math-verify's timeout) holds the same judge's workers: no lock across calls, and a spare worker takes
    the newcomer's items (before, it waited for the whole slow batch)."""
    import threading

    from distill.judge import JudgeItem, MathJudge

    small = [
        JudgeItem(
            unique_id=f"q{i}",
            response=f"\\boxed{{\\dfrac{{{2 * i + 2}}}{{{4 * i + 8}}}}}",
            expected_answer=f"\\frac{{{i + 1}}}{{{2 * i + 4}}}",
        )
        for i in range(4)
    ]
    n_slow = 8
    bench.conditions(threads=None, cores=WORKERS)
    with MathJudge(workers=WORKERS, timeout_s=5) as judge:
        judge.judge(small)  # start the workers
        slow_runs: list[threading.Thread] = []

        def alone_then_start_slow() -> None:
            for thread in slow_runs:  # the previous round's slow batch is over before the baseline
                thread.join()
            start = time.perf_counter()
            judge.judge(small)
            bench._baseline.append(time.perf_counter() - start)
            # another expected answer each round: a judge remembers timeouts, a repeat would be instant
            slow = [
                JudgeItem(unique_id=f"s{i}", response=TOWER, expected_answer=f"{len(slow_runs)}{i}")
                for i in range(n_slow)
            ]
            thread = threading.Thread(target=judge.judge, args=(slow,))
            thread.start()
            slow_runs.append(thread)
            while not judge._batches:
                time.sleep(0.01)
            time.sleep(0.5)  # the slow batch holds both workers

        benchmark.pedantic(lambda: judge.judge(small), setup=alone_then_start_slow, rounds=3)
        for thread in slow_runs:
            thread.join()
    r = bench.record_ratio("behind_slow", "alone")
    bench.info.update(small_items=len(small), slow_items=n_slow, workers=WORKERS)
    bench.figure(
        f"judge latency of a {len(small)}-item batch alone and behind a running batch of {n_slow} power "
        f"towers ({WORKERS} workers, 5 s per-answer timeout)",
        f"{r['alone_median_s'] * 1000:,.0f} ms alone, {r['behind_slow_median_s'] * 1000:,.0f} ms behind the "
        "slow batch",
        order=402,
    )


@pytest.mark.large
def test_hf_engine_vs_plain_generate(bench: Any, benchmark: Any, tmp_path: Path) -> None:
    import torch
    from distill.engines import SamplingConfig, make_engine, question_prompts, render_chat
    from skillworld.testing import quick_student

    n_prompts, max_new_tokens, batch_size = 64, 128, 16
    bench.conditions(threads=1)
    model_dir = quick_student(tmp_path / "model")
    engine = make_engine("hf", str(model_dir), batch_size=batch_size, device="cpu")
    model, tok = engine.model, engine.tokenizer
    prompts = question_prompts([p.question for p in generate_pool(n_prompts, seed=2)])
    params = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    texts = [render_chat(tok, p, enable_thinking=True) for p in prompts]
    eos = set(engine.eos_ids)
    tokens: dict[str, int] = {}

    def plain_loop() -> None:
        total = 0
        for start in range(0, len(texts), batch_size):
            batch = tok(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            with torch.inference_mode():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=sorted(eos),
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                end = next((k for k, t in enumerate(row) if t in eos), None)
                total += len(row) if end is None else end + 1
        tokens["plain"] = total

    def engine_run() -> None:
        tokens["engine"] = sum(
            g.n_tokens for gens in engine.generate(prompts, params, progress=False) for g in gens
        )

    setup = bench.baseline(plain_loop)
    benchmark.pedantic(engine_run, setup=setup, rounds=3, warmup_rounds=1)  # first generate calls are slow
    r = bench.record_ratio("engine", "plain", warmup_rounds=1)
    engine_tps, plain_tps = tokens["engine"] / r["engine_min_s"], tokens["plain"] / r["plain_min_s"]
    ratio = engine_tps / plain_tps
    bench.info.update(
        engine_tokens=tokens["engine"],
        plain_tokens=tokens["plain"],
        engine_tokens_per_s=round(engine_tps),
        plain_tokens_per_s=round(plain_tps),
        throughput_ratio=round(ratio, 3),
    )
    bench.figure(
        f"`hf` engine vs plain batched `model.generate`, tiny student, {n_prompts} prompts, greedy, "
        f"{max_new_tokens} new tokens, batch {batch_size}, 1 thread",
        f"{engine_tps:,.0f} vs {plain_tps:,.0f} tokens/s ({ratio:.2f}x, target >= 0.8)",
        order=410,
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))
