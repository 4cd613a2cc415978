"""Reading a tagged pool and its verdicts from files, column by column, as strictly as the records do.

:meth:`skillselect.Pool.load` reads each JSONL file whole, parses its lines with orjson in blocks of
``BLOCK_ROWS`` rows and checks every block column by column (C-level passes over each field: key sets, value
types, empty strings, verdict statuses) instead of building a pydantic model per row. A block that passes
holds exactly what :class:`~skillcore.records.TaggedProblem` / :class:`~skillcore.records.Verdict` would
accept and read. A block that does not (a bad line, a bad row, or a value that only the records' lax rules
accept, such as ``"sample_index": "1"``) is read again the old way, line by line with ``json`` and the
pydantic model, so every error is the one the per-row path raised, naming the file, the row (non-blank rows
counted from 1) or, for a line that is not a JSON object, the line; and what the model accepts is read as
the model reads it.

Only the ids, chains, metadata and verdict counts are kept as columns; the full rows stay as the file's
bytes, and :class:`RowRecords` turns a row into a ``TaggedProblem`` when it is asked for one (the K selected
rows, when they are written). ``hf://`` datasets come as parsed rows and go through the same checks.
"""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, get_args, overload

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError
from skillcore.io import JsonlError, iter_rows
from skillcore.records import TaggedProblem, Verdict, VerdictStatus

from skillselect.pool import PoolError

BLOCK_ROWS = 1024
_SCAN_BYTES = 1 << 22
_BIG = float(2**63)  # orjson reads an integer literal outside 64 bits as a float; json as an int
_NONE = type(None)

# The fields these checks know, with the types JSON gives that the model takes as they are. A model that
# gains or loses a field turns the column checks off (every block is then read the per-row way) until the
# checks below are brought along; tests/test_loading.py fails first.
_TAGGED_FIELDS = frozenset({"unique_id", "question", "solution", "expected_answer", "metadata", "chains"})
_TAGGED_REQUIRED = frozenset({"unique_id", "question", "expected_answer"})
_VERDICT_FIELDS = frozenset({"unique_id", "sample_index", "status", "extracted_answer", "expected_answer"})
_VERDICT_REQUIRED = frozenset({"unique_id", "status"})
_STATUSES = frozenset(get_args(VerdictStatus))
COLUMN_CHECKS = {
    "TaggedProblem": set(TaggedProblem.model_fields) == _TAGGED_FIELDS
    and {n for n, f in TaggedProblem.model_fields.items() if f.is_required()} == _TAGGED_REQUIRED,
    "Verdict": set(Verdict.model_fields) == _VERDICT_FIELDS
    and {n for n, f in Verdict.model_fields.items() if f.is_required()} == _VERDICT_REQUIRED,
}


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a pool is read: every row allocates containers that survive
    (chains, metadata), and the collections they set off took more time than parsing (JSON rows hold no
    reference cycles, so nothing is left for the collector to find)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ------------------------------------------------------------------------------------------ lines
@dataclass(frozen=True)
class _Lines:
    """The non-blank lines of a file as text-mode reading splits them (``\\n``, ``\\r\\n`` and ``\\r``
    end a line): byte offsets of each line's content, whether a line end followed, its 1-based number."""

    data: bytes
    starts: list[int]
    ends: list[int]
    ended: list[bool]
    numbers: list[int]


def _positions(buf: np.ndarray, byte: int) -> np.ndarray:
    parts = [np.flatnonzero(buf[i : i + _SCAN_BYTES] == byte) + i for i in range(0, buf.size, _SCAN_BYTES)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _split_lines(data: bytes) -> _Lines:
    buf = np.frombuffer(data, dtype=np.uint8)
    size = buf.size
    lf = _positions(buf, 10)
    if b"\r" in data:
        cr = _positions(buf, 13)
        after = np.minimum(cr + 1, max(size - 1, 0))
        lone = cr[(cr + 1 >= size) | (buf[after] != 10)]
        before = np.maximum(lf - 1, 0)
        lf_start = np.where((lf > 0) & (buf[before] == 13), lf - 1, lf)
        term_start = np.concatenate([lf_start, lone])
        term_end = np.concatenate([lf + 1, lone + 1])
        order = np.argsort(term_start, kind="stable")
        term_start, term_end = term_start[order], term_end[order]
    else:
        term_start, term_end = lf, lf + 1
    starts = np.concatenate([[0], term_end]).astype(np.int64)
    ends = np.concatenate([term_start, [size]]).astype(np.int64)
    ended = np.ones(starts.size, dtype=bool)
    ended[-1] = False  # what follows the last line end (empty when the file ends with one)
    numbers = np.arange(1, starts.size + 1, dtype=np.int64)
    keep = ends > starts  # empty lines are blank; lines of whitespace only are found when parsed
    return _Lines(
        data,
        starts[keep].tolist(),
        ends[keep].tolist(),
        ended[keep].tolist(),
        numbers[keep].tolist(),
    )


def _line_text(lines: _Lines, i: int) -> str:
    """Line ``i`` as the text-mode reader gave it (line end translated to ``\\n``)."""
    text = lines.data[lines.starts[i] : lines.ends[i]].decode("utf-8")
    return text + "\n" if lines.ended[i] else text


# ------------------------------------------------------------------------------------------ checks
def _column(rows: list[dict[str, Any]], name: str, everywhere: frozenset[str]) -> list[Any]:
    """The values of ``name`` in the rows that have it."""
    if name in everywhere:
        return list(map(itemgetter(name), rows))
    return [r[name] for r in rows if name in r]


def _types_within(values: Iterable[Any], allowed: set[type]) -> bool:
    return set(map(type, values)) <= allowed


def _no_empty(values: Iterable[Any]) -> bool:
    return 0 not in map(len, values)


def _read_alike(values: Iterable[Any]) -> bool:
    """False where orjson and json may read a value differently: a float that could be an integer literal
    outside 64 bits (json keeps the exact integer), looked for through nested objects and arrays."""
    values = list(values)
    types = set(map(type, values))
    if float in types and any(abs(v) >= _BIG for v in values if type(v) is float):
        return False
    if dict in types or list in types:
        inner = [v.values() if type(v) is dict else v for v in values if type(v) in (dict, list)]
        return _read_alike(itertools.chain.from_iterable(inner))
    return True


def _key_sets(rows: list[Any], required: frozenset[str], fields: frozenset[str]) -> frozenset[str] | None:
    """The keys every row has, or None when a row is not an object or lacks or adds a field."""
    if not rows:
        return fields
    if set(map(type, rows)) != {dict}:
        return None
    keysets = set(map(frozenset, rows))
    if not all(required <= keys <= fields for keys in keysets):
        return None
    return frozenset.intersection(*keysets)


def _tagged_ok(rows: list[Any]) -> bool:
    """True when every row is a TaggedProblem as the model would read it (values unchanged)."""
    everywhere = _key_sets(rows, _TAGGED_REQUIRED, _TAGGED_FIELDS)
    if everywhere is None:
        return False
    strings = (("unique_id", True), ("question", True), ("solution", False), ("expected_answer", False))
    for name, nonempty in strings:
        values = _column(rows, name, everywhere)
        if not _types_within(values, {str}) or (nonempty and not _no_empty(values)):
            return False
    metadata = _column(rows, "metadata", everywhere)
    keys = itertools.chain.from_iterable(metadata)
    if not _types_within(metadata, {dict}) or not _types_within(keys, {str}):
        return False
    if not _read_alike(itertools.chain.from_iterable(map(dict.values, metadata))):
        return False
    chains = _column(rows, "chains", everywhere)
    if not _types_within(chains, {list}):
        return False
    flat = list(itertools.chain.from_iterable(chains))
    if not _types_within(flat, {list}) or not _no_empty(flat):
        return False
    names = list(itertools.chain.from_iterable(flat))
    return _types_within(names, {str}) and _no_empty(names)


def _verdicts_ok(rows: list[Any]) -> bool:
    """True when every row is a Verdict as the model would read it (values unchanged)."""
    everywhere = _key_sets(rows, _VERDICT_REQUIRED, _VERDICT_FIELDS)
    if everywhere is None:
        return False
    if not _types_within(_column(rows, "unique_id", everywhere), {str}):
        return False
    index = _column(rows, "sample_index", everywhere)
    if not _types_within(index, {int}) or (index and min(index) < 0):
        return False
    status = _column(rows, "status", everywhere)
    if not _types_within(status, {str}) or not set(status) <= _STATUSES:
        return False
    return _types_within(_column(rows, "extracted_answer", everywhere), {str, _NONE}) and _types_within(
        _column(rows, "expected_answer", everywhere), {str}
    )


# ------------------------------------------------------------------------------------------ blocks
def _validate(model: type[BaseModel], row: Any, path: str | Path, n: int) -> BaseModel:
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PoolError(f"{path}: row {n}: not a {model.__name__}: {where}: {first['msg']}") from exc


@dataclass
class _Block:
    rows: list[dict[str, Any]]  # as the model reads them
    kept: list[int]  # which of the block's lines are rows (all but lines of whitespace only)


def _jsonl_blocks(
    path: str | Path, lines: _Lines, model: type[BaseModel], check: Callable[[list[Any]], bool]
) -> Iterator[_Block]:
    view = memoryview(lines.data)
    n_rows = 0
    for first in range(0, len(lines.starts), BLOCK_ROWS):
        span = range(first, min(first + BLOCK_ROWS, len(lines.starts)))
        try:
            rows = [orjson.loads(view[lines.starts[i] : lines.ends[i]]) for i in span]
        except orjson.JSONDecodeError:
            rows = None
        if rows is not None and COLUMN_CHECKS[model.__name__] and check(rows):
            n_rows += len(rows)
            yield _Block(rows, list(span))
            continue
        block = _Block([], [])
        for i in span:  # the per-row way: json, then the model, first error wins
            try:
                text = _line_text(lines, i)
                if not text.strip():
                    continue
                row = json.loads(text)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as exc:
                raise JsonlError(path, lines.numbers[i], str(exc)) from exc
            n_rows += 1
            block.rows.append(_validate(model, row, path, n_rows).model_dump())
            block.kept.append(i)
        yield block


def _dataset_blocks(
    path: str | Path, rows: list[dict[str, Any]], model: type[BaseModel], check: Callable[[list[Any]], bool]
) -> Iterator[_Block]:
    for first in range(0, len(rows), BLOCK_ROWS):
        part = rows[first : first + BLOCK_ROWS]
        span = list(range(first, first + len(part)))
        if COLUMN_CHECKS[model.__name__] and check(part):
            yield _Block(part, span)
        else:
            yield _Block(
                [_validate(model, r, path, i + 1).model_dump() for r, i in zip(part, span, strict=True)], span
            )


def _blocks(
    path: str | Path, model: type[BaseModel], check: Callable[[list[Any]], bool]
) -> tuple[Iterator[_Block], _Lines | list[dict[str, Any]]]:
    if str(path).startswith("hf://"):  # a dataset: parsed rows already
        rows = list(iter_rows(path))
        return _dataset_blocks(path, rows, model, check), rows
    lines = _split_lines(Path(path).read_bytes())
    return _jsonl_blocks(path, lines, model, check), lines


# ------------------------------------------------------------------------------------------ records
class RowRecords(Sequence[TaggedProblem]):
    """A loaded pool's rows as ``TaggedProblem`` records, each built when it is asked for (from the file's
    bytes, read with ``json`` as the per-row path read them, or from a dataset's row)."""

    def __init__(self, source: _Lines | list[dict[str, Any]], rows: Sequence[int]) -> None:
        self._source = source
        self._rows = rows  # line (or dataset row) of each pool row

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> TaggedProblem: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaggedProblem]: ...

    def __getitem__(self, index: int | slice) -> TaggedProblem | list[TaggedProblem]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        at = self._rows[index]
        if isinstance(self._source, list):
            return TaggedProblem.model_validate(self._source[at])
        return TaggedProblem.model_validate(json.loads(_line_text(self._source, at)))


@dataclass
class TaggedColumns:
    unique_ids: list[str]
    chains: list[list[list[str]]]
    metadata: list[dict[str, Any]]
    records: RowRecords


@dataclass
class VerdictColumns:
    unique_ids: list[str]
    sample_index: list[int]
    correct: np.ndarray  # bool per verdict


def _or_default(rows: list[dict[str, Any]], name: str, default: Callable[[], Any]) -> list[Any]:
    values = list(map(dict.get, rows, itertools.repeat(name)))
    if None in values:  # only when a row leaves the field out (the checks refuse an explicit null)
        return [default() if v is None else v for v in values]
    return values


def read_tagged(path: str | Path) -> TaggedColumns:
    """TaggedProblem rows from a JSONL file or an ``hf://`` dataset, as columns."""
    blocks, source = _blocks(path, TaggedProblem, _tagged_ok)
    ids: list[str] = []
    chains: list[list[list[str]]] = []
    metadata: list[dict[str, Any]] = []
    kept: list[int] = []
    for block in blocks:
        ids += map(itemgetter("unique_id"), block.rows)
        chains += _or_default(block.rows, "chains", list)
        metadata += _or_default(block.rows, "metadata", dict)
        kept += block.kept
    return TaggedColumns(ids, chains, metadata, RowRecords(source, kept))


def read_verdicts(path: str | Path) -> VerdictColumns:
    """Verdict rows from a JSONL file or an ``hf://`` dataset, as columns."""
    blocks, _ = _blocks(path, Verdict, _verdicts_ok)
    ids: list[str] = []
    index: list[int] = []
    correct: list[bool] = []
    for block in blocks:
        ids += map(itemgetter("unique_id"), block.rows)
        index += map(dict.get, block.rows, itertools.repeat("sample_index"), itertools.repeat(0))
        correct += map("correct".__eq__, map(itemgetter("status"), block.rows))
    return VerdictColumns(ids, index, np.array(correct, dtype=bool))
