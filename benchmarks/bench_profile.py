"""SkillProfile aggregation speed: 100K problems, 1-3 chains each, on a ~3,000-leaf tree.

Run: .venv/bin/python benchmarks/bench_profile.py  (prints the figures recorded in the README)
"""

from __future__ import annotations

import time

import numpy as np
from skillcore.profile import SkillProfile
from skillcore.synthetic import random_chains, random_tree


def main(n_problems: int = 100_000, n_leaves: int = 3_000, repeats: int = 3) -> None:
    tree = random_tree(n_leaves, max_depth=12, seed=0)
    chains = random_chains(tree, n_problems, seed=0)
    rng = np.random.default_rng(0)
    attempts = rng.integers(1, 5, size=n_problems)
    correct = rng.binomial(attempts, 0.55)
    stats = tree.depth_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        profile = SkillProfile.from_arrays(tree, chains, attempts, correct)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    profile.credible_interval()
    ci_time = time.perf_counter() - start
    print(
        f"SkillProfile.from_arrays: {n_problems:,} problems, {sum(map(len, chains)):,} chains, "
        f"{stats.n_leaves:,} leaves ({stats.n_nodes:,} nodes, max depth {stats.max_depth}): "
        f"best {min(times):.3f} s, median {sorted(times)[len(times) // 2]:.3f} s; "
        f"90% credible intervals for all nodes {ci_time:.3f} s"
    )


if __name__ == "__main__":
    main()
