"""skillworld: the offline world of skilldistill (skill tree, generated corpus, benchmarks, tiny student)."""

from skillworld.world import (
    POOL_MIX,
    SUITES,
    Mix,
    WorldProblem,
    generate_benchmarks,
    generate_mix,
    generate_pool,
    leaf_chains,
    leaf_names,
    side_of,
    world_tree,
)

__all__ = [
    "POOL_MIX",
    "SUITES",
    "Mix",
    "WorldProblem",
    "generate_benchmarks",
    "generate_mix",
    "generate_pool",
    "leaf_chains",
    "leaf_names",
    "side_of",
    "world_tree",
]
