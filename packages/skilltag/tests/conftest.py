"""Fixtures for the tagging core's tests: the small hand-written tree and its file (from skilltag.testing)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from skilltag.testing import tree, tree_file

__all__ = ["tree", "tree_file"]
