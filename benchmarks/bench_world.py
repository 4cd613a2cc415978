"""Offline-world generation speed: the teacher pool (100K problems; 10K in the quick set), writing it as
JSONL, and the five benchmark suites.

    .venv/bin/pytest benchmarks/bench_world.py --benchmark-enable          # or: make bench / make bench-quick
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from skillcore import write_jsonl
from skillworld import generate_benchmarks, generate_pool


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(10_000, marks=pytest.mark.quick, id="10K"),
        pytest.param(100_000, marks=pytest.mark.large, id="100K"),
    ],
)
def test_world_pool(bench: Any, benchmark: Any, size: int) -> None:
    bench.conditions(threads=None)
    rounds = 2 if size > 50_000 else 3
    pool = benchmark.pedantic(lambda: generate_pool(size, 0), rounds=rounds)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_jsonl(Path(tmp) / "pool.jsonl", pool)
        write_s = time.perf_counter() - start
        size_mb = (Path(tmp) / "pool.jsonl").stat().st_size / 1e6
    gen_s = bench.best()
    bench.info.update(
        n=len(pool), per_s=round(len(pool) / gen_s), write_s=round(write_s, 3), jsonl_mb=round(size_mb, 1)
    )
    bench.figure(
        f"offline world: {size // 1000}K pool problems generated (then written as JSONL)",
        f"{gen_s:.2f} s, {len(pool) / gen_s:,.0f}/s ({write_s:.2f} s, {size_mb:.0f} MB)",
        order=500 + (size > 50_000),
    )


@pytest.mark.quick
def test_world_benchmarks(bench: Any, benchmark: Any) -> None:
    bench.conditions(threads=None)
    suites = benchmark.pedantic(lambda: generate_benchmarks(0, 200), rounds=3)
    n = sum(len(v) for v in suites.values())
    bench.info.update(n_suites=len(suites), n_problems=n)
    bench.figure(
        f"offline world: {len(suites)} benchmark suites, {n:,} problems", f"{bench.best():.2f} s", order=502
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))
