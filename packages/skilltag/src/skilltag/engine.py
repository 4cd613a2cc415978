"""The attribution engine: a top-down walk of the skill tree, batched level by level across problems.

At each level every (problem, internal node) pair still open goes to the backend in one call, so a
backend sees large batches (one embedding matrix product, or many concurrent chat requests). The backend
picks the children that apply; the walk descends into each pick until it reaches leaves. A problem's
chains come back best first (by ``path_rank``: the weakest node score on the path, then the mean; tree
order among equals and for backends without scores). Results are cached by (problem text hash, tree
hash, backend configuration hash).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from skillcore import PoolProblem, SkillTree, TaggedProblem

from skilltag.cache import TagCache

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


class TaggingError(RuntimeError):
    """Base class of engine errors."""


class BackendUnavailable(TaggingError):
    """The backend could not answer (endpoint down, retries exhausted). The request may be retried."""


class DeadlineExceeded(TaggingError):
    """The caller's deadline passed before the walk finished."""


@dataclass(frozen=True)
class ProblemInput:
    """What the engine needs of a problem: an id, the question and (optionally) the solution."""

    id: str
    question: str
    solution: str = ""

    @classmethod
    def from_record(cls, record: PoolProblem | Mapping[str, Any]) -> ProblemInput:
        if isinstance(record, PoolProblem):
            return cls(record.unique_id, record.question, record.solution)
        return cls(str(record["unique_id"]), str(record["question"]), str(record.get("solution") or ""))

    def text_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.question.encode("utf-8"))
        digest.update(b"\x1e")
        digest.update(self.solution.encode("utf-8"))
        return digest.hexdigest()


def solution_summary(solution: str, max_chars: int) -> str:
    """A short summary of a teacher trace: the text after the reasoning block, else the reasoning's start."""
    if max_chars <= 0 or not solution:
        return ""
    visible = _THINK.sub(" ", solution).replace("<think>", " ").replace("</think>", " ").strip()
    if not visible:
        inner = solution.split("<think>", 1)[-1].split("</think>", 1)[0]
        visible = inner.strip()
    visible = " ".join(visible.split())
    return visible[:max_chars]


SOLUTION_MARK = "\nSolution: "


def problem_text(problem: ProblemInput, summary_chars: int) -> str:
    summary = solution_summary(problem.solution, summary_chars)
    question = " ".join(problem.question.split())
    return f"{question}{SOLUTION_MARK}{summary}" if summary else question


@dataclass(frozen=True)
class NodeQuery:
    """Ask the backend which children of ``node`` (a preorder index) problem ``problem`` needs."""

    problem: int
    node: int


@dataclass(frozen=True)
class Choice:
    child: int  # preorder index of a child of the queried node
    score: float | None = None


@runtime_checkable
class Backend(Protocol):
    """A way of choosing children.

    ``bind`` is called once per tree, ``start`` once per walk with the problem texts (a backend may embed
    them there), and ``choose`` once per level with every open (problem, node) pair.
    """

    name: str

    def config(self) -> dict[str, Any]:
        """Everything that changes the backend's answers (hashed into the cache key)."""
        ...

    def bind(self, tree: SkillTree) -> None: ...

    def start(self, texts: Sequence[str]) -> Any: ...

    def choose(self, state: Any, queries: Sequence[NodeQuery], deadline: float | None) -> list[list[Choice]]:
        """For each query, the chosen children of ``query.node`` for problem ``query.problem``."""
        ...


@dataclass(frozen=True)
class TagResult:
    id: str
    chains: list[list[str]]
    scores: list[list[float]] | None  # one score per chain node, None when the backend has no scores
    backend: str
    backend_config_hash: str
    tree_hash: str
    from_cache: bool


def tagged_problem(record: PoolProblem | Mapping[str, Any], result: TagResult) -> TaggedProblem:
    """The record as a skillcore TaggedProblem carrying the result's chains (scores go to metadata)."""
    base = record.model_dump() if isinstance(record, PoolProblem) else dict(record)
    base.pop("chains", None)
    metadata = dict(base.pop("metadata", None) or {})
    metadata["tagger"] = {
        "backend": result.backend,
        "backend_config_hash": result.backend_config_hash,
        "tree_hash": result.tree_hash,
    }
    if result.scores is not None:
        metadata["tagger"]["scores"] = result.scores
    return TaggedProblem(**base, metadata=metadata, chains=result.chains)


@dataclass
class EngineStats:
    problems: int = 0
    cache_hits: int = 0
    tagged: int = 0
    backend_calls: int = 0
    node_queries: int = 0
    untagged: int = 0  # problems for which the walk found no leaf
    extra: dict[str, int] = field(default_factory=dict)


def config_hash(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class TaggingEngine:
    """Tag problems against one tree with one backend, optionally through a persistent cache.

    ``max_paths`` bounds the open paths (and so the chains) per problem; when a level would exceed it,
    the highest-scoring paths are kept. Chains (and their scores) are returned best first.
    """

    def __init__(
        self,
        tree: SkillTree,
        backend: Backend,
        cache: TagCache | None = None,
        *,
        summary_chars: int = 400,
        max_paths: int = 8,
    ) -> None:
        if max_paths < 1:
            raise ValueError("max_paths must be at least 1")
        self.tree = tree
        self.backend = backend
        self.cache = cache
        self.summary_chars = summary_chars
        self.max_paths = max_paths
        self.tree_hash = tree.content_hash()
        backend.bind(tree)
        self.config = {
            "backend": backend.name,
            "backend_config": backend.config(),
            "summary_chars": summary_chars,
            "max_paths": max_paths,
        }
        self.backend_config_hash = config_hash(self.config)
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()

    # ------------------------------------------------------------------ public API
    def lookup(self, problems: Sequence[ProblemInput | PoolProblem]) -> list[TagResult] | None:
        """The results when every problem is in the tag cache (no walk: one indexed query), else None."""
        if self.cache is None:
            return None
        items = [p if isinstance(p, ProblemInput) else ProblemInput.from_record(p) for p in problems]
        keys = [self._cache_key(p) for p in items]
        cached = self.cache.get_many(keys)
        if any(key not in cached for key in keys):
            return None
        with self._stats_lock:
            self.stats.problems += len(items)
            self.stats.cache_hits += len(items)
        return [
            self._result(item, *cached[key], from_cache=True) for key, item in zip(keys, items, strict=True)
        ]

    def _result(
        self,
        item: ProblemInput,
        chains: list[list[str]],
        scores: list[list[float]] | None,
        *,
        from_cache: bool,
    ) -> TagResult:
        return TagResult(
            id=item.id,
            chains=chains,
            scores=scores,
            backend=self.backend.name,
            backend_config_hash=self.backend_config_hash,
            tree_hash=self.tree_hash,
            from_cache=from_cache,
        )

    def tag(
        self,
        problems: Sequence[ProblemInput | PoolProblem],
        *,
        skip_cache: bool = False,
        deadline: float | None = None,
    ) -> list[TagResult]:
        """Tag a batch; results come back in input order. ``deadline`` is a ``time.monotonic()`` value."""
        items = [p if isinstance(p, ProblemInput) else ProblemInput.from_record(p) for p in problems]
        keys = [self._cache_key(p) for p in items]
        cached: dict[str, tuple[list[list[str]], list[list[float]] | None]] = {}
        if self.cache is not None and not skip_cache:
            cached = self.cache.get_many(keys)
        # one walk per distinct uncached text
        todo: dict[str, ProblemInput] = {}
        for key, item in zip(keys, items, strict=True):
            if key not in cached and key not in todo:
                todo[key] = item
        fresh: dict[str, tuple[list[list[str]], list[list[float]] | None]] = {}
        if todo:
            walked = self._walk(list(todo.values()), deadline)
            fresh = dict(zip(todo.keys(), walked, strict=True))
            if self.cache is not None:  # an untagged problem is not cached: a model that failed to
                # answer (or a deadline) is asked again next time; the embedding walk always tags something
                self.cache.put_many(
                    (k, self.tree_hash, self.backend_config_hash, ch, sc)
                    for k, (ch, sc) in fresh.items()
                    if ch
                )
        out = []
        for key, item in zip(keys, items, strict=True):
            from_cache = key in cached
            chains, scores = cached[key] if from_cache else fresh[key]
            out.append(self._result(item, chains, scores, from_cache=from_cache))
        with self._stats_lock:
            self.stats.problems += len(items)
            self.stats.cache_hits += sum(r.from_cache for r in out)
            self.stats.tagged += len(todo)
            self.stats.untagged += sum(1 for ch, _ in fresh.values() if not ch)
        return out

    def tag_iter(
        self,
        problems: Iterable[ProblemInput | PoolProblem],
        *,
        batch_size: int = 64,
        skip_cache: bool = False,
    ) -> Iterator[TagResult]:
        """Tag a stream of problems in batches, yielding results in input order."""
        batch: list[ProblemInput | PoolProblem] = []
        for problem in problems:
            batch.append(problem)
            if len(batch) >= batch_size:
                yield from self.tag(batch, skip_cache=skip_cache)
                batch = []
        if batch:
            yield from self.tag(batch, skip_cache=skip_cache)

    def describe(self) -> dict[str, Any]:
        return {"tree_hash": self.tree_hash, "backend_config_hash": self.backend_config_hash, **self.config}

    # ------------------------------------------------------------------ internals
    def _cache_key(self, problem: ProblemInput) -> str:
        raw = f"{problem.text_hash()}|{self.tree_hash}|{self.backend_config_hash}"
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def _walk(
        self, problems: Sequence[ProblemInput], deadline: float | None
    ) -> list[tuple[list[list[str]], list[list[float]] | None]]:
        tree = self.tree
        texts = [problem_text(p, self.summary_chars) for p in problems]
        # open paths: (problem, node, scores along the path)
        frontier: list[tuple[int, int, tuple[float | None, ...]]] = [(i, 0, ()) for i in range(len(problems))]
        found: list[list[tuple[int, tuple[float | None, ...]]]] = [[] for _ in problems]
        children_of = [{c.index for c in node.children} for node in tree.nodes]
        state = self.backend.start(texts)
        while frontier:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("the deadline passed while walking the skill tree")
            queries = [NodeQuery(p, node) for p, node, _ in frontier]
            answers = self.backend.choose(state, queries, deadline)
            if len(answers) != len(queries):
                raise TaggingError(f"backend answered {len(answers)} of {len(queries)} queries")
            with self._stats_lock:
                self.stats.backend_calls += 1
                self.stats.node_queries += len(queries)
            expanded: dict[int, list[tuple[int, tuple[float | None, ...]]]] = {}
            for (p, node, path_scores), choices in zip(frontier, answers, strict=True):
                seen: set[int] = set()
                for choice in choices:
                    if choice.child not in children_of[node] or choice.child in seen:
                        continue  # backends only name children; ignore anything else
                    seen.add(choice.child)
                    expanded.setdefault(p, []).append((choice.child, (*path_scores, choice.score)))
            frontier = []
            for p, paths in expanded.items():
                room = self.max_paths - len(found[p])
                if len(paths) > room:
                    paths = sorted(paths, key=lambda item: _neg_rank(item[1]))[: max(room, 0)]
                for child, path_scores in paths:
                    if tree.nodes[child].is_leaf:
                        found[p].append((child, path_scores))
                    else:
                        frontier.append((p, child, path_scores))
        out: list[tuple[list[list[str]], list[list[float]] | None]] = []
        for leaves in found:
            # best first (ties, and backends without scores: tree order)
            leaves.sort(key=lambda item: (_neg_rank(item[1]), item[0]))
            chains = [list(tree.nodes[leaf].path) for leaf, _ in leaves]
            has_scores = bool(leaves) and all(s is not None for _, sc in leaves for s in sc)
            scores = [[float(s) for s in sc if s is not None] for _, sc in leaves] if has_scores else None
            out.append((chains, scores))
        return out


def path_rank(scores: Sequence[float | None]) -> tuple[float, float]:
    """How good a path is: its weakest score, then its mean score (higher is better; no scores: lowest)."""
    vals = [s for s in scores if s is not None]
    if not vals:
        return (-math.inf, -math.inf)
    return (min(vals), sum(vals) / len(vals))


def _neg_rank(scores: Sequence[float | None]) -> tuple[float, float]:
    low, mean = path_rank(scores)
    return (-low, -mean)
