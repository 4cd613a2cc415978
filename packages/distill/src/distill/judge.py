"""Answer judging: extract the final answer of a response and compare it with the expected answer.

Extraction takes the last ``\\boxed{...}`` (nested braces allowed), ``\\boxed 5`` or ``\\fbox{...}``; a
response without one gets the verdict ``no_answer``. Comparison uses math-verify (fractions, decimals,
LaTeX, percentages, intervals, sets); multiple-choice letters are compared directly, since math-verify
would read a bare ``E`` as Euler's number.

math-verify times out with ``signal.alarm``, which only works in a process's main thread. ``MathJudge``
therefore compares in worker processes (each comparison runs in a worker's main thread, so math-verify's
own timeout applies) and the parent also enforces a hard per-answer deadline: a worker stuck past it is
killed and replaced and the answer is judged ``timeout``. This is safe to call from any thread
(BentoML workers, thread pools) and a pathological expression cannot hang a job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from skillcore.records import Verdict, VerdictStatus
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|mbox)\s*\{([^{}]*)\}")
_MC_GOLD = re.compile(r"^\(?([A-Ea-e])\)?$")
_MC_PRED = re.compile(r"^\(?([A-Ea-e])\)?(?:$|[\s.:)])")


class JudgeItem(BaseModel):
    """One response to judge against its problem's expected answer."""

    model_config = ConfigDict(extra="forbid")

    unique_id: str = Field(min_length=1)
    sample_index: int = Field(default=0, ge=0)
    response: str
    expected_answer: str
    question: str = Field(default="", description="the problem, for judges that read it (LLMJudge)")


# ---------------------------------------------------------------------------- extraction
def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == '{'`` and the index after it."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped character (\{ \} \\) never opens or closes a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None  # unbalanced: the response was cut off inside the box


def extract_answer(text: str) -> str | None:
    """The content of the last complete ``\\boxed``/``\\fbox`` in ``text``; None when there is none."""
    for match in reversed(list(_BOX_RE.finditer(text))):
        pos = match.end()
        rest = text[pos:]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            group = _braced(text, pos + len(rest) - len(stripped))
            if group is not None and group[0].strip():
                return group[0].strip()
        elif rest[:1].isspace():  # \boxed 5: the next token
            token = re.match(r"\s+([^\s$]+)", rest)
            if token:
                return token.group(1).rstrip(".,;")
    return None


def _unwrap(text: str) -> str:
    previous = None
    while previous != text:
        previous, text = text, _WRAPPERS.sub(r"\1", text)
    return text.strip().strip("$").strip()


def choice_letter(answer: str, *, gold: bool) -> str | None:
    """The multiple-choice letter an answer names (``C``, ``(C)``, ``\\text{C}``, ``C) 12`` for predictions)."""
    text = _unwrap(answer)
    match = (_MC_GOLD if gold else _MC_PRED).match(text)
    return match.group(1).upper() if match else None


def _normalise(text: str) -> str:
    text = _unwrap(text)
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\ |\s+", "", text)
    return text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


normalise_answer = _normalise  # public: majority voting groups answers by this normal form


# ---------------------------------------------------------------------------- comparison
CompareStatus = Literal["correct", "wrong", "timeout", "error"]


@lru_cache(maxsize=4096)
def _parse_gold(expected: str, timeout: int | None) -> tuple[Any, ...]:
    return tuple(_parse(expected, timeout))


def _parse(answer: str, timeout: int | None) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer.strip().strip("$")
    return list(
        parse(
            f"${text}$",
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=timeout,
            raise_on_error=True,
        )
    )


def compare_answers(extracted: str, expected: str, *, timeout: int | None = 5) -> CompareStatus:
    """Compare an extracted answer with the expected one.

    ``timeout`` (whole seconds) is math-verify's signal-based timeout: only pass it in a main thread;
    pass None elsewhere and bound the call from outside (as ``MathJudge`` does).
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    gold_letter = choice_letter(expected, gold=True)
    if gold_letter is not None:
        return "correct" if choice_letter(extracted, gold=False) == gold_letter else "wrong"
    if _normalise(extracted) == _normalise(expected):
        return "correct"
    try:
        gold = list(_parse_gold(expected, timeout))
        if not gold:  # the reference itself is unreadable: nothing can be shown right or wrong
            log.warning("math-verify cannot parse the expected answer %r", expected)
            return "error"
        pred = _parse(extracted, timeout)
        if not pred:  # the student's box holds no expression (prose, garbage): a wrong answer
            return "wrong"
        ok = verify(gold, pred, timeout_seconds=timeout, raise_on_error=True)
    except TimeoutException:
        return "timeout"
    except Exception as exc:  # math-verify failed: counted as an error, never read as a wrong answer
        log.warning("math-verify failed comparing %r with %r: %s", extracted[:200], expected[:200], exc)
        return "error"
    return "correct" if ok else "wrong"


def _signals_usable() -> bool:
    return threading.current_thread() is threading.main_thread()


def judge_response(
    response: str,
    expected_answer: str,
    *,
    unique_id: str = "-",
    sample_index: int = 0,
    timeout_s: float = 5.0,
) -> Verdict:
    """Judge one response in this process (math-verify's timeout applies only in the main thread)."""
    extracted = extract_answer(response)
    if extracted is None:
        status: VerdictStatus = "no_answer"
    else:
        timeout = max(1, math.ceil(timeout_s)) if _signals_usable() else None
        try:
            status = compare_answers(extracted, expected_answer, timeout=timeout)
        except Exception:
            log.exception("judging %s/%d failed", unique_id, sample_index)
            status = "error"
    return Verdict(
        unique_id=unique_id,
        sample_index=sample_index,
        status=status,
        extracted_answer=extracted,
        expected_answer=expected_answer,
    )


# ---------------------------------------------------------------------------- worker processes
def _worker_loop(soft_timeout: int) -> None:
    """Serve comparisons over stdin/stdout, one JSON line each (``python -m distill.judge``)."""
    import json
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (import before announcing readiness)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        idx, extracted, expected = json.loads(line)
        try:
            status: CompareStatus = compare_answers(extracted, expected, timeout=soft_timeout)
        except BaseException:  # report and keep serving
            status = "error"
        sys.stdout.write(json.dumps([idx, status]) + "\n")
        sys.stdout.flush()


STARTUP_TIMEOUT_S = 180.0  # importing sympy/math-verify on a busy machine


@dataclass
class _Worker:
    process: subprocess.Popen[str]
    ready: bool = False  # the worker has imported math-verify and said "ready"
    job: int | None = None
    deadline: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def fileno(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()


class MathJudge:
    """Batch judge with per-answer hard timeouts, safe to call from any thread.

    Comparisons run in ``workers`` subprocesses (``python -m distill.judge``; plain subprocesses, so
    no ``__main__`` guard or multiprocessing start method is needed by callers). ``workers=0`` judges
    inline in the calling thread (math-verify's own timeout only in the main thread, no hard deadline).
    ``timeout_s`` bounds the comparison of one answer.
    """

    def __init__(self, *, workers: int | None = None, timeout_s: float = 5.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.timeout_s = float(timeout_s)
        # math-verify's soft timeout fires first for most slow answers, so workers rarely need killing.
        self._soft = max(1, math.floor(self.timeout_s / 2))
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()  # one batch at a time per judge

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self) -> _Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "distill.judge", "--worker", str(self._soft)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        return _Worker(process)

    def close(self) -> None:
        with self._lock:
            for worker in self._pool:
                _stop(worker.process)
            self._pool = []

    def __enter__(self) -> MathJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        for worker in getattr(self, "_pool", []):
            if worker.process.poll() is None:
                worker.process.kill()

    # ------------------------------------------------------------------ judging
    def judge(self, items: Iterable[JudgeItem], *, progress: bool = False) -> list[Verdict]:
        """Verdicts in the order of ``items``."""
        batch = list(items)
        extracted = [extract_answer(item.response) for item in batch]
        statuses: list[VerdictStatus | None] = [None] * len(batch)
        todo: deque[int] = deque()
        for i, (item, answer) in enumerate(zip(batch, extracted, strict=True)):
            if answer is None:
                statuses[i] = "no_answer"
            elif choice_letter(item.expected_answer, gold=True) is not None or _normalise(
                answer
            ) == _normalise(
                item.expected_answer
            ):  # letters and textually equal answers need no math-verify (and no worker round trip)
                statuses[i] = compare_answers(answer, item.expected_answer, timeout=None)
            else:
                todo.append(i)
        bar = tqdm(total=len(batch), desc="judging", disable=not progress, initial=len(batch) - len(todo))
        try:
            if self.workers == 0:
                for i in todo:
                    v = judge_response(batch[i].response, batch[i].expected_answer, timeout_s=self.timeout_s)
                    statuses[i] = v.status
                    bar.update()
            elif todo:
                with self._lock:
                    self._run_pool(batch, extracted, todo, statuses, bar)
        finally:
            bar.close()
        return [
            Verdict(
                unique_id=item.unique_id,
                sample_index=item.sample_index,
                status=status or "error",
                extracted_answer=answer,
                expected_answer=item.expected_answer,
            )
            for item, answer, status in zip(batch, extracted, statuses, strict=True)
        ]

    def _run_pool(
        self,
        batch: Sequence[JudgeItem],
        extracted: Sequence[str | None],
        todo: deque[int],
        statuses: list[VerdictStatus | None],
        bar: Any,
    ) -> None:
        wanted = min(self.workers, len(todo))
        while len(self._pool) < wanted:
            self._pool.append(self._spawn())
        busy: list[_Worker] = []
        try:
            self._dispatch(batch, extracted, todo, statuses, bar, busy)
        except BaseException:
            # interrupted mid-batch: workers still holding an answer would reply out of turn later
            for worker in busy:
                self._replace(worker)
                worker.job = None
            raise

    def _dispatch(
        self,
        batch: Sequence[JudgeItem],
        extracted: Sequence[str | None],
        todo: deque[int],
        statuses: list[VerdictStatus | None],
        bar: Any,
        busy: list[_Worker],
    ) -> None:
        while todo or busy:
            starting = [w for w in self._pool if not w.ready]
            if starting:  # wait (in parallel) for fresh workers to finish importing
                for worker in _readable(starting, 0 if busy else 5):
                    assert worker.process.stdout is not None
                    if worker.process.stdout.readline().strip() == "ready":
                        worker.ready = True
                    else:
                        raise RuntimeError("a judge worker failed to start (see its stderr above)")
                if any(time.monotonic() - w.started > STARTUP_TIMEOUT_S for w in starting if not w.ready):
                    raise RuntimeError(f"a judge worker did not start within {STARTUP_TIMEOUT_S:.0f}s")
            for worker in self._pool:
                if worker.ready and worker.job is None and todo:
                    i = todo.popleft()
                    try:
                        assert worker.process.stdin is not None
                        worker.process.stdin.write(
                            json.dumps([i, extracted[i], batch[i].expected_answer]) + "\n"
                        )
                        worker.process.stdin.flush()
                    except OSError:  # a dead worker: replace it and retry the item once more
                        todo.appendleft(i)
                        self._replace(worker)
                        continue
                    worker.job = i
                    worker.deadline = time.monotonic() + self.timeout_s
                    busy.append(worker)
            if not busy:
                if todo and not any(w.ready for w in self._pool) and not starting:
                    raise RuntimeError("no judge worker is available")
                continue
            wait_for = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            for worker in _readable(busy, wait_for):
                busy.remove(worker)
                assert worker.process.stdout is not None and worker.job is not None
                line = worker.process.stdout.readline()
                if line:
                    idx, status = json.loads(line)
                    statuses[idx] = status
                else:  # the worker died mid-answer
                    statuses[worker.job] = "error"
                    self._replace(worker)
                worker.job = None
                bar.update()
            now = time.monotonic()
            for worker in [w for w in busy if w.deadline <= now]:
                busy.remove(worker)
                assert worker.job is not None
                statuses[worker.job] = "timeout"
                shown = (extracted[worker.job] or "")[:200]
                log.warning("answer %r hit the %.1fs judge timeout", shown, self.timeout_s)
                self._replace(worker)
                worker.job = None
                bar.update()

    def _replace(self, worker: _Worker) -> None:
        _stop(worker.process, kill=True)
        worker.process = self._spawn().process
        worker.ready = False
        worker.started = time.monotonic()


def _readable(workers: Sequence[_Worker], timeout: float) -> list[_Worker]:
    by_fd = {w.fileno(): w for w in workers}
    ready, _, _ = select.select(list(by_fd), [], [], timeout)
    return [by_fd[fd] for fd in ready]


def _stop(process: subprocess.Popen[str], *, kill: bool = False) -> None:
    if kill:
        process.kill()
    else:
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def judge_batch(
    items: Iterable[JudgeItem], *, workers: int | None = None, timeout_s: float = 5.0, progress: bool = False
) -> list[Verdict]:
    """Judge a batch with a temporary ``MathJudge``."""
    with MathJudge(workers=workers, timeout_s=timeout_s) as judge:
        return judge.judge(items, progress=progress)


# ---------------------------------------------------------------------------- LLM judge
LLM_JUDGE_PROMPT = (
    "You are grading a student's final answer against the reference answer of a problem.\n\n"
    "Problem:\n{question}\n\nReference answer:\n{expected}\n\nStudent's final answer:\n{answer}\n\n"
    "Are the two answers equivalent? Reply with exactly one word: CORRECT or WRONG."
)


class LLMJudge:
    """Judge with a model behind an OpenAI-compatible endpoint, for answers that are not machine-checkable.

    The final answer is extracted the same way (no box: ``no_answer``); the model then decides equivalence.
    A reply that is neither CORRECT nor WRONG, or a failed request, gives ``error``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        from openai import OpenAI

        self.model = model
        self.concurrency = concurrency
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def _one(self, item: JudgeItem, answer: str, question: str) -> VerdictStatus:
        prompt = LLM_JUDGE_PROMPT.format(question=question, expected=item.expected_answer, answer=answer)
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0.0,
                max_tokens=8,
            )
        except Exception:
            log.exception("LLM judge request failed for %s", item.unique_id)
            return "error"
        text = (reply.choices[0].message.content or "").strip().upper()
        if text.startswith("CORRECT"):
            return "correct"
        if text.startswith("WRONG"):
            return "wrong"
        return "error"

    def close(self) -> None:
        self.client.close()

    def judge(self, items: Iterable[JudgeItem], questions: Sequence[str] | None = None) -> list[Verdict]:
        """Verdicts in order; the question comes from ``questions`` or else each item's ``question``."""
        batch = list(items)
        qs = list(questions) if questions is not None else [item.question for item in batch]
        extracted = [extract_answer(item.response) for item in batch]
        statuses: list[VerdictStatus] = ["no_answer"] * len(batch)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {
                pool.submit(self._one, item, answer, q): i
                for i, (item, answer, q) in enumerate(zip(batch, extracted, qs, strict=True))
                if answer is not None
            }
            for future, i in futures.items():
                statuses[i] = future.result()
        return [
            Verdict(
                unique_id=item.unique_id,
                sample_index=item.sample_index,
                status=status,
                extracted_answer=answer,
                expected_answer=item.expected_answer,
            )
            for item, answer, status in zip(batch, extracted, statuses, strict=True)
        ]


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_loop(int(sys.argv[2]))
