"""Stop signals of this worker's profiling tasks.

A profiling task generates with a ``threading.Event`` that ``distill``'s rollout and engines watch: once
it is set, the chunk in generation is dropped within moments (the hf engine stops at the next token) and
the task ends, keeping every finished chunk for a resume (``profile_id``). Three things set it:
``PUT /profile/cancel?task_id=...``, the task time limit (``SKILLPROFILER_TASK_TIMEOUT_S``), and SIGTERM or
SIGINT to the worker (so a shutdown drains in seconds instead of waiting for the task to finish).

BentoML's development server does not cancel tasks itself (its ``/cancel`` answers 400 and lets the task
run); ``RequestGuardMiddleware`` answers ``/cancel`` from this registry instead. The registry is per worker
process: the service runs one worker (BentoML's default), which holds every task it started.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

log = logging.getLogger("skillprofiler")

CancelOutcome = Literal["stopping", "finished", "unknown"]


@dataclass
class _Task:
    stop: threading.Event = field(default_factory=threading.Event)
    state: Literal["submitted", "running", "finished"] = "submitted"
    profile_id: str | None = None
    reason: str | None = None  # why it was asked to stop (None: it was not)


class TaskStops:
    """Task id -> its stop event, state, profile id and stop reason. Thread-safe; finished tasks are
    remembered (the ``keep`` most recent) so a late cancel is answered "already finished"."""

    def __init__(self, keep: int = 10_000) -> None:
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep

    def submitted(self, task_id: str) -> None:
        """A task was stored (seen in the submit answer); it may be cancelled before it starts."""
        with self._lock:
            self._tasks.setdefault(task_id, _Task())
            self._trim()

    def start(self, task_id: str, profile_id: str) -> threading.Event:
        """The task runs now: its stop event (already set when it was cancelled before starting)."""
        with self._lock:
            task = self._tasks.setdefault(task_id, _Task())
            task.state, task.profile_id = "running", profile_id
            return task.stop

    def finish(self, task_id: str) -> None:
        with self._lock:
            if task_id in self._tasks:
                self._tasks[task_id].state = "finished"
                self._tasks.move_to_end(task_id)
            self._trim()

    def cancel(self, task_id: str, reason: str) -> tuple[CancelOutcome, str | None]:
        """Ask a task to stop: ("stopping", its profile id), ("finished", ...) or ("unknown", None)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return "unknown", None
            if task.state == "finished":
                return "finished", task.profile_id
            task.reason = task.reason or reason
            task.stop.set()
            return "stopping", task.profile_id

    def stop_all(self, reason: str) -> int:
        """Stop every task that has not finished (shutdown); how many were asked."""
        with self._lock:
            live = [t for t in self._tasks.values() if t.state != "finished"]
            for task in live:
                task.reason = task.reason or reason
                task.stop.set()
            return len(live)

    def reason(self, task_id: str) -> str | None:
        """Why the task was asked to stop (None: it was not, or it is unknown here)."""
        with self._lock:
            task = self._tasks.get(task_id)
            return task.reason if task is not None else None

    def _trim(self) -> None:
        finished = [k for k, t in self._tasks.items() if t.state == "finished"]
        for key in finished[: max(0, len(finished) - self._keep)]:
            del self._tasks[key]


TASKS = TaskStops()


def stop_tasks_on_exit_signals(tasks: TaskStops = TASKS) -> None:
    """Chain a handler in front of SIGTERM/SIGINT's (uvicorn's graceful exit) that first stops every
    running task, so the server's wait for its background tasks ends in seconds. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if getattr(previous, "stops_tasks", False):
            continue
        signal.signal(signum, _chained(tasks, previous))


def _chained(tasks: TaskStops, previous: Any) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        stopped = tasks.stop_all("stopped: the server is shutting down")
        if stopped:
            log.warning("%s: stopping %d profiling task(s)", signal.Signals(signum).name, stopped)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # nobody else handles it: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    handler.stops_tasks = True  # type: ignore[attr-defined]
    return handler
