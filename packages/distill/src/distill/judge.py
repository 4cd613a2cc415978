"""Answer judging: extract the final answer of a response and compare it with the expected answer.

Extraction takes the last ``\\boxed{...}`` (nested braces allowed), ``\\boxed 5`` or ``\\fbox{...}``; a
response without one gets the verdict ``no_answer``. Comparison uses math-verify (fractions, decimals,
LaTeX, percentages, intervals, sets); multiple-choice letters are compared directly, since math-verify
would read a bare ``E`` as Euler's number.

An expected answer is a multiple-choice letter only when it is marked as one: a letter in parentheses
(``(C)``, ``\\text{(C)}``), a bare capital ``A``-``E`` (``C``, ``\\text{C}``: how MATH writes choices), or
any letter form when the item declares its answer a choice (``JudgeItem.multiple_choice``, for a benchmark
whose answers are letters). A bare lowercase ``a``-``e`` is otherwise an expression: a gold ``e`` is
Euler's number and accepts ``\\exp(1)``. Against a choice, a prediction names a letter on its own (``C``,
``(C)``, ``C.``) or as a label before the option's text (``C) 12``, ``(C) Plane``, ``C: 12``); a letter
followed by anything else (``C or D``, ``(C) or (D)``, ``e + 1``) names no choice and is wrong. A trailing
list separator (``,`` or ``;``) is part of an answer: ``3`` against ``3,`` is wrong (math-verify would
drop it and accept), in both directions.

math-verify times out with ``signal.alarm``, which only works in a process's main thread. ``MathJudge``
therefore compares in worker processes (each comparison runs in a worker's main thread, so math-verify's
own timeout applies) and the parent also enforces a hard per-answer deadline: a worker stuck past it is
killed and replaced and the answer is judged ``timeout``. This is safe to call from any thread
(BentoML workers, thread pools) and a pathological expression cannot hang a job.

The workers are shared by every caller without a lock across calls: one dispatcher thread hands items
to free workers round-robin across the batches in flight, so a small batch is not queued behind a slow
one. ``MathJudge.judge(..., budget_s=...)`` bounds a whole batch: items not judged when the budget runs
out are ``timeout``.

A comparison math-verify cannot make is ``error`` (or ``timeout``), never ``wrong``, and it is the same
on every call: answers nested deeper than ``MAX_NESTING`` brackets are ``error`` without parsing (deep
nesting made math-verify time out on a first call and hit its recursion limit, then read the answer as
a bare string, ``wrong``, on repeats); a parse that fails inside math-verify (which swallows the error
and falls back to the text) is reported as ``error``; and a judge remembers its ``error``/``timeout``
verdicts, so a repeat does not get another verdict from warmer caches.
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
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from skillcore.records import Verdict, VerdictStatus
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|mbox)\s*\{([^{}]*)\}")
_MC_MARKED = re.compile(r"^(?:\(([A-Ea-e])\)|([A-E]))$")  # (C), (c), C: a choice by its form alone
_MC_LETTER = re.compile(r"^\(?([A-Ea-e])\)?\.?$")  # any letter form: C, c, (C), C), C., (C).
_MC_LABEL = re.compile(r"^\(?([A-Ea-e])(?:\)|[.:](?=\s))\s*([\w\\$-].*)$")  # C) 12, (C) Plane, C: 12
# another label in the option text, (D) or D) (not f(D): a function's argument)
_MC_OTHER = re.compile(r"(?<![\w\\])\(([A-E])\)|(?<![\w\\(])([A-E])\)")
_LIST_END = (",", ";")  # a trailing list separator is part of the answer


class JudgeItem(BaseModel):
    """One response to judge against its problem's expected answer."""

    model_config = ConfigDict(extra="forbid")

    unique_id: str = Field(min_length=1)
    sample_index: int = Field(default=0, ge=0)
    response: str
    expected_answer: str
    question: str = Field(default="", description="the problem, for judges that read it (LLMJudge)")
    multiple_choice: bool = Field(
        default=False,
        description="the expected answer is a choice letter in any form (a bare lowercase 'e' included)",
    )


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


def choice_letter(answer: str, *, gold: bool, declared: bool = False) -> str | None:
    """The multiple-choice letter an answer names, or None.

    ``gold=True``: the expected answer is a choice when marked as one (``(C)``, ``\\text{(C)}``, ``(c)``,
    a bare capital ``C``/``\\text{C}``) or, with ``declared``, in any letter form (``c``, ``e``).
    ``gold=False``: a prediction names a letter alone (``C``, ``(C)``, ``C.``) or as the label of the
    option's text (``C) 12``, ``(C) Plane``, ``C: 12``), and names no second label (``(C) or (D)``).
    """
    text = _unwrap(answer)
    if gold:
        match = (_MC_LETTER if declared else _MC_MARKED).match(text)
        if match is None:
            return None
        return next(g for g in match.groups() if g).upper()
    match = _MC_LETTER.match(text)
    if match is not None:
        return match.group(1).upper()
    label = _MC_LABEL.match(text)
    if label is None:
        return None
    letter = label.group(1).upper()
    if any(a + b != letter for a, b in _MC_OTHER.findall(label.group(2))):
        return None  # a hedge between choices names none of them
    return letter


def _normalise(text: str) -> str:
    text = _unwrap(text)
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\ |\s+", "", text)
    return text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


normalise_answer = _normalise  # public: majority voting groups answers by this normal form


# ---------------------------------------------------------------------------- comparison
CompareStatus = Literal["correct", "wrong", "timeout", "error"]


MAX_NESTING = 100  # brackets deeper than this are refused (math-verify's parser recurses per level)


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``(``, ``[`` and ``{`` in ``text`` (unbalanced closers are ignored)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}" and depth:
            depth -= 1
    return deepest


class ParseFailure(RuntimeError):
    """math-verify could not parse an answer (it would have fallen back to comparing the raw text)."""


_failures = threading.local()
_HARD_FAILURES: tuple[type[BaseException], ...] = (RecursionError, MemoryError)


def _watch_parser() -> None:
    """Make parse failures visible: math-verify's LaTeX/expression parsers swallow every exception and
    fall back to the answer's text, which then compares as a (wrong) string. Wrap them (once) to record
    recursion and memory errors for ``_parse`` to raise."""
    import math_verify.parser as mv_parser

    for name in ("parse_latex_cached", "parse_expr_cached"):
        original = getattr(mv_parser, name)
        if getattr(original, "_distill_watched", False):
            continue

        def watched(text: str, _original: Callable[[str], Any] = original) -> Any:
            try:
                return _original(text)
            except _HARD_FAILURES as exc:
                failures = getattr(_failures, "seen", None)
                if failures is not None:
                    failures.append(exc)
                raise

        wraps(original)(watched)
        watched._distill_watched = True  # type: ignore[attr-defined]
        setattr(mv_parser, name, watched)


@lru_cache(maxsize=4096)
def _parse_gold(expected: str, timeout: int | None) -> tuple[Any, ...]:
    return tuple(_parse(expected, timeout))


def _parse(answer: str, timeout: int | None) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    _watch_parser()
    text = answer.strip().strip("$")
    _failures.seen = []
    try:
        parsed = list(
            parse(
                f"${text}$",
                extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                parsing_timeout=timeout,
                raise_on_error=True,
            )
        )
        seen = list(_failures.seen)
    finally:
        _failures.seen = None
    if seen:
        raise ParseFailure(f"math-verify could not parse {text[:80]!r}: {type(seen[0]).__name__}")
    return parsed


def _decided_without_math(extracted: str, expected: str, multiple_choice: bool) -> CompareStatus | None:
    """The verdict where no math-verify is needed (choice letters, equal text, a list separator on one
    side only); None where math-verify must compare."""
    gold_letter = choice_letter(expected, gold=True, declared=multiple_choice)
    if gold_letter is not None:
        return "correct" if choice_letter(extracted, gold=False) == gold_letter else "wrong"
    pred, gold = _normalise(extracted), _normalise(expected)
    if pred == gold:
        return "correct"
    if (pred[-1:] in _LIST_END) != (gold[-1:] in _LIST_END):
        return "wrong"  # "3" vs "3,": math-verify drops the separator, which never makes an answer right
    return None


def compare_answers(
    extracted: str, expected: str, *, timeout: int | None = 5, multiple_choice: bool = False
) -> CompareStatus:
    """Compare an extracted answer with the expected one.

    ``timeout`` (whole seconds) is math-verify's signal-based timeout: only pass it in a main thread;
    pass None elsewhere and bound the call from outside (as ``MathJudge`` does). ``multiple_choice``
    declares the expected answer a choice letter in any form (see the module's docstring).
    """
    from math_verify import verify
    from math_verify.errors import TimeoutException

    decided = _decided_without_math(extracted, expected, multiple_choice)
    if decided is not None:
        return decided
    deepest = max(nesting_depth(extracted), nesting_depth(expected))
    if deepest > MAX_NESTING:  # decided before math-verify: the same verdict on every call
        log.warning("answer nested %d deep (over %d): not compared", deepest, MAX_NESTING)
        return "error"
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
    multiple_choice: bool = False,
) -> Verdict:
    """Judge one response in this process (math-verify's timeout applies only in the main thread)."""
    extracted = extract_answer(response)
    if extracted is None:
        status: VerdictStatus = "no_answer"
    else:
        timeout = max(1, math.ceil(timeout_s)) if _signals_usable() else None
        try:
            status = compare_answers(
                extracted, expected_answer, timeout=timeout, multiple_choice=multiple_choice
            )
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

    compare_answers("\\frac{1}{2}", "0.5", timeout=soft_timeout)  # build the parsers: no slow first item

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        idx, extracted, expected, multiple_choice = json.loads(line)
        try:
            status: CompareStatus = compare_answers(
                extracted, expected, timeout=soft_timeout, multiple_choice=multiple_choice
            )
        except BaseException:  # report and keep serving
            status = "error"
        sys.stdout.write(json.dumps([idx, status]) + "\n")
        sys.stdout.flush()


STARTUP_TIMEOUT_S = 180.0  # importing sympy/math-verify on a busy machine
SPARE_IDLE_S = 60.0  # a spare worker idle this long is stopped
FAILED_MEMO_SIZE = 4096  # error/timeout verdicts a judge remembers (same input, same verdict)


@dataclass
class _Batch:
    """One ``judge`` call in flight: its items, their statuses, what is left to hand to a worker."""

    batch: Sequence[JudgeItem]
    extracted: Sequence[str | None]
    statuses: list[VerdictStatus | None]
    todo: deque[int]
    deadline: float | None  # the batch's budget; None: no budget
    on_item: Callable[[], Any]
    in_flight: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Worker:
    process: subprocess.Popen[str]
    ready: bool = False  # the worker has imported math-verify and said "ready"
    job: int | None = None
    batch: _Batch | None = (
        None  # whose job it is (None while busy: the batch gave up on it, the budget ran out)
    )
    deadline: float = 0.0
    started: float = field(default_factory=time.monotonic)
    spare: bool = False  # serves only batches no worker is on (a newcomer behind a slow batch)
    idle_since: float = field(default_factory=time.monotonic)

    def fileno(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()


class MathJudge:
    """Batch judge with per-answer hard timeouts, safe to call from any thread, from many threads at once.

    Comparisons run in ``workers`` subprocesses (``python -m distill.judge``; plain subprocesses, so
    no ``__main__`` guard or multiprocessing start method is needed by callers) shared by all callers:
    a dispatcher thread hands each free worker the next item of the batches in flight, round-robin, so a
    small batch finishes while a slow one runs. ``workers=0`` judges inline in the calling thread
    (math-verify's own timeout only in the main thread, no hard deadline). ``timeout_s`` bounds the
    comparison of one answer; ``judge(..., budget_s=)`` bounds a whole batch.

    While every worker is busy, up to ``spares`` more are started (and stopped after a minute idle): a
    spare only takes items of a batch that no worker is on, so a batch arriving behind slow answers (each
    can hold a worker until the timeout) starts at once instead of after them.
    """

    def __init__(self, *, workers: int | None = None, timeout_s: float = 5.0, spares: int = 1) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.workers = min(4, os.cpu_count() or 1) if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if spares < 0:
            raise ValueError(f"spares must be >= 0, got {spares}")
        self.spares = spares
        self.timeout_s = float(timeout_s)
        # math-verify's soft timeout fires first for most slow answers, so workers rarely need killing.
        self._soft = max(1, math.floor(self.timeout_s / 2))
        self._pool: list[_Worker] = []
        self._batches: deque[_Batch] = deque()  # in flight, in round-robin order
        self._failed: OrderedDict[tuple[str, str], VerdictStatus] = OrderedDict()
        self._lock = threading.Lock()  # guards the pool, the batches and the memo (never held while judging)
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._closed = False

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

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._wake()
            thread.join(timeout=30)
        with self._lock:
            for worker in self._pool:
                _stop(worker.process)
            self._pool = []
            self._fail_all(RuntimeError("the judge was closed"))
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._wake_r = self._wake_w = -1
            self._thread = None

    def __enter__(self) -> MathJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        for worker in getattr(self, "_pool", []):
            if worker.process.poll() is None:
                worker.process.kill()
        for fd in (getattr(self, "_wake_r", -1), getattr(self, "_wake_w", -1)):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # ------------------------------------------------------------------ judging
    def _remember(self, answer: str | None, expected: str, status: VerdictStatus | None) -> None:
        if answer is None or status not in ("error", "timeout"):
            return
        self._failed[(answer, expected)] = status
        self._failed.move_to_end((answer, expected))
        while len(self._failed) > FAILED_MEMO_SIZE:
            self._failed.popitem(last=False)

    def judge(
        self, items: Iterable[JudgeItem], *, progress: bool = False, budget_s: float | None = None
    ) -> list[Verdict]:
        """Verdicts in the order of ``items``. With ``budget_s``, items not judged within that many
        seconds are ``timeout`` (never ``wrong``)."""
        if budget_s is not None and budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {budget_s}")
        deadline = None if budget_s is None else time.monotonic() + budget_s
        batch = list(items)
        extracted = [extract_answer(item.response) for item in batch]
        statuses: list[VerdictStatus | None] = [None] * len(batch)
        todo: deque[int] = deque()
        for i, (item, answer) in enumerate(zip(batch, extracted, strict=True)):
            if answer is None:
                statuses[i] = "no_answer"
            elif (
                decided := _decided_without_math(answer, item.expected_answer, item.multiple_choice)
            ) is not None:  # letters and textually equal answers need no math-verify (no worker round trip)
                statuses[i] = decided
            else:
                with self._lock:
                    statuses[i] = self._failed.get((answer, item.expected_answer))
                if statuses[i] is None:
                    todo.append(i)
        bar = tqdm(total=len(batch), desc="judging", disable=not progress, initial=len(batch) - len(todo))
        try:
            if self.workers == 0:
                for i in todo:
                    if deadline is not None and time.monotonic() >= deadline:
                        statuses[i] = "timeout"
                    else:
                        v = judge_response(
                            batch[i].response,
                            batch[i].expected_answer,
                            timeout_s=self.timeout_s,
                            multiple_choice=batch[i].multiple_choice,
                        )
                        statuses[i] = v.status
                        with self._lock:
                            self._remember(extracted[i], batch[i].expected_answer, v.status)
                    bar.update()
            elif todo:
                self._run_shared(_Batch(batch, extracted, statuses, todo, deadline, bar.update))
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

    def _run_shared(self, job: _Batch) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the judge was closed")
            if self._wake_r < 0:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
            self._batches.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch_loop, name="math-judge", daemon=True)
                self._thread.start()
        self._wake()
        try:
            job.done.wait()
        except BaseException:  # interrupted: hand out nothing more of this batch
            with self._lock:
                job.todo.clear()
            raise
        if job.error is not None:
            raise RuntimeError(str(job.error)) from job.error

    # ------------------------------------------------------------------ the dispatcher thread
    def _dispatch_loop(self) -> None:
        """Runs while batches are in flight (a judge nobody closes holds no thread while idle)."""
        while True:
            with self._lock:
                if self._closed or not self._batches:
                    self._thread = None
                    return
                try:
                    self._step()
                except Exception as exc:  # a worker failed to start: the batches in flight fail
                    log.error("judge workers failed: %s", exc)
                    self._fail_all(exc)
                    for worker in self._pool:
                        _stop(worker.process, kill=True)
                    self._pool = []
                    continue
                fds = [w.fileno() for w in self._pool if w.job is not None or not w.ready]
                timeout = self._wait_time()
            try:
                readable, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
            except (OSError, ValueError):  # a worker replaced meanwhile (closed fd): look again
                continue
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)

    def _wait_time(self) -> float:
        now = time.monotonic()
        times = [w.deadline for w in self._pool if w.job is not None]
        times += [b.deadline for b in self._batches if b.deadline is not None]
        if any(not w.ready for w in self._pool):
            times.append(now + 1.0)  # startup checks
        return max(0.0, min(times) - now) if times else 5.0

    def _step(self) -> None:
        """One round (the lock held): read what workers answered, enforce deadlines and budgets, hand out
        items, finish batches."""
        now = time.monotonic()
        for worker in [w for w in self._pool if not w.ready]:  # startup
            if _readable([worker], 0):
                assert worker.process.stdout is not None
                if worker.process.stdout.readline().strip() != "ready":
                    raise RuntimeError("a judge worker failed to start (see its stderr above)")
                worker.ready = True
            elif now - worker.started > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"a judge worker did not start within {STARTUP_TIMEOUT_S:.0f}s")
        busy = [w for w in self._pool if w.job is not None]
        for worker in _readable(busy, 0) if busy else []:  # answers
            assert worker.process.stdout is not None and worker.job is not None
            line = worker.process.stdout.readline()
            status: VerdictStatus
            if line:
                _, status = json.loads(line)
                self._finish(worker, status)
            else:  # the worker died mid-answer
                self._finish(worker, "error")
                self._replace(worker)
        for worker in [w for w in self._pool if w.job is not None and w.deadline <= now]:
            if worker.batch is not None:
                shown = (worker.batch.extracted[worker.job or 0] or "")[:200]
                log.warning("answer %r hit the %.1fs judge timeout", shown, self.timeout_s)
            self._finish(worker, "timeout")
            self._replace(worker)
        for job in self._batches:  # budgets: what is left is answered "timeout" now
            if job.deadline is not None and job.deadline <= now and (job.todo or job.in_flight):
                for i in job.todo:
                    job.statuses[i] = "timeout"
                    job.on_item()
                job.todo.clear()
                for worker in self._pool:
                    if worker.batch is job and worker.job is not None:
                        job.statuses[worker.job] = "timeout"
                        job.on_item()
                        job.in_flight -= 1
                        worker.batch = None  # it finishes (or times out) for nobody
        waiting = sum(len(b.todo) for b in self._batches)
        base = [w for w in self._pool if not w.spare]
        free = sum(1 for w in base if w.job is None)
        while waiting > free and len(base) < self.workers:
            base.append(self._spawn())
            self._pool.append(base[-1])
            free += 1
        spares = [w for w in self._pool if w.spare]
        if self._batches and len(base) == self.workers and not free and len(spares) < self.spares:
            spare = self._spawn()  # every worker is busy: one more for a batch that arrives now
            spare.spare = True
            self._pool.append(spare)
        for worker in spares:
            if worker.job is None and worker.ready and now - worker.idle_since > SPARE_IDLE_S:
                _stop(worker.process)
                self._pool.remove(worker)
        for worker in self._pool:  # hand out items, round-robin across batches
            if not (worker.ready and worker.job is None):
                continue
            next_job = self._next_batch(untouched=worker.spare)
            if next_job is None:
                continue
            job = next_job
            i = job.todo.popleft()
            try:
                assert worker.process.stdin is not None
                worker.process.stdin.write(
                    json.dumps(
                        [i, job.extracted[i], job.batch[i].expected_answer, job.batch[i].multiple_choice]
                    )
                    + "\n"
                )
                worker.process.stdin.flush()
            except OSError:  # a dead worker: replace it, the item goes back first in line
                job.todo.appendleft(i)
                self._replace(worker)
                continue
            worker.job, worker.batch = i, job
            worker.deadline = time.monotonic() + self.timeout_s
            job.in_flight += 1
        for job in [b for b in self._batches if not b.todo and not b.in_flight]:
            self._batches.remove(job)
            job.done.set()

    def _next_batch(self, *, untouched: bool = False) -> _Batch | None:
        """The next batch with items left, round-robin; ``untouched``: only one no worker is on."""
        for _ in range(len(self._batches)):
            job = self._batches[0]
            self._batches.rotate(-1)
            if job.todo and not (untouched and job.in_flight):
                return job
        return None

    def _finish(self, worker: _Worker, status: VerdictStatus) -> None:
        job, i = worker.batch, worker.job
        worker.job, worker.batch = None, None
        worker.idle_since = time.monotonic()
        if job is None or i is None:  # the batch already answered it (budget): the result is dropped
            return
        job.statuses[i] = status
        job.in_flight -= 1
        job.on_item()
        self._remember(job.extracted[i], job.batch[i].expected_answer, status)

    def _fail_all(self, exc: BaseException) -> None:
        for job in self._batches:
            job.error = exc
            job.todo.clear()
            job.done.set()
        self._batches.clear()
        for worker in self._pool:
            worker.job, worker.batch = None, None

    def _replace(self, worker: _Worker) -> None:
        _stop(worker.process, kill=True)
        worker.process = self._spawn().process
        worker.ready = False
        worker.job, worker.batch = None, None
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
                # a one-word verdict: a thinking model (Qwen3) would spend the 8 tokens inside <think>
                extra_body={"chat_template_kwargs": {"enable_thinking": False}},
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
