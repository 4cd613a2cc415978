"""The skill-tree options every command line shares, spelled and documented once.

``--tree-duplicates error|merge``: sibling nodes with the same name are refused (the default, listing every
clash) or merged. ``--tree-raw-levels instances|groups``: for EvalTree's raw ``{description, subtrees}``
output, keep instance-level nodes as leaves (the default) or stop at their groups. Use::

    def command(tree: Path, tree_duplicates: TreeDuplicatesOpt = "error",
                tree_raw_levels: TreeRawLevelsOpt = "instances") -> None:
        skill_tree = load_tree_or_exit(tree, tree_duplicates, tree_raw_levels)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillcore.tree import (
    DUPLICATE_POLICIES,
    RAW_LEVELS,
    SkillTree,
    SkillTreeError,
    check_duplicates_policy,
    check_raw_levels,
)

TREE_DUPLICATES_FLAG = "--tree-duplicates"
TREE_RAW_LEVELS_FLAG = "--tree-raw-levels"
TREE_DUPLICATES_HELP = (
    "sibling skills with the same name: 'error' refuses the tree and lists them, 'merge' merges them"
)
TREE_RAW_LEVELS_HELP = (
    "EvalTree raw trees ({description, subtrees}): 'instances' keeps instance-level nodes as leaves, "
    "'groups' drops them so groups of instances are the leaves"
)


def _duplicates(value: str) -> str:
    try:
        return check_duplicates_policy(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(DUPLICATE_POLICIES)}") from exc


def _raw_levels(value: str) -> str:
    try:
        return check_raw_levels(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(RAW_LEVELS)}") from exc


TreeDuplicatesOpt = Annotated[
    str, typer.Option(TREE_DUPLICATES_FLAG, help=TREE_DUPLICATES_HELP, callback=_duplicates)
]
TreeRawLevelsOpt = Annotated[
    str, typer.Option(TREE_RAW_LEVELS_FLAG, help=TREE_RAW_LEVELS_HELP, callback=_raw_levels)
]


def load_tree_or_exit(
    path: str | Path, duplicates: str = "error", raw_levels: str = "instances", *, param_hint: str = "--tree"
) -> SkillTree:
    """``SkillTree.load`` for a command line: a malformed tree (duplicate siblings included, with the flag
    that merges them in the message) is a usage error (exit code 2), not a traceback."""
    try:
        return SkillTree.load(path, duplicates=duplicates, raw_levels=raw_levels)
    except (SkillTreeError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from exc
