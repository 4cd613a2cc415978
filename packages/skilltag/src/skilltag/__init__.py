"""skilltag: attribute problems to skill chains (attribution engine, backends, SQLite cache, quality).

The tagging core, a library: the gRPC service ``skilltagger`` (services/tagger) wraps it, and the
pipeline runs it in-process::

    engine = TaggingEngine(tree, EmbeddingBackend(exemplars=...), TagCache("tags.sqlite"))
    results = engine.tag(problems)

or from plain settings (``skilltag.factory``)::

    engine = build_engine(EngineSettings(tree="tree.json", cache="tags.sqlite", exemplars="labelled.jsonl"))

``tag_records(records, tagger)`` gives skillcore TaggedProblems from anything with a ``tag`` method of
the ``Tagger`` protocol: an engine, or the service's ``TaggerClient``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from skillcore import PoolProblem, TaggedProblem, map_record

from skilltag.cache import TagCache
from skilltag.engine import (
    Backend,
    BackendUnavailable,
    Choice,
    DeadlineExceeded,
    NodeQuery,
    ProblemInput,
    TaggingEngine,
    TaggingError,
    TagResult,
    tagged_problem,
)


class Tagger(Protocol):
    def tag(self, problems: Sequence[Any]) -> list[TagResult]: ...


def tag_records(
    records: Iterable[PoolProblem | Mapping[str, Any]], tagger: Tagger, *, batch_size: int = 256
) -> Iterator[TaggedProblem]:
    """TaggedProblems for ``records`` using an engine or a TaggerClient, ``batch_size`` at a time."""
    batch: list[PoolProblem] = []

    def flush() -> Iterator[TaggedProblem]:
        for record, result in zip(batch, tagger.tag(batch), strict=True):
            yield tagged_problem(record, result)
        batch.clear()

    for raw in records:
        batch.append(raw if isinstance(raw, PoolProblem) else map_record(raw, require_answer=False))
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


__all__ = [
    "Backend",
    "BackendUnavailable",
    "Choice",
    "DeadlineExceeded",
    "NodeQuery",
    "ProblemInput",
    "TagCache",
    "TagResult",
    "Tagger",
    "TaggingEngine",
    "TaggingError",
    "tag_records",
    "tagged_problem",
]
