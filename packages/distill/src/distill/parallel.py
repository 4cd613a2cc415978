"""Data-parallel answering on CPU: the shards of one rollout in separate processes.

A tiny student generates with so little arithmetic per token that a second torch thread buys little and
collapses as soon as another process takes a core; a second *process* with its own thread answers a second
share of the problems. ``answer_in_shards(job, n, ...)`` runs ``job(..., shard=(i, n))`` for every ``i`` in
its own spawned process (one torch thread each); every shard writes its own files into the same folder
(``distill.rollout``), so the caller's unsharded call afterwards finds every answer saved and only scores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def answer_in_shards(job: Callable[..., Any], workers: int, /, progress: bool = True, **kwargs: Any) -> None:
    """``job(**kwargs, shard=(i, workers), log_mlflow=False)`` for each shard ``i``, side by side; the
    first shard shows its progress bar. The first failure is raised once the other shards have stopped."""
    if workers < 2:
        raise ValueError(f"answer_in_shards needs 2 or more workers, got {workers}")
    if kwargs.get("engine", "hf") != "hf":
        raise ValueError(
            f"workers > 1 is for the hf engine on CPU; {kwargs['engine']} batches on its own (use one worker)"
        )
    context = multiprocessing.get_context("spawn")  # no forked copy of the parent's threads and locks
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [
            pool.submit(job, **kwargs, shard=(i, workers), log_mlflow=False, progress=progress and i == 0)
            for i in range(workers)
        ]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future in done and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
