"""Fixtures for the service tests: the small hand-written tree, an engine with a cache, a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from skillcore import SkillTree
from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig
from skilltag.cache import TagCache
from skilltag.engine import TaggingEngine
from skilltag.testing import tree, tree_file
from skilltagger.testing import running_server

__all__ = ["tree", "tree_file"]  # shared fixtures


@pytest.fixture(scope="session")
def engine(tree: SkillTree, tmp_path_factory: pytest.TempPathFactory) -> TaggingEngine:
    cache = TagCache(tmp_path_factory.mktemp("cache") / "tags.sqlite")
    return TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=1)), cache)


@pytest.fixture(scope="module")
def server_address(engine: TaggingEngine) -> Iterator[str]:
    with running_server(engine, workers=8) as address:
        yield address
