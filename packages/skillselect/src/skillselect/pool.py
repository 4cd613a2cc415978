"""The tagged pool a selection draws from: ids, chains, per-problem verdict counts, metadata.

A :class:`Pool` is columnar so that 100K-problem pools stay cheap. Build it from skillcore records
(:meth:`Pool.from_records`, verdicts joined by ``unique_id``), from plain arrays (:meth:`Pool.from_arrays`)
or from JSONL files (:meth:`Pool.load`, read column by column: :mod:`skillselect.loading`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skillcore.records import TaggedProblem, Verdict


class PoolError(ValueError):
    """The pool or its verdicts are malformed (duplicate ids, bad counts, unreadable rows)."""


@dataclass(frozen=True)
class ChainCodes:
    """The pool's chains as integers: each distinct chain once (as a tuple, in order of first appearance)
    and, per chain occurrence in pool order, its code and its problem's row. Built once with the pool, so
    that every selection resolves the few distinct chains against its tree instead of every occurrence."""

    distinct: list[tuple[Any, ...]]
    code: np.ndarray  # per chain occurrence: index into ``distinct``
    problem: np.ndarray  # per chain occurrence: the pool row (non-decreasing)

    @classmethod
    def encode(cls, chains: Sequence[Sequence[Any]]) -> ChainCodes:
        # C-level passes only (map over the flattened chains): no per-chain Python bytecode
        n = len(chains)
        lengths = np.fromiter(map(len, chains), dtype=np.int64, count=n)
        keys = list(map(tuple, itertools.chain.from_iterable(chains)))
        first: dict[tuple[Any, ...], int] = {}
        try:
            position = np.fromiter(
                map(first.setdefault, keys, itertools.count()), dtype=np.int64, count=len(keys)
            )
        except TypeError as exc:
            raise PoolError(f"chains must be lists of skill names (strings): {exc}") from exc
        dense = np.empty(len(keys), dtype=np.int64)
        dense[np.fromiter(first.values(), dtype=np.int64, count=len(first))] = np.arange(len(first))
        return cls(
            distinct=list(first),
            code=dense[position],
            problem=np.repeat(np.arange(n, dtype=np.int64), lengths),
        )


@dataclass
class Pool:
    """Columnar pool. ``attempts``/``correct`` are per-problem judged-sample counts (0 attempts: unjudged),
    or ``None`` when no verdicts are known. A pool is not changed after construction: its id index and
    its chain codes (:class:`ChainCodes`) are built from the fields once."""

    unique_ids: list[str]
    chains: list[list[list[str]]]
    attempts: np.ndarray | None = None
    correct: np.ndarray | None = None
    metadata: list[dict[str, Any]] | None = None
    records: Sequence[TaggedProblem] | None = None  # a list, or RowRecords (built on demand) from load()
    n_unmatched_verdicts: int = 0
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _codes: ChainCodes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.unique_ids)
        if len(self.chains) != n:
            raise PoolError(f"length mismatch: {n} unique_ids but {len(self.chains)} chain lists")
        for name in ("metadata", "records"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise PoolError(f"length mismatch: {n} unique_ids but {len(value)} {name}")
        if (self.attempts is None) != (self.correct is None):
            raise PoolError("give both attempts and correct, or neither")
        if self.attempts is not None and self.correct is not None:
            self.attempts = np.asarray(self.attempts, dtype=np.int64)
            self.correct = np.asarray(self.correct, dtype=np.int64)
            if self.attempts.shape != (n,) or self.correct.shape != (n,):
                raise PoolError(f"attempts and correct must be 1-D arrays of length {n}")
            if np.any(self.attempts < 0) or np.any(self.correct < 0) or np.any(self.correct > self.attempts):
                raise PoolError("attempts and correct must satisfy 0 <= correct <= attempts")
        self._index = _id_index(self.unique_ids)
        self._codes = ChainCodes.encode(self.chains)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        unique_ids: Sequence[str],
        chains: Sequence[Sequence[Sequence[str]]],
        attempts: Sequence[int] | np.ndarray | None = None,
        correct: Sequence[int] | np.ndarray | None = None,
        *,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Pool:
        return cls(
            unique_ids=list(unique_ids),
            chains=[[list(c) for c in cs] for cs in chains],
            attempts=None if attempts is None else np.asarray(attempts, dtype=np.int64),
            correct=None if correct is None else np.asarray(correct, dtype=np.int64),
            metadata=None if metadata is None else list(metadata),
        )

    @classmethod
    def from_records(cls, tagged: Iterable[TaggedProblem], verdicts: Iterable[Verdict] | None = None) -> Pool:
        """Join verdicts to problems by ``unique_id``; several samples per problem are counted.

        Verdicts for ids not in the pool are counted in ``n_unmatched_verdicts`` and otherwise ignored;
        a repeated ``(unique_id, sample_index)`` pair is an error.
        """
        records = list(tagged)
        pool = cls(
            unique_ids=[r.unique_id for r in records],
            chains=[r.chains for r in records],
            metadata=[r.metadata for r in records],
            records=records,
        )
        if verdicts is not None:
            pool._join_verdicts(verdicts)
        return pool

    def _count_verdicts(
        self, unique_ids: Sequence[str], sample_index: Sequence[int], correct: np.ndarray
    ) -> None:
        """``_join_verdicts`` on columns (what :meth:`load` reads): same counts, same errors."""
        if len(set(zip(unique_ids, sample_index, strict=True))) < len(unique_ids):
            seen: set[tuple[str, int]] = set()
            for key in zip(unique_ids, sample_index, strict=True):
                if key in seen:
                    raise PoolError(f"duplicate verdict for unique_id={key[0]!r} sample_index={key[1]}")
                seen.add(key)
        rows = np.fromiter(
            map(self._index.get, unique_ids, itertools.repeat(-1)), dtype=np.int64, count=len(unique_ids)
        )
        matched = rows >= 0
        self.attempts = np.bincount(rows[matched], minlength=self.n).astype(np.int64)
        self.correct = np.bincount(rows[matched & correct], minlength=self.n).astype(np.int64)
        self.n_unmatched_verdicts = int(rows.size - matched.sum())

    def _join_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        attempts = np.zeros(self.n, dtype=np.int64)
        correct = np.zeros(self.n, dtype=np.int64)
        seen: set[tuple[str, int]] = set()
        unmatched = 0
        for v in verdicts:
            key = (v.unique_id, v.sample_index)
            if key in seen:
                raise PoolError(
                    f"duplicate verdict for unique_id={v.unique_id!r} sample_index={v.sample_index}"
                )
            seen.add(key)
            i = self._index.get(v.unique_id)
            if i is None:
                unmatched += 1
                continue
            attempts[i] += 1
            correct[i] += int(v.correct)
        self.attempts, self.correct, self.n_unmatched_verdicts = attempts, correct, unmatched

    @classmethod
    def load(cls, pool_path: str | Path, verdicts_path: str | Path | None = None) -> Pool:
        """Read TaggedProblem rows (and optionally Verdict rows) from JSONL files or ``hf://`` datasets;
        errors name the file and row. The same pool as :meth:`from_records` on the validated records,
        read column by column (:mod:`skillselect.loading`); ``records`` builds a row's record on demand."""
        from skillselect.loading import paused_gc, read_tagged, read_verdicts

        with paused_gc():
            tagged = read_tagged(pool_path)
            verdicts = None if verdicts_path is None else read_verdicts(verdicts_path)
            pool = cls(
                unique_ids=tagged.unique_ids,
                chains=tagged.chains,
                metadata=tagged.metadata,
                records=tagged.records,
            )
            if verdicts is not None:
                pool._count_verdicts(verdicts.unique_ids, verdicts.sample_index, verdicts.correct)
        return pool

    # ------------------------------------------------------------------ queries
    @property
    def n(self) -> int:
        return len(self.unique_ids)

    def __len__(self) -> int:
        return self.n

    @property
    def has_verdicts(self) -> bool:
        return self.attempts is not None

    @property
    def chain_codes(self) -> ChainCodes:
        if self._codes is None:  # only when a subclass skipped __post_init__
            self._codes = ChainCodes.encode(self.chains)
        return self._codes

    def index_of(self, unique_id: str) -> int | None:
        return self._index.get(unique_id)

    def judged_mask(self) -> np.ndarray | None:
        return None if self.attempts is None else self.attempts > 0

    def correct_mask(self) -> np.ndarray | None:
        """A judged problem is student-correct when more than half of its attempts are correct."""
        if self.attempts is None or self.correct is None:
            return None
        return (self.attempts > 0) & (2 * self.correct > self.attempts)

    def row(self, i: int) -> dict[str, Any]:
        """The output row for problem ``i``: the full TaggedProblem when known, else id, chains, metadata."""
        if self.records is not None:
            return self.records[i].model_dump()
        out: dict[str, Any] = {"unique_id": self.unique_ids[i], "chains": self.chains[i]}
        if self.metadata is not None:
            out["metadata"] = self.metadata[i]
        return out


def _id_index(unique_ids: Sequence[Any]) -> dict[str, int]:
    """Row of each id; the ids must be distinct non-empty strings (checked in C-level passes; the first
    offender is looked up for the message)."""
    if not (set(map(type, unique_ids)) <= {str} and 0 not in map(len, unique_ids)):
        for i, uid in enumerate(unique_ids):
            if not isinstance(uid, str) or not uid:
                raise PoolError(f"row {i}: unique_id must be a non-empty string, got {uid!r}")
    index = dict(zip(unique_ids, range(len(unique_ids)), strict=True))
    if len(index) == len(unique_ids):
        return index
    seen: set[str] = set()
    duplicates = []
    for uid in unique_ids:
        if uid in seen:
            duplicates.append(uid)
        seen.add(uid)
    raise PoolError(
        f"{len(duplicates)} duplicate unique_id(s) in the pool, e.g. {duplicates[:5]}; "
        "ids must be unique (de-duplicate the pool first)"
    )


def read_ids(path: str | Path) -> list[str]:
    """Ids from a JSONL file (the ``unique_id`` of each row) or a text file (one id per line)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    ids: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            import json

            row = json.loads(line)
            if "unique_id" not in row:
                raise PoolError(f"{path}: a JSON row without unique_id: {line[:80]}")
            ids.append(str(row["unique_id"]))
        else:
            ids.append(line)
    return ids
