"""SkillProfile aggregation speed: 100K problems, 1-3 chains each (about 200K chains), a 3,000-leaf tree of
depth 12 (EvalTree-sized); and the 90% credible intervals of every node.

    .venv/bin/pytest benchmarks/bench_profile.py --benchmark-enable        # or: make bench / make bench-quick
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest
from skillcore.profile import SkillProfile
from skillcore.synthetic import random_chains, random_tree


@pytest.mark.quick
def test_profile_from_arrays(bench: Any, benchmark: Any) -> None:
    n_problems, n_leaves = 100_000, 3_000
    tree = random_tree(n_leaves, max_depth=12, seed=0)
    chains = random_chains(tree, n_problems, seed=0)
    rng = np.random.default_rng(0)
    attempts = rng.integers(1, 5, size=n_problems)
    correct = rng.binomial(attempts, 0.55)
    stats = tree.depth_stats()
    bench.conditions(threads=None)
    profile = benchmark.pedantic(
        lambda: SkillProfile.from_arrays(tree, chains, attempts, correct), rounds=5, warmup_rounds=1
    )
    start = time.perf_counter()
    profile.credible_interval()
    ci_s = time.perf_counter() - start
    n_chains = sum(map(len, chains))
    bench.info.update(
        n_problems=n_problems,
        n_chains=n_chains,
        n_leaves=stats.n_leaves,
        n_nodes=stats.n_nodes,
        max_depth=stats.max_depth,
        credible_interval_s=round(ci_s, 4),
    )
    bench.figure(
        f"`SkillProfile` aggregation, {n_problems // 1000}K problems ({n_chains / 1000:.0f}K chains), "
        f"{stats.n_leaves:,} leaves, depth {stats.max_depth} (then 90% credible intervals of all nodes)",
        f"{bench.best():.2f} s ({ci_s:.3f} s)",
        order=100,
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))
