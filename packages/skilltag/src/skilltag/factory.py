"""Build an engine from plain settings (shared by the CLI, the server entry point and the pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillcore import SkillTree, read_jsonl

from skilltag.cache import TagCache
from skilltag.engine import Backend, TaggingEngine

BACKENDS = ("embedding", "openai")


def load_tree(spec: str | Path, duplicates: str = "error", raw_levels: str = "instances") -> SkillTree:
    """A skill tree file (JSON/YAML, nested or EvalTree format); ``duplicates`` and ``raw_levels`` as in
    ``SkillTree.load`` (duplicate sibling names refused or merged; EvalTree instance nodes kept or not)."""
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"skill tree file not found: {path} (a JSON/YAML skill tree file is needed)")
    return SkillTree.load(path, duplicates=duplicates, raw_levels=raw_levels)


@dataclass
class EngineSettings:
    tree: str | Path  # a skill tree file (JSON/YAML), read by load_tree
    tree_duplicates: str = "error"  # 'error' or 'merge' duplicate sibling names
    tree_raw_levels: str = "instances"  # EvalTree raw format: 'instances' or 'groups' as leaves
    backend: str = "embedding"
    cache: str | None = None
    # embedding
    exemplars: str | None = None  # tagged JSONL; a few problems per leaf become exemplars
    per_leaf: int = 20
    embedding_options: dict[str, Any] = field(default_factory=dict)
    # openai
    openai_urls: Sequence[str] = ()
    openai_model: str = ""
    openai_options: dict[str, Any] = field(default_factory=dict)
    summary_chars: int = 400
    max_paths: int = 8


def make_backend(settings: EngineSettings) -> Backend:
    if settings.backend == "embedding":
        from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, exemplars_from_tagged

        exemplars = None
        if settings.exemplars:
            rows = [r for r in read_jsonl(settings.exemplars) if len(r.get("chains") or []) == 1]
            exemplars = exemplars_from_tagged(
                rows, per_leaf=settings.per_leaf, summary_chars=settings.summary_chars
            )
        return EmbeddingBackend(EmbeddingConfig(**settings.embedding_options), exemplars=exemplars)
    if settings.backend == "openai":
        from skilltag.backends.openai_chat import OpenAIBackend, OpenAIConfig

        if not settings.openai_urls or not settings.openai_model:
            raise ValueError("the openai backend needs --openai-url (one or more) and --openai-model")
        return OpenAIBackend(
            OpenAIConfig(
                base_urls=tuple(settings.openai_urls), model=settings.openai_model, **settings.openai_options
            )
        )
    raise ValueError(f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}")


def build_engine(settings: EngineSettings) -> TaggingEngine:
    tree = load_tree(settings.tree, settings.tree_duplicates, settings.tree_raw_levels)
    cache = TagCache(settings.cache) if settings.cache else None
    return TaggingEngine(
        tree,
        make_backend(settings),
        cache,
        summary_chars=settings.summary_chars,
        max_paths=settings.max_paths,
    )
