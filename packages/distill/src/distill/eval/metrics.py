"""Benchmark metrics over k sampled answers per problem: avg@k, pass@k, maj@k, with bootstrap CIs.

The paper's headline number is avg@8 (mean correctness over 8 samples at temperature 0.6) averaged over
five benchmarks. pass@k uses the unbiased estimator of Chen et al. (2021); maj@k takes a majority vote
over the extracted answers. Confidence intervals resample problems (not samples), since problems are the
units a benchmark draws. Verdict statuses are all counted, so judge errors and timeouts stay visible.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import get_args

import numpy as np
from pydantic import BaseModel, Field
from skillcore.records import PoolProblem, Verdict, VerdictStatus

from distill.judge import normalise_answer

STATUSES: tuple[str, ...] = get_args(VerdictStatus)


class MetricsError(ValueError):
    """Verdicts do not fit the problems (missing, unknown or repeated samples)."""


# ------------------------------------------------------------------------------------------ estimators
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` correct out of ``n`` samples: 1 - C(n-c, k) / C(n, k).

    Computed as a product, 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the large binomials.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_k(correct: Sequence[bool]) -> float:
    """Mean correctness over a problem's samples."""
    if len(correct) == 0:
        raise ValueError("avg@k needs at least one sample")
    return float(np.mean(np.asarray(correct, dtype=np.float64)))


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[str | None, bool]:
    """Majority vote over extracted answers (in sample order): (the winning answer, its verdict).

    Answers are grouped by distill.judge's normal form; samples without an answer do not vote; a tie goes
    to the group whose first sample came earliest. The group is correct when any of its samples was
    judged correct: its answers are equal, so differing verdicts can only come from judge timeouts or
    errors. No answer at all -> (None, False).
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} verdicts")
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    right: dict[str, bool] = defaultdict(bool)
    shown: dict[str, str] = {}
    for i, (answer, ok) in enumerate(zip(answers, correct, strict=True)):
        if answer is None:
            continue
        key = normalise_answer(answer)
        if not key:
            continue
        counts[key] += 1
        first.setdefault(key, i)
        shown.setdefault(key, answer.strip())
        right[key] = right[key] or bool(ok)
    if not counts:
        return None, False
    winner = min(counts, key=lambda key: (-counts[key], first[key]))
    return shown[winner], right[winner]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement, all at once."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of values")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci values must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.size, size=(n_resamples, data.size))
    means = data[index].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


# ------------------------------------------------------------------------------------------ scores
class MetricCI(BaseModel):
    value: float
    low: float
    high: float


class ProblemScore(BaseModel):
    """One problem's samples: n judged, c correct (over all n), and the @k metrics."""

    unique_id: str
    n: int
    c: int
    avg: float  # mean correctness over the first k samples
    pass_at_1: float
    pass_at_k: float
    majority_answer: str | None
    maj_correct: bool


class BenchmarkScore(BaseModel):
    name: str = ""
    n_problems: int
    samples_per_problem: int
    k: int
    confidence: float = 0.95
    avg_at_k: MetricCI
    pass_at_1: MetricCI
    pass_at_k: MetricCI
    maj_at_k: MetricCI
    status_counts: dict[str, int]
    problems: list[ProblemScore] = Field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Flat metrics named for MLflow (``avg_at_8``, ``avg_at_8_low``, ..., ``status/error``)."""
        out: dict[str, float] = {}
        for label, ci in self.labelled().items():
            out[label] = ci.value
            out[f"{label}_low"] = ci.low
            out[f"{label}_high"] = ci.high
        out["n_problems"] = float(self.n_problems)
        out.update({f"status/{status}": float(count) for status, count in self.status_counts.items()})
        return out

    def labelled(self) -> dict[str, MetricCI]:
        """The four metrics under their names for this k (``avg_at_8``, ``pass_at_1``, ...)."""
        return {
            f"avg_at_{self.k}": self.avg_at_k,
            "pass_at_1": self.pass_at_1,
            f"pass_at_{self.k}": self.pass_at_k,
            f"maj_at_{self.k}": self.maj_at_k,
        }


def score_benchmark(
    problems: Sequence[PoolProblem],
    verdicts: Sequence[Verdict],
    *,
    k: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    name: str = "",
) -> BenchmarkScore:
    """Score one benchmark from its problems and every sample's verdict.

    Every problem needs the same samples 0..n-1 (a missing one raises); ``k`` (default n) names the
    metrics: avg@k and maj@k read the first k samples, pass@k is the unbiased estimate from all n.
    """
    if not problems:
        raise MetricsError("no problems to score")
    order = [p.unique_id for p in problems]
    if len(set(order)) != len(order):
        dup = sorted(uid for uid, count in Counter(order).items() if count > 1)
        raise MetricsError(f"duplicate problem unique_id(s): {dup[:5]}")
    by_problem: dict[str, dict[int, Verdict]] = {uid: {} for uid in order}
    unknown: set[str] = set()
    for v in verdicts:
        slots = by_problem.get(v.unique_id)
        if slots is None:
            unknown.add(v.unique_id)
            continue
        if v.sample_index in slots:
            raise MetricsError(f"two verdicts for {v.unique_id!r} sample {v.sample_index}")
        slots[v.sample_index] = v
    if unknown:
        raise MetricsError(f"{len(unknown)} verdict id(s) match no problem, e.g. {sorted(unknown)[:5]}")
    n = max((max(s) + 1 for s in by_problem.values() if s), default=0)
    if n == 0:
        raise MetricsError("no verdicts for any problem")
    incomplete = {uid: sorted(set(range(n)) - set(s)) for uid, s in by_problem.items() if len(s) != n}
    if incomplete:
        shown = "; ".join(f"{uid} lacks samples {gaps[:8]}" for uid, gaps in list(incomplete.items())[:5])
        raise MetricsError(
            f"missing verdicts for {len(incomplete)} problem(s) ({n} samples expected): {shown}"
        )
    k = n if k is None else k
    if not 1 <= k <= n:
        raise MetricsError(f"k must be between 1 and the {n} samples per problem, got {k}")

    status_counts = dict.fromkeys(STATUSES, 0)
    rows: list[ProblemScore] = []
    for uid in order:
        samples = [by_problem[uid][i] for i in range(n)]
        oks = [v.correct for v in samples]
        for v in samples:
            status_counts[v.status] += 1
        c = sum(oks)
        answer, maj_ok = maj_at_k([v.extracted_answer for v in samples[:k]], oks[:k])
        rows.append(
            ProblemScore(
                unique_id=uid,
                n=n,
                c=c,
                avg=avg_at_k(oks[:k]),
                pass_at_1=pass_at_k(n, c, 1),
                pass_at_k=pass_at_k(n, c, k),
                majority_answer=answer,
                maj_correct=maj_ok,
            )
        )

    def summarise(values: list[float]) -> MetricCI:
        low, high = bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
        return MetricCI(value=float(np.mean(values)), low=low, high=high)

    return BenchmarkScore(
        name=name,
        n_problems=len(rows),
        samples_per_problem=n,
        k=k,
        confidence=confidence,
        avg_at_k=summarise([r.avg for r in rows]),
        pass_at_1=summarise([r.pass_at_1 for r in rows]),
        pass_at_k=summarise([r.pass_at_k for r in rows]),
        maj_at_k=summarise([float(r.maj_correct) for r in rows]),
        status_counts=status_counts,
        problems=rows,
    )


def average_scores(scores: Mapping[str, BenchmarkScore]) -> dict[str, float]:
    """Macro average over benchmarks of each metric (each benchmark weighs the same, whatever its size).

    Keys are the metrics' names for the shared k (``avg_at_8``, ``pass_at_1``, ``pass_at_8``,
    ``maj_at_8``); benchmarks scored with different k cannot be averaged together.
    """
    if not scores:
        raise MetricsError("no benchmark scores to average")
    ks = {score.k for score in scores.values()}
    if len(ks) != 1:
        raise MetricsError(
            f"benchmarks were scored with different k {sorted(ks)}: averages would mix metrics"
        )
    labelled = [score.labelled() for score in scores.values()]
    return {label: float(np.mean([entry[label].value for entry in labelled])) for label in labelled[0]}
