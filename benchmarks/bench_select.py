"""skillselect speed and memory: 100,000 problems (1-3 chains each) on a ~3,000-leaf and a ~120-leaf tree.

Run: .venv/bin/python benchmarks/bench_select.py  (prints the figures recorded in the README)

Times are wall clock (time.perf_counter) for one ``select`` call, split into preparation (chains to
leaves, SkillProfile, weights) and the strategy itself. Peak memory is measured two ways: tracemalloc
(peak of Python/NumPy allocations during the call, above what was allocated before) and the process'
maximum resident set size from resource.getrusage (includes the interpreter and imported libraries).
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from skillcore.synthetic import random_chains, random_tree
from skillselect import Pool, select


def make_pool(n_leaves: int, n_problems: int, seed: int = 0) -> tuple[Pool, object]:
    tree = random_tree(n_leaves, max_depth=12 if n_leaves > 500 else 4, seed=seed)
    chains = random_chains(tree, n_problems, seed=seed)
    rng = np.random.default_rng(seed)
    # per-leaf skill level, so that leaf accuracies differ (a few leaves near 0)
    level = {leaf.chain_text: float(rng.beta(2.0, 1.5)) for leaf in tree.leaves()}
    p = np.array([np.mean([level["->".join(c)] for c in cs]) for cs in chains])
    attempts = rng.integers(1, 5, size=n_problems)
    correct = rng.binomial(attempts, p)
    ids = [f"p{i:06d}" for i in range(n_problems)]
    return Pool.from_arrays(ids, chains, attempts, correct), tree


def run(pool: Pool, tree: object, strategy: str, k: int, repeats: int, **options: object) -> None:
    times, prep, strat = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sel = select(pool, tree, k=k, strategy=strategy, seed=0, **options)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        prep.append(sel.summary["prepare_s"])
        strat.append(sel.summary["strategy_s"])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    select(pool, tree, k=k, strategy=strategy, seed=0, **options)  # type: ignore[arg-type]
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    best = int(np.argmin(times))
    print(
        f"  {strategy:<12} K={k}{' ' + str(options) if options else ''}: total best {times[best]:.3f} s (prepare {prep[best]:.3f} s + strategy "
        f"{strat[best]:.3f} s), median {sorted(times)[len(times) // 2]:.3f} s over {repeats}; "
        f"tracemalloc peak {peak:.0f} MiB; {sel.summary['n_selected']} selected, "
        f"L2 to target {sel.summary['l2_to_target']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for n_leaves in (3_000, 120):
        start = time.perf_counter()
        pool, tree = make_pool(n_leaves, args.problems)
        stats = tree.depth_stats()  # type: ignore[attr-defined]
        n_chains = sum(map(len, pool.chains))
        print(
            f"tree: {stats.n_leaves:,} leaves, {stats.n_nodes:,} nodes, max depth {stats.max_depth}; "
            f"pool: {pool.n:,} problems, {n_chains:,} chains (built in {time.perf_counter() - start:.1f} s)"
        )
        for strategy in ("skill", "skill-match", "random", "balanced"):
            run(pool, tree, strategy, args.k, args.repeats if strategy != "skill-match" else 1)
        # tie-heavy matching (equal weights) and the correct-portion constraint
        run(pool, tree, "skill-match", args.k, 1, temperature=0.0)
        run(pool, tree, "skill-match", args.k, 1, correct_portion=0.3)
        run(pool, tree, "skill", args.k, args.repeats, correct_portion=0.3, use_posterior=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"process max RSS (resource.getrusage, whole run incl. interpreter, numpy, scipy, pandas): {rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
