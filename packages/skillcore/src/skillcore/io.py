"""Data IO: streaming JSONL, atomic writes, resumable appends, and ``hf://`` datasets."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel


class DatasetUnavailableError(ValueError):
    """An ``hf://`` dataset could not be reached (Hub access off or down) and is not in the local cache."""


class JsonlError(ValueError):
    """A JSONL line could not be parsed; names the file and the 1-based line number."""

    def __init__(self, path: str | Path, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path = str(path)
        self.line_no = line_no


@dataclass
class ReadStats:
    """Filled in while reading with ``skip_bad=True``."""

    read: int = 0
    skipped: int = 0


MAX_ROW_DEPTH = 64  # nesting of one record (a problem's fields and metadata); deeper is refused


def check_row_depth(row: Any, limit: int = MAX_ROW_DEPTH) -> None:
    """ValueError when a parsed record nests deeper than ``limit`` (walked without recursion): such a row
    would overflow the recursion of whatever reads it next (validation, logging, serialisation)."""
    stack: list[tuple[Any, int]] = [(row, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"nested deeper than {limit} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def read_jsonl(
    path: str | Path, *, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-blank line. A malformed line raises JsonlError, or is counted and skipped."""
    stats = stats if stats is not None else ReadStats()
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                try:
                    row = json.loads(line)
                except RecursionError:
                    raise ValueError(f"nested deeper than {MAX_ROW_DEPTH} levels") from None
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                if line.count("{") + line.count("[") > MAX_ROW_DEPTH:  # cheap: most rows stop here
                    check_row_depth(row)
            except ValueError as exc:
                if skip_bad:
                    stats.skipped += 1
                    continue
                raise JsonlError(path, line_no, str(exc)) from exc
            stats.read += 1
            yield row


def _to_json(row: Mapping[str, Any] | BaseModel) -> str:
    if isinstance(row, BaseModel):
        return row.model_dump_json()
    return json.dumps(row, ensure_ascii=False)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any] | BaseModel]) -> int:
    """Write all rows atomically (a temp file renamed into place); returns the row count."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(_to_json(row) + "\n")
            n += 1
    return n


class atomic_open:
    """Context manager: write to a temp file in the same folder, fsync, rename over the target."""

    def __init__(self, path: str | Path, mode: str = "w") -> None:
        self.path = Path(path)
        self.mode = mode
        self._fh: IO[Any] | None = None
        self._tmp = ""

    def __enter__(self) -> IO[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._fh = os.fdopen(fd, self.mode, encoding=None if "b" in self.mode else "utf-8")
        return self._fh

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._fh is not None
        try:
            if exc_type is None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self._fh.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


class JsonlAppender:
    """Append rows to a JSONL file durably, for resumable jobs.

    On open, a torn last line (a crash mid-write) is cut off, so every line in the file is whole.
    ``done_ids`` gives the values of ``key`` already present, so a job can skip finished work.
    """

    def __init__(self, path: str | Path, key: str = "unique_id", fsync_every: int = 64) -> None:
        self.path = Path(path)
        self.key = key
        self.fsync_every = fsync_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self.done_ids: set[Any] = set()
        if self.path.exists():
            for row in read_jsonl(self.path, skip_bad=True):
                if key in row:
                    self.done_ids.add(row[key])
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._pending = 0

    def _repair_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)

    def write(self, row: Mapping[str, Any] | BaseModel) -> None:
        self._fh.write(_to_json(row) + "\n")
        value = row.get(self.key) if isinstance(row, Mapping) else getattr(row, self.key, None)
        self.done_ids.add(value)
        self._pending += 1
        if self._pending >= self.fsync_every:
            self.flush()

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._pending = 0

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


HF_URI = re.compile(r"^hf://(?P<name>[^:]+?)(?::(?P<split>[\w.\-\[\]:%]+))?$")


def parse_hf_uri(uri: str) -> tuple[str, str]:
    """``hf://owner/name[:split]`` -> (name, split); the split defaults to ``train``."""
    match = HF_URI.match(uri)
    if not match:
        raise ValueError(f"not an hf:// dataset URI: {uri!r} (expected hf://owner/name[:split])")
    return match["name"], match["split"] or "train"


def iter_rows(source: str | Path, *, skip_bad: bool = False) -> Iterator[dict[str, Any]]:
    """Rows from a JSONL file or an ``hf://`` dataset (a hub id, or a local dataset folder)."""
    text = str(source)
    if text.startswith("hf://"):
        yield from load_hf_rows(text)
    else:
        yield from read_jsonl(text, skip_bad=skip_bad)


def load_hf_rows(uri: str) -> Iterator[dict[str, Any]]:
    """Load ``hf://owner/name[:split]`` with ``datasets.load_dataset``.

    On a networked machine ``owner/name`` is a Hugging Face Hub dataset. A local folder of data files
    (parquet, JSON lines, CSV) works the same way, which is how this is tested offline.
    """
    import datasets

    name, split = parse_hf_uri(uri)
    try:
        dataset = datasets.load_dataset(name, split=split)
    except ConnectionError as exc:  # offline (HF_HUB_OFFLINE) or the Hub unreachable, and not cached
        raise DatasetUnavailableError(f"pool {uri!r}: {exc}") from exc
    for row in dataset:
        yield dict(row)
