"""A persistent tag cache in SQLite (WAL mode, safe to share between a server and a bulk job).

Each row is keyed by sha256(problem text hash | tree hash | backend config hash) and holds the chains
and their scores as JSON. A row is committed before the caller sees the result, so a killed job loses
at most the batch in flight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

Chains = list[list[str]]
Scores = list[list[float]] | None

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tags (
    key TEXT PRIMARY KEY,
    tree_hash TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    chains TEXT NOT NULL,
    scores TEXT,
    created REAL NOT NULL
)
"""


class TagCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[Chains, Scores]]:
        out: dict[str, tuple[Chains, Scores]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, chains, scores FROM tags WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, chains, scores in rows:
                    out[key] = (json.loads(chains), json.loads(scores) if scores is not None else None)
        return out

    def put_many(self, items: Iterable[tuple[str, str, str, Chains, Scores]]) -> int:
        now = time.time()
        rows = [
            (key, tree_hash, cfg, json.dumps(chains), None if scores is None else json.dumps(scores), now)
            for key, tree_hash, cfg, chains, scores in items
        ]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.commit()
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM tags").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TagCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
