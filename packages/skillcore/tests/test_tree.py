import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skillcore.synthetic import random_tree
from skillcore.tree import SkillTree, SkillTreeError, node_id

NESTED = {
    "name": "math",
    "children": [
        {
            "name": "Algebra",
            "description": "symbols",
            "children": [{"name": "Linear equations"}, {"name": "Quadratics", "description": "x^2"}],
        },
        {"name": "Geometry", "children": [{"name": "Triangles"}]},
    ],
}


def test_nested_tree_paths_leaves_and_lookup():
    tree = SkillTree.from_dict(NESTED)
    assert [leaf.path for leaf in tree.leaves()] == [
        ("Algebra", "Linear equations"),
        ("Algebra", "Quadratics"),
        ("Geometry", "Triangles"),
    ]
    assert tree.node("Algebra->Quadratics").description == "x^2"
    assert tree.node(["Geometry", "Triangles"]).is_leaf
    assert tree.find("Algebra->Nope") is None
    with pytest.raises(KeyError, match="Algebra->Nope"):
        tree.node("Algebra->Nope")
    assert tree.is_valid_chain(["Algebra", "Linear equations"])
    assert not tree.is_valid_chain(["Algebra"])
    assert tree.is_valid_chain(["Algebra"], to_leaf=False)
    stats = tree.depth_stats()
    assert (stats.n_nodes, stats.n_leaves, stats.max_depth) == (5, 3, 2)
    assert stats.leaves_per_depth == {2: 3}


def test_node_ids_depend_on_path_only():
    tree = SkillTree.from_dict(NESTED)
    reordered = json.loads(json.dumps(NESTED))
    reordered["children"].reverse()
    other = SkillTree.from_dict(reordered)
    assert tree.node("Geometry->Triangles").id == other.node("Geometry->Triangles").id
    assert tree.node("Geometry->Triangles").id == node_id(("Geometry", "Triangles"))
    assert tree.content_hash() != other.content_hash()  # child order is content


def test_evaltree_raw_format():
    raw = {
        "description": "All capabilities",
        "subtrees": {
            "0": {
                "description": "Solving equations by isolating the variable",
                "subtrees": {
                    "0": {"description": "Linear equations in one variable", "subtrees": [3, 9, 12]},
                    "1": {"description": "Systems of two equations", "subtrees": 4},
                },
            },
            "1": {"description": "Counting arrangements", "subtrees": [1]},
        },
    }
    tree = SkillTree.from_dict(raw)
    chains = [leaf.chain_text for leaf in tree.leaves()]
    assert chains == [
        "Solving equations by isolating the variable->Linear equations in one variable",
        "Solving equations by isolating the variable->Systems of two equations",
        "Counting arrangements",
    ]
    # A list of subtree objects is an internal node too.
    listed = {"description": "r", "subtrees": [{"description": "a", "subtrees": 0}]}
    assert [leaf.path for leaf in SkillTree.from_dict(listed).leaves()] == [("a",)]


def test_validation_lists_every_problem():
    bad = {
        "name": "r",
        "children": [
            {"name": ""},
            {"name": 7},
            {"name": "ok", "children": "not a list"},
        ],
    }
    with pytest.raises(SkillTreeError) as err:
        SkillTree.from_dict(bad)
    message = str(err.value)
    assert "empty node name" in message
    assert "must be a string, got int" in message
    assert "'children' must be a list" in message
    with pytest.raises(SkillTreeError, match="unrecognised"):
        SkillTree.from_dict({"foo": 1})
    with pytest.raises(SkillTreeError, match="JSON object"):
        SkillTree.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(SkillTreeError, match="'subtrees' must be"):
        SkillTree.from_dict({"description": "r", "subtrees": "x"})


def test_duplicate_siblings_error_lists_all_paths_or_merge():
    dup = {
        "name": "r",
        "children": [
            {"name": "A", "children": [{"name": "x"}, {"name": "x"}]},
            {"name": "A", "children": [{"name": "y"}]},
            {"name": "B", "children": [{"name": "z"}, {"name": "z"}]},
        ],
    }
    with pytest.raises(SkillTreeError) as err:
        SkillTree.from_dict(dup)
    assert "<root> -> A -> x" in str(err.value)
    assert "<root> -> A\n" in str(err.value) + "\n"
    assert "<root> -> B -> z" in str(err.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged = SkillTree.from_dict(dup, duplicates="merge")
    assert caught and "merging" in str(caught[0].message)
    assert [leaf.chain_text for leaf in merged.leaves()] == ["A->x", "A->y", "B->z"]


def test_truncate_and_round_trips(tmp_path):
    tree = SkillTree.from_dict(NESTED)
    cut = tree.truncate(1)
    assert [leaf.path for leaf in cut.leaves()] == [("Algebra",), ("Geometry",)]
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"tree{suffix}"
        tree.save(path)
        again = SkillTree.load(path)
        assert again.content_hash() == tree.content_hash()
    compact = json.loads(tree.to_json())
    assert "children" not in compact["children"][1]["children"][0]  # leaves carry no empty lists


def test_load_reports_bad_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(SkillTreeError, match=r"t\.json: not valid"):
        SkillTree.load(path)


def test_large_deep_tree():
    tree = random_tree(3000, max_depth=12, seed=1)
    assert tree.n_leaves == 3000
    assert tree.depth_stats().max_depth <= 12
    leaf = next(iter(tree.leaves()))
    assert tree.node(leaf.path) is leaf
    assert list(tree.ancestors(leaf.index))[-1] == leaf.index


names = st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=12).filter(
    lambda s: s.strip() and "->" not in s
)


@st.composite
def nested_trees(draw, depth=0):
    n_children = draw(st.integers(min_value=0 if depth else 1, max_value=3 if depth < 3 else 0))
    child_names = draw(st.lists(names, min_size=n_children, max_size=n_children, unique_by=str.strip))
    node = {"name": draw(names) if depth else "root"}
    if child_names:
        node["children"] = [dict(draw(nested_trees(depth + 1)), name=n) for n in child_names]
    return node


@settings(max_examples=60, deadline=None)
@given(nested_trees())
def test_round_trip_property(data):
    tree = SkillTree.from_dict(data)
    again = SkillTree.from_dict(json.loads(tree.to_json()))
    assert again.content_hash() == tree.content_hash()
    assert [leaf.path for leaf in again.leaves()] == [leaf.path for leaf in tree.leaves()]
    yaml_again = SkillTree.from_dict(__import__("yaml").safe_load(tree.to_yaml()))
    assert yaml_again.content_hash() == tree.content_hash()
    for leaf in tree.leaves():
        assert tree.is_valid_chain(leaf.path)


@pytest.mark.parametrize(("max_depth", "branching"), [(3, 6), (3, 4), (2, 7), (1, 40)])
def test_random_tree_meets_its_leaf_count_within_its_depth(max_depth: int, branching: int) -> None:
    """A shallow tree used to crash once every leaf sat at max_depth; it widens an inner node instead."""
    from skillcore.synthetic import random_tree

    for seed in range(10):
        leaves = list(random_tree(40, max_depth=max_depth, branching=branching, seed=seed).leaves())
        assert len(leaves) == 40 and max(len(leaf.path) for leaf in leaves) <= max_depth
        assert len({leaf.path for leaf in leaves}) == 40


def test_random_tree_refuses_an_impossible_leaf_count() -> None:
    from skillcore.synthetic import random_tree

    with pytest.raises(ValueError, match="at most 36 leaves"):
        random_tree(40, max_depth=2, branching=6)
