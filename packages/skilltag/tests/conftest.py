"""Fixtures for the tagging core's tests: the small hand-written tree and its file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from skillcore import SkillTree
from skilltag.testing import SMALL_TREE, small_tree


@pytest.fixture(scope="session")
def tree() -> SkillTree:
    return small_tree()


@pytest.fixture(scope="session")
def tree_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tree") / "small_tree.json"
    path.write_text(json.dumps(SMALL_TREE))
    return path
