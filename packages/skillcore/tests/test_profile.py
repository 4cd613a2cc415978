import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skillcore.profile import ProfileError, SkillProfile
from skillcore.records import TaggedProblem, Verdict
from skillcore.synthetic import random_chains, random_tree
from skillcore.tree import SkillTree

TREE = SkillTree.from_dict(
    {
        "name": "r",
        "children": [
            {"name": "A", "children": [{"name": "a1"}, {"name": "a2"}]},
            {"name": "B", "children": [{"name": "b1"}]},
        ],
    }
)


def naive(tree, chains, attempts, correct):
    """Reference: loop over problems, count each reached node once per problem."""
    out = {}
    for ch, a, c in zip(chains, attempts, correct, strict=True):
        reached = {tuple(chain[:d]) for chain in ch for d in range(1, len(chain) + 1)}
        for path in reached:
            p, t, k = out.get(path, (0, 0, 0))
            out[path] = (p + 1, t + a, k + c)
    return out


def test_counts_each_problem_once_per_node():
    chains = [[["A", "a1"], ["A", "a2"]], [["B", "b1"]], [["A", "a1"]]]
    prof = SkillProfile.from_arrays(TREE, chains, attempts=[2, 1, 4], correct=[1, 0, 4])
    a = TREE.node("A").index
    assert (prof.problems[a], prof.attempts[a], prof.correct[a]) == (2, 6, 5)
    acc = prof.leaf_accuracy()
    assert acc == {"A->a1": 5 / 6, "A->a2": 0.5, "B->b1": 0.0}
    weakest = prof.weakest(2)
    assert list(weakest["chain"]) == ["B->b1", "A->a2"]


def test_tier_counts_bands_the_judged_leaves():
    tree = SkillTree.from_dict(
        {"name": "r", "children": [{"name": n} for n in ("m", "edge60", "w", "edge15", "mid", "f", "none")]}
    )
    # leaf accuracies 0.9, 0.6, 0.3, 0.15, 0.5, 0.1; "none" unjudged
    chains = [[[n]] for n in ("m", "edge60", "w", "edge15", "mid", "f")]
    prof = SkillProfile.from_arrays(tree, chains, attempts=[20] * 6, correct=[18, 12, 6, 3, 10, 2])
    assert prof.tier_counts() == {
        "leaves_judged": 6,
        "leaves_60_up": 2,
        "leaves_15_45": 2,
        "leaves_10_down": 1,
    }


def test_posterior_and_interval():
    prof = SkillProfile.from_arrays(TREE, [[["B", "b1"]]], [10], [0], prior=(1.0, 1.0))
    i = TREE.node("B->b1").index
    assert prof.posterior_mean[i] == pytest.approx(1 / 12)
    low, high = prof.credible_interval(0.9)
    assert 0 <= low[i] < prof.posterior_mean[i] < high[i] < 0.3
    j = TREE.node("A->a1").index  # no data: the prior's mean and a wide interval
    assert np.isnan(prof.accuracy[j]) and prof.posterior_mean[j] == 0.5
    assert high[j] - low[j] > 0.8


def test_records_join_and_unknown_chains():
    tagged = [
        TaggedProblem(unique_id="p1", question="q", expected_answer="1", chains=[["A", "a1"]]),
        TaggedProblem(unique_id="p2", question="q", expected_answer="1", chains=[["Z", "z"]]),
        TaggedProblem(unique_id="p3", question="q", expected_answer="1", chains=[["B", "b1"]]),
    ]
    verdicts = [
        Verdict(unique_id="p1", sample_index=0, status="correct"),
        Verdict(unique_id="p1", sample_index=1, status="no_answer"),
        Verdict(unique_id="p2", status="correct"),
    ]
    with pytest.raises(ProfileError, match="Z->z"):
        SkillProfile.from_records(TREE, tagged, verdicts)
    prof = SkillProfile.from_records(TREE, tagged, verdicts, unknown="skip")
    assert prof.n_unmatched_chains == 1
    i = TREE.node("A->a1").index
    assert (prof.attempts[i], prof.correct[i]) == (2, 1)
    assert prof.attempts[TREE.node("B->b1").index] == 0  # p3 was never judged


def test_bad_inputs():
    with pytest.raises(ProfileError, match="length mismatch"):
        SkillProfile.from_arrays(TREE, [[["A", "a1"]]], [1, 2], [0, 0])
    with pytest.raises(ProfileError, match="correct <= attempts"):
        SkillProfile.from_arrays(TREE, [[["A", "a1"]]], [1], [2])


def test_json_round_trip(tmp_path):
    tree = random_tree(200, seed=3)
    chains = random_chains(tree, 500, seed=3)
    rng = np.random.default_rng(0)
    att = rng.integers(1, 4, size=500)
    prof = SkillProfile.from_arrays(tree, chains, att, rng.binomial(att, 0.4))
    prof.save(tmp_path / "p.json")
    again = SkillProfile.load(tmp_path / "p.json", tree)
    for name in ("problems", "attempts", "correct"):
        assert np.array_equal(getattr(prof, name), getattr(again, name))
    with pytest.raises(ProfileError, match="different skill tree"):
        SkillProfile.load(tmp_path / "p.json", random_tree(200, seed=4))


def test_chains_deeper_than_a_truncated_tree_match_their_prefix():
    cut = TREE.truncate(1)
    prof = SkillProfile.from_arrays(cut, [[["A", "a1"]], [["A", "a2"]]], [1, 1], [1, 0])
    assert prof.leaf_accuracy() == {"A": 0.5, "B": pytest.approx(float("nan"), nan_ok=True)}


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=2, max_value=40), st.integers(min_value=0, max_value=60), st.integers(0, 10_000))
def test_matches_naive_aggregation(n_leaves, n_problems, seed):
    tree = random_tree(n_leaves, seed=seed, max_depth=5)
    chains = random_chains(tree, n_problems, seed=seed)
    rng = np.random.default_rng(seed)
    att = rng.integers(0, 4, size=n_problems)
    cor = rng.binomial(att, 0.5)
    prof = SkillProfile.from_arrays(tree, chains, att, cor)
    expected = naive(tree, chains, att, cor)
    for node in tree.nodes[1:]:
        got = (prof.problems[node.index], prof.attempts[node.index], prof.correct[node.index])
        assert got == expected.get(node.path, (0, 0, 0))
