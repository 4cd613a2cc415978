"""Tree-loading settings: the duplicate-name policy and the EvalTree raw conversion (golden tests on a small
hand-written raw tree), and the shared command-line options."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import typer
from skillcore.cli_options import TreeDuplicatesOpt, TreeRawLevelsOpt, load_tree_or_exit
from skillcore.synthetic import with_duplicate_siblings
from skillcore.tree import RawConversion, SkillTree, SkillTreeError
from typer.testing import CliRunner

# A raw EvalTree output: groups of instance-level nodes (``subtrees`` one index), a group holding a list
# of indices, a node with an empty index list, and a node mixing a group and an instance.
RAW = {
    "description": "root",
    "subtrees": {
        "0": {
            "description": "Solving equations",
            "subtrees": {
                "0": {"description": "Isolating x in 2x + 3 = 7", "subtrees": 4},
                "1": {"description": "Dividing both sides by a coefficient", "subtrees": 9},
            },
        },
        "1": {"description": "Counting arrangements", "subtrees": [1, 2, 5]},
        "2": {"description": "Empty group", "subtrees": []},
        "3": {
            "description": "Geometry",
            "subtrees": [
                {
                    "description": "Triangle area",
                    "subtrees": {"0": {"description": "Half base times height", "subtrees": 7}},
                },
                {"description": "Angle chasing in one figure", "subtrees": 3},
            ],
        },
    },
}

INSTANCES = [
    "Solving equations->Isolating x in 2x + 3 = 7",
    "Solving equations->Dividing both sides by a coefficient",
    "Counting arrangements",
    "Empty group",
    "Geometry->Triangle area->Half base times height",
    "Geometry->Angle chasing in one figure",
]
GROUPS = ["Solving equations", "Counting arrangements", "Empty group", "Geometry->Triangle area"]


def test_raw_instances_keeps_instance_nodes_as_leaves_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="skillcore.tree"):
        tree = SkillTree.from_dict(RAW)
    assert [leaf.chain_text for leaf in tree.leaves()] == INSTANCES
    assert len(tree) - 1 == 9  # every raw node but the root
    assert tree.raw_conversion == RawConversion("instances", 4, 4, 0, 0)
    assert "4 instance-level node(s) kept as leaves" in caplog.text
    assert tree.node("Counting arrangements").description == "Counting arrangements"


def test_raw_groups_stops_at_groups_of_instances(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="skillcore.tree"):
        tree = SkillTree.from_dict(RAW, raw_levels="groups")
    # "Geometry" mixes a group and an instance: the instance goes, the group stays below it.
    assert [leaf.chain_text for leaf in tree.leaves()] == GROUPS
    assert len(tree) - 1 == 5
    assert tree.raw_conversion == RawConversion("groups", 4, 0, 4, 2)
    assert "4 instance-level node(s) dropped, 2 group(s) of instances became leaves" in caplog.text
    assert SkillTree.from_dict({"name": "r", "children": [{"name": "a"}]}).raw_conversion is None


def test_raw_child_without_description_and_bad_settings() -> None:
    missing = {
        "description": "root",
        "subtrees": {"0": {"subtrees": 3}, "1": {"description": "b", "subtrees": 2}},
    }
    with pytest.raises(SkillTreeError, match=r"<root> -> 0: node name must be a string"):
        SkillTree.from_dict(missing)
    only_instances = {"description": "root", "subtrees": {"0": {"description": "a", "subtrees": 1}}}
    with pytest.raises(SkillTreeError, match="at least one skill"):
        SkillTree.from_dict(only_instances, raw_levels="groups")
    with pytest.raises(ValueError, match="choose one of error, merge"):
        SkillTree.from_dict(RAW, duplicates="Merge")  # before: anything but "error" merged
    with pytest.raises(ValueError, match="choose one of instances, groups"):
        SkillTree.from_dict(RAW, raw_levels="leaves")


def test_duplicate_error_names_the_settings_and_merge_round_trips(tmp_path: Path) -> None:
    base = {
        "name": "r",
        "children": [{"name": "A", "children": [{"name": "x"}, {"name": "y"}, {"name": "z"}]}, {"name": "B"}],
    }
    dup = with_duplicate_siblings(base)
    assert [c["name"] for c in dup["children"]] == ["A", "A", "B"]
    with pytest.raises(SkillTreeError) as err:
        SkillTree.from_dict(dup)
    message = str(err.value)
    assert "--tree-duplicates merge" in message and "data.tree_duplicates=merge" in message
    assert "SKILLPROFILER_TREE_DUPLICATES=merge" in message and "<root> -> A" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = SkillTree.from_dict(dup, duplicates="merge")
    assert merged.content_hash() == SkillTree.from_dict(base).content_hash()
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(dup))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert SkillTree.load(path, duplicates="merge").n_leaves == 4


def flat(output: str) -> str:
    """CLI output without rich's error box and line wrapping."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_shared_cli_options(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.command()
    def show(
        tree: Path,
        tree_duplicates: TreeDuplicatesOpt = "error",
        tree_raw_levels: TreeRawLevelsOpt = "instances",
    ) -> None:
        typer.echo(load_tree_or_exit(tree, tree_duplicates, tree_raw_levels).n_leaves)

    (tmp_path / "raw.json").write_text(json.dumps(RAW))
    dup = with_duplicate_siblings(
        {"name": "r", "children": [{"name": "A", "children": [{"name": "x"}, {"name": "y"}]}]}
    )
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    runner = CliRunner()
    refused = runner.invoke(app, [str(tmp_path / "dup.json")])
    assert refused.exit_code == 2 and "--tree-duplicates merge" in flat(refused.output)
    merged = runner.invoke(app, [str(tmp_path / "dup.json"), "--tree-duplicates", "merge"])
    assert merged.exit_code == 0 and merged.output.strip() == "2"
    assert runner.invoke(app, [str(tmp_path / "raw.json")]).output.strip() == "6"
    groups = runner.invoke(app, [str(tmp_path / "raw.json"), "--tree-raw-levels", "groups"])
    assert groups.output.strip() == "4"
    bad = runner.invoke(app, [str(tmp_path / "dup.json"), "--tree-duplicates", "yes"])
    assert bad.exit_code == 2 and "choose one of error, merge" in flat(bad.output)
    bad_levels = runner.invoke(app, [str(tmp_path / "raw.json"), "--tree-raw-levels", "all"])
    assert bad_levels.exit_code == 2 and "choose one of instances, groups" in flat(bad_levels.output)
