"""The one rollout of the project: generate answers to problems, judge them, save both as they come.

Profiling (answers on the teacher pool) and evaluation (answers on benchmarks) are the same work: a
``GenerationEngine`` answers each problem ``sampling.n`` times, a ``Judge`` compares every answer with the
expected one, and both are appended chunk by chunk to ``attempts.jsonl`` / ``verdicts.jsonl`` under the
output folder (``skillcore.io.JsonlAppender``). A killed job keeps every finished chunk and a rerun with
the same folder only does what is missing. ``rollout_run.json`` records which model
(``GenerationEngine.fingerprint``) and sampling setup wrote them, so saved answers from another model (a
retrained student behind the same alias) are never mixed into new results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel
from skillcore import Attempt, JsonlAppender, PoolProblem, Verdict, read_jsonl
from skillcore.io import atomic_write_text
from tqdm.auto import tqdm

from distill.engines import GenerationEngine, GenerationStopped, SamplingConfig, question_prompts
from distill.judge import JudgeItem, MathJudge

log = logging.getLogger(__name__)

ATTEMPTS_FILE = "attempts.jsonl"
VERDICTS_FILE = "verdicts.jsonl"
RUN_FILE = "rollout_run.json"

OnMismatch = Literal["error", "restart"]


class ResumeMismatchError(ValueError):
    """The output folder holds answers from another model or sampling setup."""


@runtime_checkable
class Judge(Protocol):
    """Anything that turns answers into verdicts: ``MathJudge`` (math-verify) or ``LLMJudge``.

    ``judge`` returns one verdict per item, in order. Judges that need the question (an LLM judge) read it
    from ``JudgeItem.question``. A comparison the judge could not make is ``error`` (or ``timeout``),
    never ``wrong``: a crash must not look like a weak skill.
    """

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...

    def close(self) -> None: ...


@dataclass
class RolloutResult:
    attempts: list[Attempt]  # sorted by (unique_id, sample_index)
    verdicts: list[Verdict]  # aligned with attempts
    out_dir: Path
    generated: int  # problems answered by this call (the rest were resumed)
    resumed: int

    @property
    def accuracy(self) -> float:
        return accuracy(self.verdicts)

    def status_counts(self) -> dict[str, int]:
        return status_counts(self.verdicts)


def accuracy(verdicts: Sequence[Verdict]) -> float:
    return sum(v.correct for v in verdicts) / max(len(verdicts), 1)


def status_counts(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Verdicts per status, every status present (errors and timeouts stay visible at 0)."""
    counts = dict.fromkeys(("correct", "wrong", "no_answer", "timeout", "error"), 0)
    for v in verdicts:
        counts[v.status] += 1
    return counts


def rollout(
    engine: GenerationEngine,
    problems: Sequence[PoolProblem],
    sampling: SamplingConfig,
    *,
    out_dir: str | Path,
    judge: Judge | None = None,
    chunk_size: int = 64,
    judge_workers: int | None = None,
    judge_timeout_s: float = 5.0,
    progress: bool = True,
    desc: str = "rollout",
    on_chunk: Callable[[int, int], None] | None = None,
    on_mismatch: OnMismatch = "error",
    shard: tuple[int, int] | None = None,
    stop: threading.Event | None = None,
) -> RolloutResult:
    """Answer every problem ``sampling.n`` times and judge each answer; resumable through ``out_dir``.

    ``stop``: once set, the chunk being generated is dropped within moments and ``GenerationStopped`` is
    raised (saying how far it got); every finished chunk is saved, so a rerun resumes after them.

    ``shard=(i, n)`` answers only the problems of shard ``i`` of ``n`` (a stable hash of ``unique_id``)
    into its own ``attempts.shard-i-of-n.jsonl``: run the ``n`` shards side by side (one per GPU) on the
    same folder, then an unsharded call finds every answer saved and only aggregates.

    ``judge`` defaults to a ``MathJudge`` owned (and closed) by this call. ``on_chunk(done, total)`` is
    called after each saved chunk (service progress). ``on_mismatch``: what to do when ``out_dir`` holds
    answers from another model or sampling setup, raise ``ResumeMismatchError`` or discard and restart.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = sampling.n
    ids = [p.unique_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problems must have distinct unique_id values")
    attempts_file, verdicts_file = ATTEMPTS_FILE, VERDICTS_FILE
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
        problems = [p for p in problems if shard_of(p.unique_id, count) == index]
        suffix = f".shard-{index}-of-{count}.jsonl"
        attempts_file, verdicts_file = (
            name.replace(".jsonl", suffix) for name in (ATTEMPTS_FILE, VERDICTS_FILE)
        )

    claim_out_dir(
        out, {"engine": engine.fingerprint, "sampling": sampling.model_dump(mode="json")}, on_mismatch
    )
    attempts = _load_done(out, ATTEMPTS_FILE, Attempt)
    verdicts = _load_done(out, VERDICTS_FILE, Verdict)
    complete = {p.unique_id for p in problems if all((p.unique_id, s) in attempts for s in range(k))}
    todo = [p for p in problems if p.unique_id not in complete]
    resumed = len(problems) - len(todo)
    if resumed:
        log.info("resuming: %d of %d problems already answered in %s", resumed, len(problems), out)

    own_judge = judge is None
    active: Judge = (
        judge if judge is not None else MathJudge(workers=judge_workers, timeout_s=judge_timeout_s)
    )
    by_id = {p.unique_id: p for p in problems}
    try:
        with JsonlAppender(out / attempts_file) as att_log, JsonlAppender(out / verdicts_file) as ver_log:
            # verdicts missing for saved attempts (a job killed between saving attempts and verdicts)
            missing = [a for key, a in attempts.items() if key not in verdicts and key[0] in by_id]
            if missing:
                for v in judge_attempts(active, missing, by_id):
                    verdicts[(v.unique_id, v.sample_index)] = v
                    ver_log.write(v)
                ver_log.flush()
            bar = tqdm(total=len(problems), initial=resumed, desc=desc, unit="problem", disable=not progress)
            try:
                for start in range(0, len(todo), chunk_size):
                    chunk = todo[start : start + chunk_size]
                    try:
                        if stop is not None and stop.is_set():
                            raise GenerationStopped("stopped before the next chunk")
                        outputs = engine.generate(
                            question_prompts([p.question for p in chunk]), sampling, progress=False, stop=stop
                        )
                    except GenerationStopped as exc:
                        raise GenerationStopped(
                            f"{desc} stopped with {resumed + start} of {len(problems)} problems answered and"
                            f" saved in {out}; a rerun with this folder resumes there"
                        ) from exc
                    new = [
                        Attempt(
                            unique_id=p.unique_id,
                            sample_index=s,
                            response=g.text,
                            model=engine.model_name,
                            n_tokens=g.n_tokens,
                            finish_reason=g.finish_reason,
                        )
                        for p, gens in zip(chunk, outputs, strict=True)
                        for s, g in enumerate(gens[:k])
                    ]
                    for a in new:
                        attempts[(a.unique_id, a.sample_index)] = a
                        att_log.write(a)
                    att_log.flush()
                    for v in judge_attempts(active, new, by_id):
                        verdicts[(v.unique_id, v.sample_index)] = v
                        ver_log.write(v)
                    ver_log.flush()
                    bar.update(len(chunk))
                    if on_chunk is not None:
                        on_chunk(resumed + start + len(chunk), len(problems))
            finally:
                bar.close()
    finally:
        if own_judge:
            active.close()

    wanted = sorted((p.unique_id, s) for p in problems for s in range(k))
    errors = sum(verdicts[key].status == "error" for key in wanted)
    if errors:
        log.warning("%s: %d of %d answers could not be judged (verdict 'error')", out, errors, len(wanted))
    return RolloutResult(
        [attempts[key] for key in wanted], [verdicts[key] for key in wanted], out, len(todo), resumed
    )


def judge_attempts(judge: Judge, attempts: Iterable[Attempt], by_id: dict[str, PoolProblem]) -> list[Verdict]:
    """Judge saved attempts against their problems' expected answers (with the question, for LLM judges)."""
    items = [
        JudgeItem(
            unique_id=a.unique_id,
            sample_index=a.sample_index,
            response=a.response,
            expected_answer=by_id[a.unique_id].expected_answer,
            question=by_id[a.unique_id].question,
        )
        for a in attempts
    ]
    return judge.judge(items)


def shard_of(unique_id: str, count: int) -> int:
    """The shard of a problem: a stable hash of its id (the same in every process and run)."""
    return int(hashlib.sha1(unique_id.encode("utf-8")).hexdigest()[:8], 16) % count


def _saved_files(out: Path, name: str) -> list[Path]:
    """``attempts.jsonl`` and the shards' ``attempts.shard-*.jsonl`` (or the same for verdicts)."""
    stem = name.removesuffix(".jsonl")
    return sorted(
        p for p in out.glob(f"{stem}*.jsonl") if p.name == name or p.name.startswith(f"{stem}.shard-")
    )


def _load_done(out: Path, name: str, model: type[BaseModel]) -> dict[tuple[str, int], Any]:
    done: dict[tuple[str, int], Any] = {}
    for path in _saved_files(out, name):
        for row in read_jsonl(path, skip_bad=True):
            record = model.model_validate(row)
            done.setdefault((row["unique_id"], row.get("sample_index", 0)), record)
    return done


def claim_out_dir(out: Path, state: dict[str, Any], on_mismatch: OnMismatch) -> None:
    """Keep saved answers only when ``rollout_run.json`` says the same model and sampling wrote them."""
    state = json.loads(json.dumps(state))  # compare as it reads back
    run_file = out / RUN_FILE
    saved = _saved_files(out, ATTEMPTS_FILE) + _saved_files(out, VERDICTS_FILE)
    if saved:
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else None
        if previous != state:
            why = (
                "nothing records which model wrote them"
                if previous is None
                else _differences(previous, state)
            )
            if on_mismatch != "restart":
                raise ResumeMismatchError(
                    f"{out} holds answers from another run ({why}); use another output folder or restart it"
                )
            log.warning("%s: discarding saved answers from another run (%s)", out, why)
            for path in saved:
                path.unlink(missing_ok=True)
    atomic_write_text(run_file, json.dumps(state, indent=1))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = []
    for section in ("engine", "sampling"):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changed.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return "; ".join(changed) or "unreadable record"
