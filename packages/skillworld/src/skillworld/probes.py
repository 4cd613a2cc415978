"""Per-leaf probes: how well a student does each skill alone, and what a small focused budget does to it.

A probe set holds up to ``n_per_leaf`` distinct one-skill problems per leaf, drawn from the benchmark side
of the partition at the suites' operand levels, so a probe figure is the skill itself at the difficulty the
suites ask for. Some leaves have few distinct one-skill questions on that side (Combinations: 9 at the
suites' levels), so their figures move in coarse steps. Generation and judging are ``distill.eval``'s.

The same module draws the *focus* sets that the calibration uses: one-skill problems of chosen leaves from
the training side (never a probe question).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from skillcore import TaggedProblem

from skillworld.world import Mix, Side, WorldProblem, iter_world_problems, leaf_names, to_record

# The suites' operand levels, pooled (see ``world.SUITES``).
PROBE_LEVELS: Mapping[int, float] = {1: 0.4, 2: 0.4, 3: 0.2}


def _one_skill_stream(leaf: str, seed: str, side: Side) -> Iterator[WorldProblem]:
    """One-skill problems of ``leaf`` at the suites' levels, from one side of the partition."""
    return iter_world_problems(
        Mix(n_skills={1: 1.0}, levels=PROBE_LEVELS, leaf_weights={leaf: 1.0}), seed, side
    )


def _one_skill(leaf: str, seed: str, side: Side, n: int, prefix: str) -> list[TaggedProblem]:
    stream = _one_skill_stream(leaf, seed, side)
    meta_rng = random.Random(f"skillworld:{prefix}-meta:{seed}")
    seen: set[str] = set()
    out: list[TaggedProblem] = []
    for _ in range(200 * n):  # small question spaces run dry: take what there is
        if len(out) >= n:
            break
        problem = next(stream)
        if problem.question in seen:
            continue
        seen.add(problem.question)
        out.append(to_record(problem, f"{prefix}-{leaf}-{len(out):03d}", prefix, meta_rng))
    return out


def probe_problems(
    n_per_leaf: int = 30, seed: int = 0, leaves: Sequence[str] | None = None
) -> list[TaggedProblem]:
    """Distinct one-skill benchmark-side problems, up to ``n_per_leaf`` per leaf."""
    if n_per_leaf < 1:
        raise ValueError(f"n_per_leaf must be positive, got {n_per_leaf}")
    out: list[TaggedProblem] = []
    for leaf in leaves or leaf_names():
        out.extend(_one_skill(leaf, f"probe:{seed}:{leaf}", "benchmark", n_per_leaf, "probe"))
    return out


def focus_problems(leaves: Sequence[str], per_leaf: int, seed: int = 0) -> list[TaggedProblem]:
    """``per_leaf`` one-skill training-side problems of each leaf (repeats allowed where the space is small)."""
    out: list[TaggedProblem] = []
    for leaf in leaves:
        stream = _one_skill_stream(leaf, f"focus:{seed}:{leaf}", "train")
        meta_rng = random.Random(f"skillworld:focus-meta:{seed}:{leaf}")
        out.extend(
            to_record(next(stream), f"focus-{leaf}-{i:04d}", "focus", meta_rng) for i in range(per_leaf)
        )
    return out


def probe_accuracy(
    model: str | Path,
    out_dir: str | Path,
    *,
    n_per_leaf: int = 30,
    seed: int = 0,
    leaves: Sequence[str] | None = None,
    max_new_tokens: int = 384,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """Leaf -> greedy one-skill accuracy of ``model`` on the probe set (resumable in ``out_dir``)."""
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate

    problems = probe_problems(n_per_leaf, seed, leaves)
    config = EvalConfig(
        samples_per_problem=1,
        sampling=SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed),
        chunk_size=128,
        seed=seed,
    )
    with make_engine("hf", str(model), batch_size=batch_size, device="cpu") as engine:
        report = evaluate(
            engine, {"probe": problems}, config, out_dir=out_dir, progress=progress, on_mismatch="restart"
        )
    leaf_of = {p.unique_id: p.chains[0][-1] for p in problems}
    hits: dict[str, list[bool]] = {}
    for verdict in report.benchmarks["probe"].rollout.verdicts:
        hits.setdefault(leaf_of[verdict.unique_id], []).append(verdict.correct)
    return {leaf: sum(v) / len(v) for leaf, v in hits.items()}
