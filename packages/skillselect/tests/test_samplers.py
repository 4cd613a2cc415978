import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from skillselect import greedy_match, naive_match, sample_by_leaf
from skillselect.samplers import interleave, side_schedule


def one_leaf_each(per_leaf: list[int]) -> sp.csr_matrix:
    cols = np.repeat(np.arange(len(per_leaf)), per_leaf)
    return sp.csr_matrix((np.ones(cols.size), (np.arange(cols.size), cols)), shape=(cols.size, len(per_leaf)))


def test_leaf_draw_frequencies_match_the_weights_chi_square():
    weights = np.array([10.0, 5.0, 2.0, 1.25, 1.0, 0.0])
    matrix = one_leaf_each([5000] * 6)
    result = sample_by_leaf(matrix, weights, 4000, np.random.default_rng(0))
    draws = result.draws_per_leaf
    assert draws[5] == 0  # a zero-weight leaf is never drawn
    expected = weights[:5] / weights.sum() * draws.sum()
    assert stats.chisquare(draws[:5], expected).pvalue > 1e-3
    p = weights[:5] / weights.sum()
    sigma = np.sqrt(draws.sum() * p * (1 - p))
    assert np.all(np.abs(draws[:5] - expected) < 4 * sigma)
    # every accepted row really has the leaf it was drawn through, and rows are distinct
    assert np.unique(result.rows).size == 4000
    assert np.all(matrix[result.rows, result.via_leaf] == 1)


def test_problem_is_uniform_within_its_leaf():
    matrix = one_leaf_each([5, 3])
    firsts = [
        int(sample_by_leaf(matrix, np.array([1.0, 0.0]), 1, np.random.default_rng(s)).rows[0])
        for s in range(2000)
    ]
    counts = np.bincount(firsts, minlength=8)
    assert counts[5:].sum() == 0
    assert stats.chisquare(counts[:5]).pvalue > 1e-3


def test_rejection_of_duplicates_gives_the_one_draw_at_a_time_distribution():
    # leaf A (weight 10) holds rows 0 and 1, leaf B (weight 1) holds rows 1 and 2. Per draw, row r is hit
    # with probability proportional to q = (5, 5.5, 0.5); accepted rows follow sampling without
    # replacement in proportion to q, whatever the batching does.
    matrix = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1]]))
    weights = np.array([10.0, 1.0])
    q = np.array([5.0, 5.5, 0.5])
    p_first = q / q.sum()
    p_two_has_2 = p_first[2] + p_first[0] * q[2] / (q[1] + q[2]) + p_first[1] * q[2] / (q[0] + q[2])
    n = 3000
    runs = [sample_by_leaf(matrix, weights, 2, np.random.default_rng(s)).rows for s in range(n)]
    first = np.bincount([int(r[0]) for r in runs], minlength=3)
    assert stats.chisquare(first, p_first * n).pvalue > 1e-3
    has_2 = sum(2 in r for r in runs)
    assert abs(has_2 - n * p_two_has_2) < 4 * np.sqrt(n * p_two_has_2 * (1 - p_two_has_2))


def test_sampler_exhausts_heavy_leaves_and_refuses_too_large_k():
    matrix = one_leaf_each([2, 50])
    result = sample_by_leaf(matrix, np.array([1000.0, 1.0]), 52, np.random.default_rng(1))
    assert sorted(result.rows.tolist()) == list(range(52))
    with pytest.raises(ValueError, match="exceeds"):
        sample_by_leaf(matrix, np.array([1000.0, 1.0]), 53, np.random.default_rng(1))
    with pytest.raises(ValueError, match="exceeds"):
        sample_by_leaf(matrix, np.array([1.0, 0.0]), 3, np.random.default_rng(1))


def test_side_schedule_gives_exact_portions():
    for portion in (0.0, 0.25, 1 / 3, 0.5, 0.9, 1.0):
        order = interleave(np.arange(100), 100 + np.arange(100), portion)
        for j in (1, 7, 40, 100):
            assert int((order[:j] < 100).sum()) == int(np.floor(portion * j + 0.5))
    assert side_schedule(0, 0, 1.0) and not side_schedule(0, 0, 0.0)


@st.composite
def match_inputs(draw):
    n = draw(st.integers(1, 12))
    s = draw(st.integers(1, 5))
    bits = draw(st.lists(st.lists(st.booleans(), min_size=s, max_size=s), min_size=n, max_size=n))
    if draw(st.booleans()):  # force duplicate leaf sets, a source of exact ties
        bits = [bits[i % max(1, n // 2)] for i in range(n)]
    if draw(st.booleans()):
        weights = draw(st.lists(st.integers(0, 3), min_size=s, max_size=s))
    else:
        weights = draw(st.lists(st.floats(0.0, 1000.0), min_size=s, max_size=s))
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() == 0:
        w[0] = 1.0
    k = draw(st.integers(0, n + 1))
    correct = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    portion = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.3, 0.5, 1.0])))
    return np.asarray(bits, dtype=np.int64), w / w.sum(), k, correct, portion


@settings(max_examples=250, deadline=None)
@given(match_inputs())
def test_fast_matching_equals_the_naive_objective(inputs):
    x, target, k, correct, portion = inputs
    fast = greedy_match(sp.csr_matrix(x), target, k, correct=correct, portion=portion)
    slow = naive_match(x, target, k, correct=correct, portion=portion)
    assert fast.tolist() == slow.tolist()


def test_matching_on_larger_random_inputs_equals_naive():
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = (rng.random((60, 8)) < 0.25).astype(np.int64)
        w = rng.random(8)
        target = w / w.sum()
        fast = greedy_match(sp.csr_matrix(x), target, 25)
        assert fast.tolist() == naive_match(x, target, 25).tolist()
        assert len(fast) == 25


def test_matching_follows_the_target():
    matrix = one_leaf_each([100, 100, 100])
    target = np.array([0.6, 0.3, 0.1])
    rows = greedy_match(matrix, target, 50)
    counts = np.bincount(np.asarray(matrix[rows].indices), minlength=3)
    assert counts.tolist() == [30, 15, 5]
    assert rows[:3].tolist() == [0, 100, 1]  # lowest index within a leaf; leaf order by objective
