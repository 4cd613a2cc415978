"""The arm comparison: the paper's arms (selection x fine-tuning) and the weight guards, over several seeds,
on the same pool, profile and student; a results table, paired differences against random SFT with
bootstrap intervals, and per-skill gains.

An arm is a selection strategy, plain or skill-aware targets, and optional selection settings (the weight
guards: the paper's T = 1, w_max = 1000 against the tempered default). A seed draws the selection and the
training order; the data, tags, profile and the base evaluation are shared by every arm and seed.

Skill naming (``naming_table``): per arm, how often the fine-tuned student's own Skills block names the
problem's skills, and its accuracy when it does and when it does not (``distill.eval.naming_report``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from distill.eval.analysis import NamingCounts

BASELINE = "random-plain"


@dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    skill_aware: bool
    select: dict[str, Any] = field(default_factory=dict)  # SelectConfig fields besides strategy and seed

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.select.items())
        return f"{self.strategy} selection, {'skill-aware' if self.skill_aware else 'plain'} SFT" + (
            f" ({extra})" if extra else ""
        )


ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("random-plain", "random", False),
        Arm("skill-plain", "skill", False),
        Arm("random-skill", "random", True),
        Arm("skill-skill", "skill", True),
        # the paper's weights, unguarded: T = 1, w_max = 1000 (the default arms use the preset's guard)
        Arm("skill-plain-paperw", "skill", False, {"temperature": 1.0, "w_max": 1000.0}),
        Arm("skill-skill-paperw", "skill", True, {"temperature": 1.0, "w_max": 1000.0}),
    )
}
DEFAULT_ARMS = ("random-plain", "skill-plain", "random-skill", "skill-skill", "skill-plain-paperw")


def parse_arms(text: str | None) -> list[Arm]:
    names = [n.strip() for n in (text or ",".join(DEFAULT_ARMS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    if BASELINE not in names:
        names.insert(0, BASELINE)  # every arm is compared with random SFT
    return [ARMS[n] for n in names]


# ----------------------------------------------------------------------------------- per-problem scores
Scores = dict[str, dict[str, float]]  # benchmark -> unique_id -> mean correctness over samples


def problem_scores(verdicts_by_bench: Mapping[str, Sequence[Any]]) -> Scores:
    """Per-problem mean correctness from a benchmark's verdicts (several samples average)."""
    out: Scores = {}
    for bench, verdicts in verdicts_by_bench.items():
        hits: dict[str, list[float]] = defaultdict(list)
        for v in verdicts:
            hits[v.unique_id].append(1.0 if v.correct else 0.0)
        out[bench] = {uid: float(np.mean(h)) for uid, h in hits.items()}
    return out


def macro_average(scores: Scores) -> float:
    """The paper's headline: the mean over benchmarks of each benchmark's mean over problems."""
    return float(np.mean([np.mean(list(s.values())) for s in scores.values()]))


# ----------------------------------------------------------------------------------- the results table
def results_table(runs: Mapping[tuple[str, int], Scores]) -> pd.DataFrame:
    """One row per arm: mean and seed spread (half the range) of avg@k per benchmark and on average."""
    rows = []
    arms = sorted({arm for arm, _ in runs}, key=lambda a: list(ARMS).index(a) if a in ARMS else 99)
    for arm in arms:
        seeds = sorted(seed for a, seed in runs if a == arm)
        per_seed = [runs[(arm, s)] for s in seeds]
        row: dict[str, Any] = {"arm": arm, "seeds": len(seeds)}
        for bench in per_seed[0]:
            values = [float(np.mean(list(p[bench].values()))) for p in per_seed]
            row[f"{bench}"] = float(np.mean(values))
            row[f"{bench}_spread"] = (max(values) - min(values)) / 2
        averages = [macro_average(p) for p in per_seed]
        row["average"] = float(np.mean(averages))
        row["average_spread"] = (max(averages) - min(averages)) / 2
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(
    arm: Mapping[int, Scores], baseline: Mapping[int, Scores], *, n_resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Arm minus baseline on the same problems, seed by seed: the macro-averaged difference, and a 95%
    percentile bootstrap interval that resamples problems within each benchmark (the same problems for
    both arms and every seed, so the pairing is kept)."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        raise ValueError("no seed shared by the arm and the baseline")
    benches = list(baseline[seeds[0]])
    diffs: dict[str, np.ndarray] = {}
    for bench in benches:
        ids = sorted(baseline[seeds[0]][bench])
        # per problem: the difference averaged over seeds
        diffs[bench] = np.mean(
            [[arm[s][bench][uid] - baseline[s][bench][uid] for uid in ids] for s in seeds], axis=0
        )
    point = round(float(np.mean([d.mean() for d in diffs.values()])), 12)  # no "-0.00" from float noise
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_resamples)
    for d in diffs.values():
        picks = rng.integers(0, len(d), size=(n_resamples, len(d)))
        boots += d[picks].mean(axis=1)
    boots /= len(diffs)
    low, high = np.percentile(boots, [2.5, 97.5])
    return {
        "difference": point,
        "low": float(low),
        "high": float(high),
        "seeds": len(seeds),
        "problems": int(sum(len(d) for d in diffs.values())),
    }


def paired_table(runs: Mapping[tuple[str, int], Scores], *, baseline: str = BASELINE) -> pd.DataFrame:
    base = {seed: s for (arm, seed), s in runs.items() if arm == baseline}
    rows = []
    for name in dict.fromkeys(arm for arm, _ in runs):
        if name == baseline:
            continue
        mine = {seed: s for (arm, seed), s in runs.items() if arm == name}
        rows.append({"arm": name, "vs": baseline, **paired_difference(mine, base)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- per-skill gains
def leaf_accuracy(
    scores: Scores, chains: Mapping[str, Mapping[str, Sequence[Sequence[str]]]]
) -> dict[str, float]:
    """Accuracy per leaf over the benchmark problems whose chains reach it (``chains``: bench -> id -> chains)."""
    hits: dict[str, list[float]] = defaultdict(list)
    for bench, per_problem in scores.items():
        for uid, value in per_problem.items():
            for leaf in {c[-1] for c in chains.get(bench, {}).get(uid, []) if c}:
                hits[leaf].append(value)
    return {leaf: float(np.mean(v)) for leaf, v in hits.items()}


def skill_gain_table(
    runs: Mapping[tuple[str, int], Scores],
    base: Scores,
    chains: Mapping[str, Mapping[str, Sequence[Sequence[str]]]],
) -> pd.DataFrame:
    """Per leaf: the base accuracy and each arm's gain over it (mean over seeds), in points of accuracy."""
    before = leaf_accuracy(base, chains)
    frame = pd.DataFrame({"leaf": sorted(before), "base": [before[k] for k in sorted(before)]})
    for name in dict.fromkeys(arm for arm, _ in runs):
        per_seed = [leaf_accuracy(s, chains) for (arm, _), s in runs.items() if arm == name]
        frame[name] = [
            float(np.mean([p.get(leaf, math.nan) for p in per_seed])) - before[leaf] for leaf in frame["leaf"]
        ]
    return frame


def plot_skill_gains(frame: pd.DataFrame, *, title: str = "Per-skill gain over the base student") -> Any:
    """Horizontal bars: each leaf's accuracy gain per arm (points), leaves ordered by base accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = [c for c in frame.columns if c not in ("leaf", "base")]
    ordered = frame.sort_values("base")
    fig = Figure(figsize=(8.0, 0.32 * len(ordered) + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    height = 0.8 / max(len(arms), 1)
    y = np.arange(len(ordered))
    for i, arm in enumerate(arms):
        ax.barh(y + i * height - 0.4 + height / 2, ordered[arm] * 100.0, height=height, label=arm)
    ax.set_yticks(
        y, [f"{leaf} ({b:.0%})" for leaf, b in zip(ordered["leaf"], ordered["base"], strict=True)], fontsize=7
    )
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("accuracy gain over the base student (points; base accuracy in brackets)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------------- skill naming
NAMING_COLUMNS = [
    "arm",
    "skill_aware",
    "seeds",
    "answers",
    "named_right",
    "block_rate",
    "rate",
    "acc_named_right",
    "acc_named_wrong",
]


def naming_table(naming: Mapping[tuple[str, int], NamingCounts], arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm (in ``arms``' order) that has naming counts: the block rate, the naming rate and the
    accuracy of the answers that named the problem right and of the others (a wrong block or none), each
    the mean over seeds (a seed where a group is empty is left out of that mean; NaN when every seed's
    is); ``answers`` and ``named_right`` are totals over the seeds. Plain arms are listed too: their block
    rate should be about 0."""
    rows = []
    for arm in arms:
        per_seed = [counts for (name, _), counts in sorted(naming.items()) if name == arm.name]
        if not per_seed:
            continue
        row: dict[str, Any] = {
            "arm": arm.name,
            "skill_aware": arm.skill_aware,
            "seeds": len(per_seed),
            "answers": sum(c.answers for c in per_seed),
            "named_right": sum(c.named_right for c in per_seed),
        }
        for key in ("block_rate", "rate", "acc_named_right", "acc_named_wrong"):
            values = [float(getattr(c, key)) for c in per_seed]
            known = [v for v in values if math.isfinite(v)]
            row[key] = float(np.mean(known)) if known else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=NAMING_COLUMNS)


def naming_markdown(frame: pd.DataFrame) -> list[str]:
    """The naming table's lines for ``results.md``."""

    def pct(value: float) -> str:
        return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}"

    lines = [
        "| arm | targets | seeds | block (%) | named right (%) | acc. named right (%) | "
        "acc. named wrong or none (%) | answers | named right |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in frame.iterrows():
        lines.append(
            f"| {row['arm']} | {'skill-aware' if row['skill_aware'] else 'plain'} | {row['seeds']} | "
            f"{pct(row['block_rate'])} | {pct(row['rate'])} | {pct(row['acc_named_right'])} | "
            f"{pct(row['acc_named_wrong'])} | {row['answers']} | {row['named_right']} |"
        )
    return [
        *lines,
        "",
        "Skill naming of the fine-tuned students, mean over seeds (answers and named right: totals). Named "
        "right: the Skills block names one of the problem's chains in full, or its leaf alone.",
        "",
    ]


# ----------------------------------------------------------------------------------- markdown
def results_markdown(
    table: pd.DataFrame, paired: pd.DataFrame, arms: Sequence[Arm], naming: pd.DataFrame | None = None
) -> str:
    benches = [
        c
        for c in table.columns
        if c not in ("arm", "seeds", "average", "average_spread") and not c.endswith("_spread")
    ]
    lines = [
        "| arm | seeds | " + " | ".join(benches) + " | average |",
        "|---|---|" + "---|" * (len(benches) + 1),
    ]
    for _, row in table.iterrows():
        cells = [f"{100 * row[b]:.1f} ± {100 * row[f'{b}_spread']:.1f}" for b in [*benches, "average"]]
        lines.append(f"| {row['arm']} | {row['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over seeds ± half the range, avg@k in percent.", ""]
    if len(paired):
        lines += [
            "| arm | vs | difference (points) | 95% CI | seeds | problems |",
            "|---|---|---|---|---|---|",
        ]
        for _, row in paired.iterrows():
            lines.append(
                f"| {row['arm']} | {row['vs']} | {100 * row['difference']:+.2f} | "
                f"[{100 * row['low']:+.2f}, {100 * row['high']:+.2f}] | {row['seeds']} | {row['problems']} |"
            )
        lines += [
            "",
            "Paired on the same problems, seed by seed; bootstrap over problems within each benchmark.",
            "",
        ]
    if naming is not None and len(naming):
        lines += naming_markdown(naming)
    lines += ["Arms:", *[f"- `{a.name}`: {a.describe()}" for a in arms], ""]
    return "\n".join(lines)
