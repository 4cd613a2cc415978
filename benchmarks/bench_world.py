"""Offline-world generation speed: the 100K teacher pool, the benchmark suites, writing JSONL.

Run: .venv/bin/python benchmarks/bench_world.py [--pool-size N]  (prints the figures recorded in the README)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from skillcore import write_jsonl
from skillworld import generate_benchmarks, generate_pool


def main(pool_size: int = 100_000, seed: int = 0) -> None:
    start = time.perf_counter()
    pool = generate_pool(pool_size, seed)
    gen_s = time.perf_counter() - start
    start = time.perf_counter()
    suites = generate_benchmarks(seed, 200)
    bench_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_jsonl(Path(tmp) / "pool.jsonl", pool)
        write_s = time.perf_counter() - start
        size_mb = (Path(tmp) / "pool.jsonl").stat().st_size / 1e6
    n_bench = sum(len(v) for v in suites.values())
    print(f"pool: {len(pool)} problems generated in {gen_s:.2f}s ({len(pool) / gen_s:,.0f}/s)")
    print(f"pool.jsonl written in {write_s:.2f}s ({size_mb:.1f} MB)")
    print(f"benchmarks: {len(suites)} suites, {n_bench} problems in {bench_s:.2f}s")
    print(f"total pool generate+write: {gen_s + write_s:.2f}s (target < 60s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool-size", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.pool_size, args.seed)
