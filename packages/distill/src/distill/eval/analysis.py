"""Per-skill analysis: how each leaf skill's benchmark accuracy moved with fine-tuning, and whether the
leaves that received more of the selected data gained more (the mechanism the paper's selection bets on).

Accuracy per leaf follows skillcore's profile rule (a problem counts once at every node its chains reach;
its judged samples and correct samples are added there), so a benchmark's per-skill numbers and the
student profile's are computed the same way.

Skill naming (``naming_report``): how often a skill-aware student's own Skills block names the problem's
skills (``distill.formatting.names_right``), and how accurate its answers are when it does and when it
does not.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from skillcore.profile import SkillProfile, UnknownPolicy
from skillcore.records import Attempt, TaggedProblem, Verdict
from skillcore.tree import SkillTree, format_chain, parse_chain

from distill.formatting import FormatConfig, names_right, parse_skills_block

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

GAIN_COLUMNS = [
    "leaf",
    "name",
    "problems",
    "n_before",
    "n_after",
    "correct_before",
    "correct_after",
    "acc_before",
    "acc_after",
    "gain",
    "share",
]


def leaf_accuracy(
    tree: SkillTree,
    problems: Iterable[TaggedProblem],
    verdicts: Iterable[Verdict],
    *,
    unknown: UnknownPolicy = "skip",
) -> dict[str, dict[str, float | int]]:
    """Leaf chain ('a->b') -> {"problems", "n" (judged samples), "correct", "accuracy"}, for every leaf
    with at least one judged sample, in the tree's order. Chains outside the tree are skipped by default."""
    profile = SkillProfile.from_records(tree, problems, verdicts, unknown=unknown)
    out: dict[str, dict[str, float | int]] = {}
    for i in profile.tree.leaf_indices:
        if profile.attempts[i] > 0:
            out[profile.tree.nodes[int(i)].chain_text] = {
                "problems": int(profile.problems[i]),
                "n": int(profile.attempts[i]),
                "correct": int(profile.correct[i]),
                "accuracy": float(profile.accuracy[i]),
            }
    return out


def selection_share(selected_problems: Sequence[TaggedProblem]) -> dict[str, float]:
    """Leaf chain -> fraction of the selected problems with a chain naming that leaf (a problem with two
    chains counts for both leaves, so shares can sum past 1)."""
    if not selected_problems:
        return {}
    counts: Counter[str] = Counter()
    for problem in selected_problems:
        counts.update({format_chain(chain) for chain in problem.chains})
    total = len(selected_problems)
    return {leaf: counts[leaf] / total for leaf in sorted(counts)}


def skill_gains(
    tree: SkillTree,
    problems: Sequence[TaggedProblem],
    before: Sequence[Verdict],
    after: Sequence[Verdict],
    selection_share: Mapping[str, float],
) -> pd.DataFrame:
    """One row per leaf judged before or after: accuracies, gain (after - before) and the selection's share.

    A leaf judged on one side only has a NaN accuracy (and gain) on the other; a leaf the selection never
    named has share 0.
    """
    acc_before = leaf_accuracy(tree, problems, before)
    acc_after = leaf_accuracy(tree, problems, after)
    leaves = {node.chain_text for node in tree.leaves()}
    stray = sorted(set(selection_share) - leaves)
    if stray:
        log.warning("%d selection share key(s) name no leaf of the tree, e.g. %s", len(stray), stray[:3])
    rows: list[dict[str, Any]] = []
    for node in tree.leaves():
        leaf = node.chain_text
        b, a = acc_before.get(leaf), acc_after.get(leaf)
        if b is None and a is None:
            continue
        before_acc = float(b["accuracy"]) if b else math.nan
        after_acc = float(a["accuracy"]) if a else math.nan
        rows.append(
            {
                "leaf": leaf,
                "name": node.name,
                "problems": int(max(b["problems"] if b else 0, a["problems"] if a else 0)),
                "n_before": int(b["n"]) if b else 0,
                "n_after": int(a["n"]) if a else 0,
                "correct_before": int(b["correct"]) if b else 0,
                "correct_after": int(a["correct"]) if a else 0,
                "acc_before": before_acc,
                "acc_after": after_acc,
                "gain": after_acc - before_acc,
                "share": float(selection_share.get(leaf, 0.0)),
            }
        )
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


def gain_correlation(frame: pd.DataFrame) -> dict[str, float | int | None]:
    """Pearson and Spearman correlation of gain with share over the leaves where both are known.

    A correlation (and its p-value) is None with fewer than 3 leaves or a constant column, where it is
    undefined rather than zero.
    """
    from scipy import stats

    gain = frame["gain"].to_numpy(dtype=np.float64)
    share = frame["share"].to_numpy(dtype=np.float64)
    ok = np.isfinite(gain) & np.isfinite(share)
    gain, share = gain[ok], share[ok]
    out: dict[str, float | int | None] = {
        "n_leaves": int(ok.sum()),
        "pearson": None,
        "pearson_p": None,
        "spearman": None,
        "spearman_p": None,
    }
    if gain.size < 3 or np.ptp(gain) == 0 or np.ptp(share) == 0:
        return out
    pearson = stats.pearsonr(share, gain)
    spearman = stats.spearmanr(share, gain)
    for key, value in (
        ("pearson", pearson.statistic),
        ("pearson_p", pearson.pvalue),
        ("spearman", spearman.statistic),
        ("spearman_p", spearman.pvalue),
    ):
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def _short(leaf: str) -> str:
    return parse_chain(leaf)[-1]


def _corr_text(corr: Mapping[str, float | int | None]) -> str:
    def fmt(value: float | int | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    return f"Pearson r = {fmt(corr['pearson'])}, Spearman rho = {fmt(corr['spearman'])}, {corr['n_leaves']} leaves"


def plot_gains(frame: pd.DataFrame, *, title: str = "Per-skill gain vs selection share") -> Figure:
    """Scatter of each leaf's accuracy gain against its share of the selected data, leaves labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders without a display, and leaves pyplot's global state alone
    ax = fig.add_subplot()
    known = frame[np.isfinite(frame["gain"].to_numpy(dtype=np.float64))]
    ax.scatter(known["share"] * 100.0, known["gain"] * 100.0, s=28, color="tab:blue", zorder=3)
    for share, gain, leaf in zip(known["share"], known["gain"], known["leaf"], strict=True):
        ax.annotate(
            _short(leaf), (share * 100.0, gain * 100.0), textcoords="offset points", xytext=(4, 3), fontsize=7
        )
    ax.axhline(0.0, color="grey", linewidth=0.8, zorder=1)
    ax.set_xlabel("share of selected examples naming the leaf (%)")
    ax.set_ylabel("accuracy gain after fine-tuning (points)")
    ax.set_title(f"{title}\n{_corr_text(gain_correlation(frame))}", fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig


def gains_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of the leaves by gain (largest first), with the correlation underneath."""

    def pct(value: float) -> str:
        return "n/a" if not math.isfinite(value) else f"{100.0 * value:.1f}"

    def signed(value: float) -> str:
        return "n/a" if not math.isfinite(value) else f"{100.0 * value:+.1f}"

    lines = [
        "| leaf | problems | before (%) | after (%) | gain (points) | share (%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ordered = frame.sort_values(["gain", "leaf"], ascending=[False, True], na_position="last")
    for row in ordered.itertuples(index=False):
        lines.append(
            f"| {row.leaf} | {row.problems} | {pct(row.acc_before)} | {pct(row.acc_after)} | "
            f"{signed(row.gain)} | {pct(row.share)} |"
        )
    lines.append("")
    lines.append(_corr_text(gain_correlation(frame)))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- skill naming
NAMING_COLUMNS = [
    "benchmark",
    "answers",
    "named",
    "named_right",
    "correct",
    "correct_named_right",
    "correct_named_wrong",
    "block_rate",
    "rate",
    "accuracy",
    "acc_named_right",
    "acc_named_wrong",
]


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


@dataclass(frozen=True)
class NamingCounts:
    """Skill naming over a set of judged answers. An answer is ``named`` when it writes a Skills block,
    ``named_right`` when the block names the problem right (``distill.formatting.names_right``); "named
    wrong" is every other answer: a wrong block or none. Ratios over an empty group are NaN."""

    answers: int = 0
    named: int = 0
    named_right: int = 0
    correct: int = 0
    correct_named_right: int = 0  # correct answers among the named-right ones

    def __add__(self, other: NamingCounts) -> NamingCounts:
        return NamingCounts(
            self.answers + other.answers,
            self.named + other.named,
            self.named_right + other.named_right,
            self.correct + other.correct,
            self.correct_named_right + other.correct_named_right,
        )

    @property
    def named_wrong(self) -> int:
        return self.answers - self.named_right

    @property
    def correct_named_wrong(self) -> int:
        return self.correct - self.correct_named_right

    @property
    def rate(self) -> float:
        """The naming rate: named right / answers."""
        return _ratio(self.named_right, self.answers)

    @property
    def block_rate(self) -> float:
        """Answers that write a Skills block / answers."""
        return _ratio(self.named, self.answers)

    @property
    def accuracy(self) -> float:
        return _ratio(self.correct, self.answers)

    @property
    def acc_named_right(self) -> float:
        return _ratio(self.correct_named_right, self.named_right)

    @property
    def acc_named_wrong(self) -> float:
        """Accuracy of the answers that did not name the problem right (a wrong block or none)."""
        return _ratio(self.correct_named_wrong, self.named_wrong)

    def as_dict(self) -> dict[str, float | int]:
        return {column: getattr(self, column) for column in NAMING_COLUMNS[1:]}


@dataclass(frozen=True)
class NamingReport:
    """Skill naming per benchmark; ``overall`` pools every answer (counts add up). ``untagged``: answers
    left out because their problem carries no chain (their naming cannot be judged)."""

    benchmarks: dict[str, NamingCounts] = field(default_factory=dict)
    untagged: int = 0

    @property
    def overall(self) -> NamingCounts:
        return sum(self.benchmarks.values(), NamingCounts())

    def frame(self) -> pd.DataFrame:
        """One row per benchmark, then ``overall``, with the columns of ``NAMING_COLUMNS``."""
        rows = [{"benchmark": name, **c.as_dict()} for name, c in self.benchmarks.items()]
        rows.append({"benchmark": "overall", **self.overall.as_dict()})
        return pd.DataFrame(rows, columns=NAMING_COLUMNS)

    def metrics(self, prefix: str = "naming", *, block_only: bool = False) -> dict[str, float]:
        """Flat MLflow metrics: ``naming/rate``, ``naming/block_rate``, ``naming/acc_named_right``,
        ``naming/acc_named_wrong``, ``naming/answers``, ``naming/named``, ``naming/named_right`` overall and
        ``naming/<benchmark>/<same>`` per benchmark; NaN ratios are left out. ``block_only``: the block rate
        and counts only (a plain arm, which writes no block by design)."""
        keys = (
            ("block_rate", "answers", "named")
            if block_only
            else (
                "rate",
                "block_rate",
                "acc_named_right",
                "acc_named_wrong",
                "answers",
                "named",
                "named_right",
            )
        )
        out: dict[str, float] = {}
        for scope, counts in [("", self.overall), *((f"{n}/", c) for n, c in self.benchmarks.items())]:
            for key in keys:
                value = float(getattr(counts, key))
                if math.isfinite(value):
                    out[f"{prefix}/{scope}{key}"] = value
        return out

    def markdown(self) -> str:
        """A Markdown table: per benchmark and overall, the block and naming rates and the accuracy of the
        answers that named right and wrong (their counts in brackets)."""

        def pct(value: float) -> str:
            return "n/a" if not math.isfinite(value) else f"{100.0 * value:.1f}"

        lines = [
            "| benchmark | answers | block (%) | named right (%) | accuracy (%) | acc. named right (%) "
            "| acc. named wrong or none (%) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, c in [*self.benchmarks.items(), ("**overall**", self.overall)]:
            lines.append(
                f"| {name} | {c.answers} | {pct(c.block_rate)} | {pct(c.rate)} | {pct(c.accuracy)} | "
                f"{pct(c.acc_named_right)} ({c.named_right}) | {pct(c.acc_named_wrong)} ({c.named_wrong}) |"
            )
        lines.append("")
        lines.append(
            "Named right: the Skills block names one of the problem's chains in full, or its leaf alone."
        )
        if self.untagged:
            lines.append(f"{self.untagged} answer(s) to problems without skill chains left out.")
        return "\n".join(lines) + "\n"


def naming_report(
    problems: Mapping[str, Sequence[TaggedProblem]],
    attempts: Mapping[str, Iterable[Attempt]],
    verdicts: Mapping[str, Iterable[Verdict]],
    *,
    fmt: FormatConfig | None = None,
) -> NamingReport:
    """Skill naming of a student's judged answers, per benchmark (``problems``, ``attempts`` and
    ``verdicts`` keyed by benchmark, as the evaluation saves them).

    An answer is a verdict with its attempt (matched on ``unique_id`` and ``sample_index``; the first of
    duplicates wins, as when the rollout resumes). Its Skills block is read from the saved response
    (``parse_skills_block``) and compared with its problem's chains as ``fmt`` writes them (``names_right``;
    ``fmt`` None: whole chains). Answers to problems with no chain are counted in ``untagged`` only; answers
    to problems not given are ignored.
    """
    out: dict[str, NamingCounts] = {}
    untagged = 0
    for bench, rows in problems.items():
        chains = {p.unique_id: p.chains for p in rows}
        responses: dict[tuple[str, int], str] = {}
        for a in attempts.get(bench, ()):
            responses.setdefault((a.unique_id, a.sample_index), a.response)
        seen: set[tuple[str, int]] = set()
        counts = [0, 0, 0, 0, 0]
        missing = 0
        for v in verdicts.get(bench, ()):
            key = (v.unique_id, v.sample_index)
            if key in seen or v.unique_id not in chains:
                continue
            seen.add(key)
            if not chains[v.unique_id]:
                untagged += 1
                continue
            if key not in responses:
                missing += 1
                continue
            named = parse_skills_block(responses[key])
            right = names_right(named, chains[v.unique_id], fmt)
            for i, hit in enumerate((True, named is not None, right, v.correct, v.correct and right)):
                counts[i] += int(hit)
        if missing:
            log.warning("%s: %d verdict(s) without a saved answer left out of the naming", bench, missing)
        out[bench] = NamingCounts(*counts)
    return NamingReport(out, untagged)
