"""Inputs for tests: skill trees and pool rows that no parser may walk into a crash or a hang."""

from __future__ import annotations

import json
from pathlib import Path

SELF_REFERENCING_YAML = """\
# the root lists itself among its children, through a YAML anchor
--- &node
name: Algebra
children:
  - *node
"""


def deep_tree(levels: int) -> str:
    """A nested-format tree ``levels`` skills deep, as JSON text (written without recursion)."""
    return '{"name": "root", "children": [' * levels + '{"name": "leaf"}' + "]}" * levels


def hostile_trees(folder: str | Path) -> dict[str, Path]:
    """Write the hostile trees into ``folder``: ``self_reference`` (YAML anchor, the node contains itself)
    and ``deep`` (a JSON tree 1,000 levels deep). Returns name -> path."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cyclic = root / "self-reference.yaml"
    cyclic.write_text(SELF_REFERENCING_YAML, encoding="utf-8")
    deep = root / "deep.json"
    deep.write_text(deep_tree(1000), encoding="utf-8")
    return {"self_reference": cyclic, "deep": deep}


def deep_pool_row(levels: int = 3000) -> str:
    """A pool row (JSONL line) whose metadata nests ``levels`` deep."""
    head = json.dumps({"unique_id": "deep", "question": "1+1?", "expected_answer": "2"})[:-1]
    return head + ', "metadata": ' + '{"a": ' * levels + "1" + "}" * levels + "}"
