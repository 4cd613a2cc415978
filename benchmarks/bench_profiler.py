"""Profiling throughput: judged answers per second, and the ``hf`` engine against a plain generate loop.

Run: .venv/bin/python benchmarks/bench_profiler.py [--answers 2000] [--prompts 64] [--max-new-tokens 128]

1. Judge: world-pool answers (teacher solutions, some with a wrong or missing box) judged by
   ``MathJudge`` with worker subprocesses, and inline for reference.
2. Generation: the same chat prompts, greedy, through ``HFEngine.generate`` and through a plain batched
   ``model.generate`` loop (left padding, prompts in pool order, same batch size). Both produce the same
   tokens, so generated tokens per second compare directly; the target is a ratio of at least 0.8.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from pathlib import Path

from skillworld import generate_pool


def bench_judge(n_answers: int, workers: int) -> None:
    from distill.judge import JudgeItem, MathJudge

    rng = random.Random(0)
    pool = generate_pool(max(n_answers // 4, 50), seed=1)
    items = []
    for i in range(n_answers):
        p = pool[i % len(pool)]
        roll = rng.random()
        if roll < 0.6:
            response = p.solution
        elif roll < 0.9:
            response = re.sub(r"\\boxed\{.*\}", lambda _: f"\\\\boxed{{{rng.randint(0, 999)}}}", p.solution)
        else:
            response = p.solution.split("\\boxed")[0]
        items.append(
            JudgeItem(unique_id=f"{p.unique_id}-{i}", response=response, expected_answer=p.expected_answer)
        )
    # every answer written differently from its reference, so each one goes through math-verify
    hard = []
    for i in range(n_answers // 2):
        a, b = rng.randint(1, 97), rng.randint(2, 99)
        shown = f"{a / b:.6f}" if i % 2 else f"\\dfrac{{{a * 2}}}{{{b * 2}}}"
        hard.append(
            JudgeItem(
                unique_id=f"h{i}", response=f"\\boxed{{{shown}}}", expected_answer=f"\\frac{{{a}}}{{{b}}}"
            )
        )
    for name, batch in (("world answers", items), ("math-verify-bound answers", hard)):
        for w in (workers, 0):
            with MathJudge(workers=w, timeout_s=5) as judge:
                judge.judge(batch[:20])  # start the workers and warm the parsers
                start = time.perf_counter()
                verdicts = judge.judge(batch)
                elapsed = time.perf_counter() - start
            counts: dict[str, int] = {}
            for v in verdicts:
                counts[v.status] = counts.get(v.status, 0) + 1
            label = f"{w} worker processes" if w else "inline (main thread)"
            print(
                f"judge {name}, {label}: {len(batch)} in {elapsed:.2f} s = {len(batch) / elapsed:,.0f} answers/s  {counts}"
            )


def bench_generation(n_prompts: int, max_new_tokens: int, batch_size: int, repeats: int) -> None:
    import torch
    from distill.engines import SamplingConfig, make_engine, question_prompts, render_chat
    from skillworld.testing import quick_student

    model_dir = quick_student(Path(tempfile.mkdtemp()) / "model")
    engine = make_engine("hf", str(model_dir), batch_size=batch_size, device="cpu")
    model, tok = engine.model, engine.tokenizer  # type: ignore[attr-defined]
    questions = [p.question for p in generate_pool(n_prompts, seed=2)]
    prompts = question_prompts(questions)
    params = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    texts = [render_chat(tok, p, enable_thinking=True) for p in prompts]
    eos = set(engine.eos_ids)  # type: ignore[attr-defined]

    def plain_loop() -> int:
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
        return total

    def engine_run() -> int:
        return sum(g.n_tokens for gens in engine.generate(prompts, params, progress=False) for g in gens)

    plain_loop(), engine_run()  # warm-up (first generate calls are slow)
    best = {"plain": 0.0, "engine": 0.0}
    tokens = {"plain": 0, "engine": 0}
    for _ in range(repeats):  # interleaved so machine load hits both alike
        for name, fn in (("plain", plain_loop), ("engine", engine_run)):
            start = time.perf_counter()
            tokens[name] = fn()
            best[name] = max(best[name], tokens[name] / (time.perf_counter() - start))
    print(
        f"generation, {n_prompts} prompts, greedy, max_new_tokens={max_new_tokens}, batch {batch_size}, "
        f"best of {repeats}: plain model.generate loop {best['plain']:,.0f} tok/s ({tokens['plain']} tokens), "
        f"hf engine {best['engine']:,.0f} tok/s ({tokens['engine']} tokens); "
        f"ratio {best['engine'] / best['plain']:.2f} (target >= 0.8)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bench_judge(args.answers, args.workers)
    bench_generation(args.prompts, args.max_new_tokens, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
