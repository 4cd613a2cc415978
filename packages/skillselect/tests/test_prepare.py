"""The vectorised preparation (chain codes, sparse aggregation) against the reference loop: same context,
same selection, on hand-made edge cases and on random pools."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skillcore.profile import SkillProfile
from skillcore.synthetic import random_chains, random_tree
from skillselect import Pool, PoolError, SelectConfig, SelectionError, select
from skillselect.core import build_context
from skillselect.pool import ChainCodes
from skillselect.testing import LEAVES, random_records, small_tree

STRATEGIES = ["skill", "skill-match", "random", "balanced"]


def assert_same_context(pool, tree, profile=None, **options):
    config = SelectConfig(**options)
    fast = build_context(pool, tree, config, profile)
    ref = build_context(pool, tree, config, profile, prepare="loop")
    assert fast.matrix.shape == ref.matrix.shape
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(fast.matrix, name), getattr(ref.matrix, name)), name
    assert fast.stats == ref.stats
    for name in (
        "leaf_nodes",
        "candidate",
        "leaf_problems",
        "leaf_attempts",
        "leaf_correct",
        "accuracy",
        "accuracy_used",
        "weight",
    ):
        assert np.array_equal(getattr(fast, name), getattr(ref, name), equal_nan=True), name
    assert fast.leaf_chains == ref.leaf_chains
    assert (fast.profile is None) == (ref.profile is None)
    if fast.profile is not None:
        for name in ("problems", "attempts", "correct"):
            a, b = getattr(fast.profile, name), getattr(ref.profile, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert fast.profile.prior == ref.profile.prior
        assert fast.profile.n_unmatched_chains == ref.profile.n_unmatched_chains
    return fast


def assert_same_selection(pool, tree, **options):
    a = select(pool, tree, **options)
    b = select(pool, tree, prepare="loop", **options)
    assert a.unique_ids == b.unique_ids
    assert a.rows.tolist() == b.rows.tolist()
    pd.testing.assert_frame_equal(a.report, b.report)
    timing = {"prepare_s", "strategy_s"}
    assert {k: v for k, v in a.summary.items() if k not in timing} == {
        k: v for k, v in b.summary.items() if k not in timing
    }


def edge_pool() -> Pool:
    """Unknown chains, a chain at an inner node, a chain deeper than the tree, repeated chains and leaves
    within a problem, problems without chains, an empty chain, and unjudged problems."""
    chains = [
        [LEAVES[0]],
        [LEAVES[0], LEAVES[1]],  # share 'Algebra' and 'Algebra->Linear'
        [LEAVES[2], LEAVES[2], LEAVES[3]],  # the same leaf twice
        [["Algebra"]],  # an inner node
        [["Algebra", "Nope"]],  # unknown
        [[*LEAVES[3], "deeper"]],  # deeper than the tree: unknown in the full tree, a prefix in a cut one
        [],
        [[]],  # an empty chain: names the root, unknown
        [LEAVES[5], ["Geometry"], LEAVES[4]],
        [LEAVES[1]],
        [LEAVES[4], ["Nowhere"]],
        [LEAVES[5]],
    ]
    n = len(chains)
    attempts = [3, 2, 4, 1, 2, 3, 0, 2, 4, 0, 3, 5]
    correct = [1, 2, 0, 1, 1, 2, 0, 1, 3, 0, 3, 1]
    return Pool.from_arrays([f"e{i}" for i in range(n)], chains, attempts, correct)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"max_depth": 1},
        {"max_depth": 2},
        {"skills": ["Algebra->Linear", "Counting"]},
        {"exclude_ids": ["e1", "e8", "missing"]},
        {"use_posterior": True, "prior": (2.0, 3.0)},
        {"smoothing": 0.5, "max_depth": 2, "exclude_ids": ["e0"]},
    ],
)
def test_edge_cases_give_the_same_context_and_selection(tree, options):
    pool = edge_pool()
    with pytest.raises(SelectionError) as fast_error:
        build_context(pool, tree, SelectConfig(**options))
    with pytest.raises(SelectionError) as ref_error:
        build_context(pool, tree, SelectConfig(**options), prepare="loop")
    assert str(fast_error.value) == str(ref_error.value)  # same unknown chains, same order
    ctx = assert_same_context(pool, tree, unknown_chains="skip", **options)
    assert ctx.stats["n_unknown_chains"] > 0
    for strategy in STRATEGIES:
        assert_same_selection(pool, tree, k=3, strategy=strategy, unknown_chains="skip", **options)


def test_given_profile_and_unjudged_pool(tree):
    tagged, verdicts = random_records(150, seed=4, judged_share=0.6)
    judged = Pool.from_records(tagged, verdicts)
    unjudged = Pool.from_records(tagged)
    profile = SkillProfile.from_records(tree, tagged, verdicts)
    assert_same_context(unjudged, tree)
    assert_same_context(unjudged, tree, profile=profile)
    assert_same_context(unjudged, tree, profile=profile, max_depth=1)
    assert_same_context(judged, tree, profile=profile, prior=(3.0, 1.0), use_posterior=True)
    for strategy in STRATEGIES:
        assert_same_selection(judged, tree, k=40, strategy=strategy, seed=3)
        assert_same_selection(judged, tree, k=40, strategy=strategy, correct_portion=0.4)
    assert_same_selection(unjudged, tree, k=40, strategy="random")


def test_the_built_profile_equals_skillcore_from_arrays(tree):
    tagged, verdicts = random_records(200, seed=9, judged_share=0.8)
    pool = Pool.from_records(tagged, verdicts)
    ctx = build_context(pool, tree, SelectConfig())
    judged = pool.attempts > 0
    expected = SkillProfile.from_arrays(
        tree,
        [c for c, j in zip(pool.chains, judged, strict=True) if j],
        pool.attempts[judged],
        pool.correct[judged],
    )
    assert ctx.profile is not None
    assert np.array_equal(ctx.profile.problems, expected.problems)
    assert np.array_equal(ctx.profile.attempts, expected.attempts)
    assert np.array_equal(ctx.profile.correct, expected.correct)


@pytest.mark.parametrize(("n_leaves", "max_depth"), [(40, 4), (300, 12)])
def test_synthetic_trees(n_leaves, max_depth):
    big = random_tree(n_leaves, max_depth=max_depth, seed=n_leaves)
    chains = random_chains(big, 4000, max_chains=4, seed=1)
    rng = np.random.default_rng(1)
    attempts = rng.integers(0, 4, size=len(chains))
    pool = Pool.from_arrays(
        [f"s{i}" for i in range(len(chains))], chains, attempts, rng.binomial(attempts, 0.5)
    )
    for options in ({}, {"max_depth": 2}, {"max_depth": 4, "exclude_ids": pool.unique_ids[:500]}):
        assert_same_context(pool, big, **options)
        for strategy in ("skill", "balanced", "random"):
            assert_same_selection(pool, big, k=300, strategy=strategy, **options)
    assert_same_selection(pool, big, k=100, strategy="skill-match")


NAMES = ["Algebra", "Linear", "One step", "Two step", "Quadratic", "Geometry", "Triangles", "Circles"]


@st.composite
def random_pools(draw):
    paths = [list(c) for c in LEAVES] + [["Algebra"], ["Algebra", "Linear"], ["Geometry"]]
    chain = st.one_of(
        st.sampled_from(paths),
        st.lists(st.sampled_from([*NAMES, "Counting", "Other"]), min_size=0, max_size=4),
    )
    n = draw(st.integers(0, 25))
    chains = draw(st.lists(st.lists(chain, max_size=4), min_size=n, max_size=n))
    attempts = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    correct = [draw(st.integers(0, a)) for a in attempts]
    options = {}
    if draw(st.booleans()):
        options["max_depth"] = draw(st.integers(1, 3))
    if n and draw(st.booleans()):
        options["exclude_ids"] = [f"h{i}" for i in draw(st.lists(st.integers(0, n - 1), max_size=5))]
    return Pool.from_arrays([f"h{i}" for i in range(n)], chains, attempts, correct), options


@settings(max_examples=150, deadline=None)
@given(random_pools())
def test_random_pools_give_the_same_context(inputs):
    pool, options = inputs
    tree = small_tree()
    assert_same_context(pool, tree, unknown_chains="skip", **options)
    assert_same_selection(pool, tree, k=3, allow_partial=True, unknown_chains="skip", **options)


def test_chain_codes():
    chains = [[["a", "b"], ["c"]], [], [["a", "b"]], [["c"], [], ["a"]]]
    codes = ChainCodes.encode(chains)
    assert codes.distinct == [("a", "b"), ("c",), (), ("a",)]
    assert codes.code.tolist() == [0, 1, 0, 1, 2, 3]
    assert codes.problem.tolist() == [0, 0, 2, 3, 3, 3]
    empty = ChainCodes.encode([])
    assert empty.distinct == [] and empty.code.size == 0 and empty.problem.size == 0
    pool = Pool.from_arrays(["x", "y"], chains[:2])
    assert pool.chain_codes.distinct == [("a", "b"), ("c",)]
    with pytest.raises(PoolError, match="lists of skill names"):
        Pool.from_arrays(["x"], [[[["unhashable"]]]])


def test_prepare_must_be_known(tree):
    with pytest.raises(ValueError, match="prepare must be"):
        build_context(edge_pool(), tree, SelectConfig(), prepare="fast")  # type: ignore[arg-type]
