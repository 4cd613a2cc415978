"""Per-skill analysis: how each leaf skill's benchmark accuracy moved with fine-tuning, and whether the
leaves that received more of the selected data gained more (the mechanism the paper's selection bets on).

Accuracy per leaf follows skillcore's profile rule (a problem counts once at every node its chains reach;
its judged samples and correct samples are added there), so a benchmark's per-skill numbers and the
student profile's are computed the same way.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from skillcore.profile import SkillProfile, UnknownPolicy
from skillcore.records import TaggedProblem, Verdict
from skillcore.tree import SkillTree, format_chain, parse_chain

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
