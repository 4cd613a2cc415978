"""The one caching rule of every stage.

A stage's key is a hash of its name, its config and the digests of its inputs. A stage works in
``<workdir>/<stage>/<key>.partial/``; when it finishes, its ``manifest.json`` is written there last and the
folder is renamed into place as ``<workdir>/<stage>/<key>/``. So a folder under its final name is always a
finished one (reused as it is), and a ``.partial`` folder is work in progress that the stage resumes where
it can (tagging and profiling keep their finished rows, training its checkpoints). A changed setting or
input gives another key, so that stage and every stage that reads its outputs run anew, while the old
folders stay for a switch back.

One pipeline at a time per workdir: ``workdir_lock`` (``<workdir>/.lock``) is held for a whole call, so two
calls never write one stage's files at once; a second call is refused with who holds it. The kernel frees
the lock when its holder dies (kill -9 included), so the next call takes it over.

Digests: a file's SHA-256, a folder's SHA-256 over its files' names and digests, or any JSON value's
SHA-256 (a model fingerprint, a tree hash). A stage's outputs are digested when it finishes and kept in
its manifest, so the stages after it key on them without reading the files again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillcore.io import atomic_write_text
from skillcore.locks import ExclusiveLock, LockHeld

__all__ = ["LockHeld", "StageCache", "StageOutput", "StageResult", "workdir_lock"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTIAL = ".partial"  # suffix of a stage folder in progress
LOCK_FILE = ".lock"
KEY_LENGTH = 12
# Bump when a stage's outputs change meaning for the same config and inputs (new layout, a fixed bug).
RULE_VERSION = 1


def workdir_lock(workdir: str | Path) -> ExclusiveLock:
    """The lock one pipeline call holds on its workdir (``with workdir_lock(w):``; ``LockHeld`` when another
    live process holds it)."""
    return ExclusiveLock(Path(workdir) / LOCK_FILE)


def digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def digest_path(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder's relative file names and their digests."""
    target = Path(path)
    if target.is_dir():
        parts = [
            [str(p.relative_to(target)), digest_path(p)] for p in sorted(target.rglob("*")) if p.is_file()
        ]
        return digest_json(parts)
    sha = hashlib.sha256()
    with open(target, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def stage_key(stage: str, config: Any, inputs: Mapping[str, str]) -> str:
    return digest_json({"rule": RULE_VERSION, "stage": stage, "config": config, "inputs": dict(inputs)})[
        :KEY_LENGTH
    ]


@dataclass
class StageResult:
    """A finished stage: where its outputs are, their digests, and what the stage reported."""

    stage: str
    key: str
    dir: Path
    outputs: dict[str, str]  # name -> path relative to dir
    digests: dict[str, str]  # name -> digest
    info: dict[str, Any] = field(default_factory=dict)  # figures the stage reported (run id, scores, ...)
    reused: bool = False

    def path(self, name: str) -> Path:
        return self.dir / self.outputs[name]

    def digest(self, name: str) -> str:
        return self.digests[name]


@dataclass
class StageOutput:
    """What a stage function returns: its output files (relative to its folder) and figures to keep."""

    outputs: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    # outputs identified by the stage key instead of their bytes (a trained model: hashing 16 GB of weights
    # says no more than the key of the settings and inputs that produced them)
    keyed: set[str] = field(default_factory=set)


class StageCache:
    """Runs stages under ``workdir`` by the caching rule above."""

    def __init__(self, workdir: str | Path, *, on_event: Callable[[str, StageResult], None] | None = None):
        self.workdir = Path(workdir)
        self.on_event = on_event

    def folder(self, stage: str, key: str, label: str | None = None) -> Path:
        return self.workdir / stage / (f"{label}-{key}" if label else key)

    def lookup(
        self, stage: str, config: Any, inputs: Mapping[str, str], *, label: str | None = None
    ) -> StageResult | None:
        """The finished result for this config and these inputs, or None."""
        key = stage_key(stage, config, inputs)
        manifest = self.folder(stage, key, label) / MANIFEST
        if not manifest.is_file():
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return StageResult(
            stage, key, manifest.parent, data["outputs"], data["digests"], data.get("info", {}), reused=True
        )

    def run(
        self,
        stage: str,
        config: Any,
        inputs: Mapping[str, str],
        fn: Callable[[Path, str], StageOutput],
        *,
        label: str | None = None,
    ) -> StageResult:
        """Reuse the finished folder of (stage, config, inputs), or run ``fn(work, key)`` in its ``.partial``
        work folder (which resumes what it finds there), write the manifest and rename the folder into place. ``label`` prefixes the folder name (``skill-<key>``)."""
        found = self.lookup(stage, config, inputs, label=label)
        if found is not None:
            log.info("%s: reusing %s (finished earlier with the same config and inputs)", stage, found.dir)
            if self.on_event:
                self.on_event("reused", found)
            return found
        key = stage_key(stage, config, inputs)
        folder = self.folder(stage, key, label)
        work = folder.with_name(folder.name + PARTIAL)
        if (work / MANIFEST).is_file():  # finished, but stopped before its rename: finish the rename
            return self._move_into_place(work, folder, stage, config, inputs, label)
        if folder.exists() and not work.exists():  # unfinished work from before the .partial folders
            folder.rename(work)
        resuming = work.exists() and any(work.iterdir())
        work.mkdir(parents=True, exist_ok=True)
        if resuming:
            log.info("%s: resuming the unfinished work in %s", stage, work)
        start = time.perf_counter()
        produced = fn(work, key)
        digests = {
            name: f"key:{stage}/{key}" if name in produced.keyed else digest_path(work / rel)
            for name, rel in produced.outputs.items()
        }
        manifest = {
            "stage": stage,
            "key": key,
            "label": label,
            "config": config,
            "inputs": dict(inputs),
            "outputs": produced.outputs,
            "digests": digests,
            "info": produced.info,
            "seconds": round(time.perf_counter() - start, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=1, default=str))
        self._move_into_place(work, folder, stage, config, inputs, label)
        result = StageResult(stage, key, folder, produced.outputs, digests, produced.info)
        if self.on_event:
            self.on_event("finished", result)
        return result

    def _move_into_place(
        self, work: Path, folder: Path, stage: str, config: Any, inputs: Mapping[str, str], label: str | None
    ) -> StageResult:
        """Rename a finished work folder (its manifest written) to its final name."""
        if folder.exists():  # an unfinished folder under the final name: never a finished one
            shutil.rmtree(folder)
        work.rename(folder)
        found = self.lookup(stage, config, inputs, label=label)
        assert found is not None, f"{folder} holds no manifest after its rename"
        found.reused = False
        return found
