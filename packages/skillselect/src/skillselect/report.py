"""The selection report: a target-vs-actual figure, files on disk, and MLflow logging."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from skillcore.io import atomic_write_text, write_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from skillselect.core import Selection

FIGURE_FILE = "target_vs_selected.png"


def selection_figure(selection: Selection, *, top: int = 40) -> Figure:
    """Left: target, selected and pool share for the ``top`` leaves by target share (then by selected
    share). Right: selected vs target share for every leaf, with the diagonal."""
    from matplotlib.figure import Figure

    report = selection.report
    fig = Figure(figsize=(14, 6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])
    order = np.lexsort((-report["selected_share"].to_numpy(), -report["target_share"].to_numpy()))
    shown = report.iloc[order[:top]]
    x = np.arange(len(shown))
    width = 0.28
    left.bar(x - width, shown["target_share"], width, label="target")
    left.bar(x, shown["selected_share"], width, label="selected")
    left.bar(x + width, shown["pool_share"], width, label="pool", alpha=0.6)
    labels = [textwrap.shorten(c.split("->")[-1], 28, placeholder="…") for c in shown["chain"]]
    left.set_xticks(x, labels, rotation=75, ha="right", fontsize=7)
    left.set_ylabel("share of leaf occurrences")
    summary = selection.summary
    left.set_title(
        f"{summary['strategy']}: {summary['n_selected']} of {summary['n_pool']} problems, "
        f"top {len(shown)} of {len(report)} leaves by target share"
    )
    left.legend()
    right.scatter(report["target_share"], report["selected_share"], s=8, alpha=0.6)
    high = float(max(report["target_share"].max(), report["selected_share"].max(), 1e-9)) * 1.05
    right.plot([0, high], [0, high], color="grey", linewidth=0.8, linestyle="--")
    right.set_xlim(0, high)
    right.set_ylim(0, high)
    right.set_xlabel("target share")
    right.set_ylabel("selected share")
    right.set_title(f"all leaves (L2 {summary['l2_to_target']:.4f}, TV {summary['tv_to_target']:.3f})")
    return fig


def _summary_json(selection: Selection) -> dict[str, Any]:
    return {"summary": selection.summary, "config": selection.config.model_dump(mode="json")}


def save_selection(
    selection: Selection, *, out: str | Path | None = None, report_dir: str | Path | None = None
) -> None:
    """Write the selected rows (JSONL, selection order) and/or the report folder:
    ``report.csv`` (per leaf), ``summary.json`` (summary + config), ``selected_ids.txt`` and the figure."""
    if out is not None:
        write_jsonl(out, selection.records())
    if report_dir is not None:
        folder = Path(report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "report.csv", selection.report.to_csv(index=False))
        atomic_write_text(folder / "summary.json", json.dumps(_summary_json(selection), indent=1))
        atomic_write_text(folder / "selected_ids.txt", "".join(f"{u}\n" for u in selection.unique_ids))
        selection_figure(selection).savefig(folder / FIGURE_FILE, dpi=110)


def log_selection(
    selection: Selection,
    *,
    dataset_name: str | None = None,
    source: str | None = None,
    artifact: bool = True,
    experiment: str | None = None,
) -> str:
    """Log a selection to MLflow in a ``select`` stage run (nested under the active run, if any):
    the config as params, the numeric summary as metrics, the per-leaf report as a table and CSV, the
    summary JSON, the target-vs-selected figure, and the selected rows as an ``mlflow.data`` dataset
    with context ``training`` (stored as a JSONL artifact too when ``artifact``). Returns the run id."""
    import mlflow
    from skillcore import tracking

    config = selection.config.model_dump(mode="json")
    params = {k: v for k, v in config.items() if k != "exclude_ids"}
    params["n_exclude_ids"] = len(config["exclude_ids"])
    name = dataset_name or f"selected-{selection.summary['strategy']}-k{selection.summary['k_requested']}"
    run_name = f"select:{selection.summary['strategy']}"
    with tracking.stage_run("select", params=params, experiment=experiment, run_name=run_name) as run:
        mlflow.set_tag("skillselect.strategy", selection.summary["strategy"])
        metrics = {
            k: float(v)
            for k, v in selection.summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "seed"
        }
        mlflow.log_metrics(metrics)
        tracking.log_metrics_table(selection.report, "select/report.json")
        mlflow.log_text(selection.report.to_csv(index=False), "select/report.csv")
        tracking.log_json(_summary_json(selection), "select/summary.json")
        tracking.log_figure(selection_figure(selection), f"select/{FIGURE_FILE}")
        tracking.log_dataset(
            selection.records(), name=name, context="training", source=source, artifact=artifact
        )
        return str(run.info.run_id)
