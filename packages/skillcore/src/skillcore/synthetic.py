"""Synthetic trees and tagged pools at public-corpus scale, for benchmarks and scale tests.

Shapes follow the public trees: EvalTree-like (long capability names, thousands of leaves, uneven depth)
or SkillMix-like (a shallow tree of ~100 leaves).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from skillcore.tree import SkillNode, SkillTree


def random_tree(n_leaves: int, *, branching: int = 6, max_depth: int = 12, seed: int = 0) -> SkillTree:
    """A random tree with exactly ``n_leaves`` leaves, built by splitting leaves until the count is met."""
    rng = np.random.default_rng(seed)
    root = SkillNode("root")
    counter = 0

    def new(depth: int) -> SkillNode:
        nonlocal counter
        counter += 1
        return SkillNode(f"Skill {counter} at depth {depth}: applying a method", f"description {counter}")

    if n_leaves > branching**max_depth:
        raise ValueError(
            f"a tree of depth {max_depth} with at most {branching} children per node has at most "
            f"{branching**max_depth} leaves, not {n_leaves}"
        )
    leaves: list[tuple[SkillNode, int]] = [(root, 0)]
    inner: list[tuple[SkillNode, int]] = []
    n = 1
    while n < n_leaves:
        splittable = [i for i, (_, d) in enumerate(leaves) if d < max_depth]
        if not splittable:  # every leaf is at max_depth: widen an inner node that has room instead
            room = [(nd, d) for nd, d in inner if len(nd.children) < branching]
            node, depth = room[int(rng.integers(len(room)))]
            node.children.append(new(depth + 1))
            leaves.append((node.children[-1], depth + 1))
            n += 1
            continue
        pick = int(
            rng.choice(splittable[: max(1, len(splittable) // 2)] if rng.random() < 0.3 else splittable)
        )
        node, depth = leaves.pop(pick)
        k = min(int(rng.integers(2, branching + 1)), n_leaves - n + 1)
        node.children = [new(depth + 1) for _ in range(k)]
        inner.append((node, depth))
        leaves.extend((c, depth + 1) for c in node.children)
        n += k - 1
    return SkillTree(root)


def random_chains(
    tree: SkillTree, n_problems: int, *, max_chains: int = 3, seed: int = 0
) -> list[list[list[str]]]:
    """1..max_chains leaf chains per problem, drawn with a skewed (Zipf-like) leaf popularity."""
    rng = np.random.default_rng(seed)
    leaves = tree.leaf_indices
    popularity = 1.0 / np.arange(1, leaves.size + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    counts = rng.integers(1, max_chains + 1, size=n_problems)
    picks = rng.choice(leaves, size=int(counts.sum()), p=popularity)
    paths = {int(i): list(tree.nodes[int(i)].path) for i in leaves}
    out, pos = [], 0
    for c in counts:
        out.append([paths[int(i)] for i in picks[pos : pos + c]])
        pos += c
    return out


def with_duplicate_siblings(data: dict[str, Any]) -> dict[str, Any]:
    """A nested tree dict whose depth-1 skills with two or more children are each split into two sibling
    nodes of the same name (first half and second half of the children): refused with the default
    duplicate-name policy, and merged back into ``data``'s tree by ``duplicates="merge"``."""
    children = []
    for child in data.get("children") or []:
        kids = child.get("children") or []
        if len(kids) >= 2:
            half = len(kids) // 2
            children.append({**child, "children": kids[:half]})
            children.append({**child, "children": kids[half:]})
        else:
            children.append(child)
    return {**data, "children": children}
