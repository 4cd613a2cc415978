"""Small deterministic fixtures for skillselect tests (not part of the public API)."""

from __future__ import annotations

import numpy as np
from skillcore.records import TaggedProblem, Verdict
from skillcore.tree import SkillTree

from skillselect import Pool

TREE = {
    "name": "root",
    "children": [
        {
            "name": "Algebra",
            "children": [
                {"name": "Linear", "children": [{"name": "One step"}, {"name": "Two step"}]},
                {"name": "Quadratic"},
            ],
        },
        {"name": "Geometry", "children": [{"name": "Triangles"}, {"name": "Circles"}]},
        {"name": "Counting"},
    ],
}
# leaf chains in preorder
LEAVES = [
    ["Algebra", "Linear", "One step"],
    ["Algebra", "Linear", "Two step"],
    ["Algebra", "Quadratic"],
    ["Geometry", "Triangles"],
    ["Geometry", "Circles"],
    ["Counting"],
]


def small_tree() -> SkillTree:
    return SkillTree.from_dict(TREE)


def leaf_pool(per_leaf: list[int], correct_rate: list[float], attempts: int = 10) -> Pool:
    """Single-chain problems: ``per_leaf[j]`` problems on leaf j, each with ``attempts`` attempts of which
    ``round(rate * attempts)`` are correct, so every leaf's accuracy is exactly its rate."""
    ids, chains, att, cor = [], [], [], []
    for j, (n, rate) in enumerate(zip(per_leaf, correct_rate, strict=True)):
        for i in range(n):
            ids.append(f"L{j}-{i}")
            chains.append([LEAVES[j]])
            att.append(attempts)
            cor.append(round(rate * attempts))
    return Pool.from_arrays(ids, chains, att, cor)


def random_records(
    n: int, seed: int = 0, judged_share: float = 1.0
) -> tuple[list[TaggedProblem], list[Verdict]]:
    """Problems with 1-2 random leaf chains, metadata difficulty, and 1-3 verdicts when judged."""
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.05, 0.95, size=len(LEAVES))
    tagged, verdicts = [], []
    for i in range(n):
        leaves = rng.choice(len(LEAVES), size=int(rng.integers(1, 3)), replace=False)
        tagged.append(
            TaggedProblem(
                unique_id=f"q{i:04d}",
                question=f"question {i}",
                solution=f"<think>work {i}</think> answer {i}",
                expected_answer=str(i),
                metadata={"pass_rate": "n/a" if i % 7 == 0 else f"{rng.uniform():.3f}"},
                chains=[LEAVES[j] for j in leaves.tolist()],
            )
        )
        if rng.random() < judged_share:
            p = float(np.mean(skill[leaves]))
            for s in range(int(rng.integers(1, 4))):
                ok = rng.random() < p
                verdicts.append(
                    Verdict(unique_id=f"q{i:04d}", sample_index=s, status="correct" if ok else "wrong")
                )
    return tagged, verdicts
