"""skillselect speed and memory: 100,000 problems (1-3 chains each) on a 118-leaf (SkillMix-sized, depth 4)
and a 3,000-leaf (EvalTree-sized, depth 12) tree, K = 1,000.

A round is one ``select`` call on a pool already in memory: chains to leaves, profile, weights, strategy
(the selection step; the pool's construction is measured on its own). For ``skill`` the reference
preparation (``prepare="loop"``: the per-chain Python loops the step had before the speed-up) is timed in
the same process, alternating with the measured rounds, and must select the same problems; the figure is
both times and their ratio. ``skill-match`` is checked against the naive O(K x N x S) loop on a pool small
enough for it. Peak memory of ``skill`` and ``skill-match``: tracemalloc (Python/NumPy allocations during
one more call, above what was allocated before; not timed).

    .venv/bin/pytest benchmarks/bench_select.py --benchmark-enable        # or: make bench / make bench-quick
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from skillcore.synthetic import random_chains, random_tree
from skillcore.tree import SkillTree
from skillselect import Pool, greedy_match, naive_match, select
from skillselect.pool import ChainCodes

N_PROBLEMS = 100_000
K = 1_000
TREES = {118: 4, 3000: 12}  # leaves: max depth


def make_inputs(n_leaves: int, n_problems: int = N_PROBLEMS, seed: int = 0) -> dict[str, Any]:
    tree = random_tree(n_leaves, max_depth=TREES[n_leaves], seed=seed)
    chains = random_chains(tree, n_problems, seed=seed)
    rng = np.random.default_rng(seed)
    # per-leaf skill level, so that leaf accuracies differ (a few leaves near 0)
    level = {leaf.chain_text: float(rng.beta(2.0, 1.5)) for leaf in tree.leaves()}
    p = np.array([np.mean([level["->".join(c)] for c in cs]) for cs in chains])
    attempts = rng.integers(1, 5, size=n_problems)
    correct = rng.binomial(attempts, p)
    ids = [f"p{i:06d}" for i in range(n_problems)]
    metadata = [{"pass_rate": f"{x:.3f}"} for x in rng.uniform(size=n_problems)]
    return {
        "tree": tree,
        "ids": ids,
        "chains": chains,
        "attempts": attempts,
        "correct": correct,
        "meta": metadata,
    }


def build_pool(inputs: dict[str, Any]) -> Pool:
    return Pool.from_arrays(
        inputs["ids"], inputs["chains"], inputs["attempts"], inputs["correct"], metadata=inputs["meta"]
    )


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=[pytest.mark.large] if n > 500 else [], id=f"{n}leaves") for n in TREES],
)
def world(request: pytest.FixtureRequest) -> tuple[Pool, SkillTree, dict[str, Any]]:
    inputs = make_inputs(request.param)
    return build_pool(inputs), inputs["tree"], inputs


STRATEGIES: dict[str, dict[str, Any]] = {
    "skill": {"strategy": "skill"},
    "skill-match": {"strategy": "skill-match"},
    "random": {"strategy": "random"},
    "balanced": {"strategy": "balanced"},
    "difficulty": {"strategy": "difficulty", "difficulty_field": "pass_rate"},
    "skill-match-T0": {"strategy": "skill-match", "temperature": 0.0},  # all weights equal: tie-heavy
    "skill-match-portion": {"strategy": "skill-match", "correct_portion": 0.3},
    "skill-posterior-portion": {"strategy": "skill", "correct_portion": 0.3, "use_posterior": True},
}
QUICK = {"skill", "skill-match", "random", "balanced", "difficulty"}
ORDER = {name: i for i, name in enumerate(STRATEGIES)}


def _params() -> list[Any]:
    out = []
    for name in STRATEGIES:
        marks = [pytest.mark.quick] if name in QUICK else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_select(bench: Any, benchmark: Any, world: Any, name: str) -> None:
    pool, tree, _ = world
    n_leaves = tree.n_leaves
    bench.conditions(threads=None)
    options = STRATEGIES[name]
    slow = options["strategy"] == "skill-match"
    rounds, warmup = (3, 0) if slow else (7, 1)
    setup = None
    if name == "skill":
        setup = bench.baseline(lambda: select(pool, tree, k=K, seed=0, prepare="loop", **options))
    sel = benchmark.pedantic(
        lambda: select(pool, tree, k=K, seed=0, **options), setup=setup, rounds=rounds, warmup_rounds=warmup
    )
    bench.info.update(
        n_selected=sel.summary["n_selected"],
        l2_to_target=round(sel.summary["l2_to_target"], 5),
        prepare_s=sel.summary["prepare_s"],
        strategy_s=sel.summary["strategy_s"],
        n_leaves=n_leaves,
        n_problems=pool.n,
    )
    assert sel.summary["n_selected"] == K
    best = bench.best()
    memory = ""
    if name in ("skill", "skill-match"):  # one more call, traced (tracemalloc slows it: not timed)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        select(pool, tree, k=K, seed=0, **options)
        peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
        bench.info["tracemalloc_peak_mib"] = round(peak, 1)
        memory = f", peak memory {peak:.0f} MiB"
    what = f"`{options['strategy']}` selection, K = {K:,} of {pool.n // 1000}K problems, {n_leaves:,} leaves"
    extra = {k: v for k, v in options.items() if k != "strategy"}
    if extra:
        what += " (" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")"
    order = 200 + 20 * (n_leaves != 118) + ORDER[name]
    if name == "skill":
        reference = select(pool, tree, k=K, seed=0, prepare="loop", **options)
        assert reference.unique_ids == sel.unique_ids  # the speed-up changes nothing chosen
        r = bench.record_ratio("after", "before", warmup_rounds=warmup)
        bench.figure(
            f"selection step: {what}; before (reference loops) -> after",
            f"{r['before_min_s']:.3f} s -> {r['after_min_s']:.3f} s ({r['speed_ratio']:.1f}x), same selection"
            + memory,
            order=order,
        )
    else:
        bench.figure(what, f"{best:.3f} s{memory}", order=order)


@pytest.mark.quick
def test_pool_construction(bench: Any, benchmark: Any, world: Any) -> None:
    """Pool.from_arrays at 100K problems, including the chain codes the selection step now relies on."""
    _, tree, inputs = world
    bench.conditions(threads=None)
    pool = benchmark.pedantic(lambda: build_pool(inputs), rounds=3, warmup_rounds=0)
    start = time.perf_counter()
    ChainCodes.encode(pool.chains)
    encode_s = time.perf_counter() - start
    bench.info.update(chain_codes_s=round(encode_s, 4), n_distinct_chains=len(pool.chain_codes.distinct))
    bench.figure(
        f"`Pool.from_arrays`, {pool.n // 1000}K problems with metadata, {tree.n_leaves:,} leaves "
        "(of which encoding the chains)",
        f"{bench.best():.2f} s ({encode_s:.3f} s)",
        order=240 + (tree.n_leaves != 118),
    )


def test_skill_match_vs_naive_loop(bench: Any, benchmark: Any) -> None:
    """The fast greedy matcher against the naive O(K x N x S) loop in exact arithmetic: same choices."""
    rng = np.random.default_rng(3)
    x = (rng.random((400, 12)) < 0.2).astype(np.int64)
    w = rng.random(12)
    target = w / w.sum()
    k = 40
    matrix = sp.csr_matrix(x)
    bench.conditions(threads=None)
    naive: list[np.ndarray] = []
    setup = bench.baseline(lambda: naive.append(naive_match(x, target, k)))
    fast = benchmark.pedantic(lambda: greedy_match(matrix, target, k), setup=setup, rounds=3)
    assert fast.tolist() == naive[-1].tolist()
    r = bench.record_ratio("greedy_match", "naive_loop")
    bench.figure(
        f"`skill-match` kernel vs the naive loop, K = {k} of {x.shape[0]} problems, {x.shape[1]} leaves",
        f"{r['greedy_match_min_s'] * 1000:.1f} ms vs {r['naive_loop_min_s']:.2f} s "
        f"({r['speed_ratio']:,.0f}x), same choices",
        order=260,
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))
