"""``skillselect`` command line: select K problems from a tagged pool and write them with a report."""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, ParamSpec

import typer
from skillcore.cli_options import TreeDuplicatesOpt, TreeRawLevelsOpt
from skillcore.io import JsonlError
from skillcore.profile import ProfileError, SkillProfile
from skillcore.tree import SkillTree, SkillTreeError

from skillselect.core import STRATEGIES, SelectConfig, SelectionError, select
from skillselect.pool import Pool, PoolError, read_ids

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

_ERRORS = (SelectionError, PoolError, SkillTreeError, JsonlError, ProfileError, FileNotFoundError, ValueError)
P = ParamSpec("P")


def _unfreezing(command: Callable[P, None]) -> Callable[P, None]:
    """Run a command that may ``gc.freeze()`` what it loaded, and give the collector everything back after
    (the command may run inside another program, as under typer's CliRunner)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        finally:
            gc.unfreeze()

    return run


@app.command("select")
@_unfreezing
def select_command(
    pool: Annotated[Path, typer.Option(help="tagged pool JSONL (skillcore TaggedProblem rows)")],
    tree: Annotated[Path, typer.Option(help="skill tree JSON/YAML")],
    tree_duplicates: TreeDuplicatesOpt = "error",
    tree_raw_levels: TreeRawLevelsOpt = "instances",
    k: Annotated[int, typer.Option(help="number of problems to select")] = 1000,
    strategy: Annotated[str, typer.Option(help=f"one of: {', '.join(STRATEGIES)}")] = "skill",
    verdicts: Annotated[Path | None, typer.Option(help="verdicts JSONL (skillcore Verdict rows)")] = None,
    profile: Annotated[
        Path | None, typer.Option(help="saved skillcore SkillProfile JSON (accuracy source)")
    ] = None,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option(help="write the selected rows here (JSONL)")] = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="write report.csv, summary.json, ids and the figure here")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", "-T", help="weight temperature T")] = 1.0,
    w_max: Annotated[float, typer.Option(help="weight cap: w = min(acc^-T, w_max^T)")] = 1000.0,
    posterior: Annotated[bool, typer.Option(help="use the Beta-posterior mean accuracy")] = False,
    prior: Annotated[str | None, typer.Option(help="Beta prior 'alpha,beta' for --posterior")] = None,
    smoothing: Annotated[float, typer.Option(help="add-s (Laplace) smoothing of leaf accuracy")] = 0.0,
    correct_portion: Annotated[
        float | None, typer.Option(help="share of student-correct problems (0..1)")
    ] = None,
    skill: Annotated[
        list[str] | None, typer.Option(help="restrict to this skill path 'a->b' (repeatable)")
    ] = None,
    max_depth: Annotated[int | None, typer.Option(help="cut the tree at this depth")] = None,
    exclude: Annotated[
        list[Path] | None, typer.Option(help="file of held-out ids, JSONL or one per line (repeatable)")
    ] = None,
    difficulty_field: Annotated[str | None, typer.Option(help="metadata field for 'difficulty'")] = None,
    difficulty_low: float = 0.25,
    difficulty_high: float = 0.625,
    allow_partial: Annotated[bool, typer.Option(help="return fewer than K instead of failing")] = False,
    unknown_chains: Annotated[str, typer.Option(help="'error' or 'skip' chains not in the tree")] = "error",
    candidates: Annotated[
        str,
        typer.Option(
            help="'all': draw from every tagged problem (leaf accuracy from the judged ones); "
            "'judged': only from problems with verdicts"
        ),
    ] = "all",
    mlflow: Annotated[bool, typer.Option(help="log the selection to MLflow (MLFLOW_TRACKING_URI)")] = False,
) -> None:
    """Select K problems; print the summary as JSON."""
    try:
        skill_tree = SkillTree.load(tree, duplicates=tree_duplicates, raw_levels=tree_raw_levels)
        data = Pool.load(pool, verdicts)
        # the pool lives as long as the command: keep the collector from scanning its million objects
        # again and again (those collections took 0.1-0.3 s of the command at 100K problems)
        gc.freeze()
        loaded = SkillProfile.load(profile, skill_tree) if profile is not None else None
        excluded = [uid for path in exclude or [] for uid in read_ids(path)]
        config = SelectConfig(
            strategy=strategy,
            k=k,
            seed=seed,
            temperature=temperature,
            w_max=w_max,
            use_posterior=posterior,
            prior=_parse_prior(prior),
            smoothing=smoothing,
            correct_portion=correct_portion,
            skills=skill or None,
            max_depth=max_depth,
            exclude_ids=excluded,
            difficulty_field=difficulty_field,
            difficulty_band=(difficulty_low, difficulty_high),
            allow_partial=allow_partial,
            unknown_chains=_unknown(unknown_chains),
            candidates=_candidates(candidates),
        )
        selection = select(data, skill_tree, config, profile=loaded)
    except _ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    selection.save(out=out, report_dir=report_dir)
    if mlflow:
        from skillcore.tracking import tracking_store

        typer.echo(tracking_store().describe(), err=True)
        from skillselect.report import log_selection

        run_id = log_selection(selection, source=str(pool.resolve()))
        selection.summary["mlflow_run_id"] = run_id
    typer.echo(json.dumps(selection.summary, indent=1))
    typer.echo(_k_over_candidates(selection.summary), err=True)


@app.command("strategies")
def strategies_command() -> None:
    """List the registered strategies."""
    for spec in STRATEGIES.values():
        needs = " (needs verdicts or a profile)" if spec.needs_accuracy else ""
        typer.echo(f"{spec.name}: {spec.description}{needs}")


def _parse_prior(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--prior must be 'alpha,beta', got {text!r}")
    return float(parts[0]), float(parts[1])


def _candidates(text: str) -> Literal["all", "judged"]:
    if text == "all":
        return "all"
    if text == "judged":
        return "judged"
    raise ValueError(f"--candidates must be 'all' or 'judged', got {text!r}")


def _k_over_candidates(summary: dict[str, object]) -> str:
    """One line for people: K over the problems the strategy could draw from (the JSON is on stdout)."""
    ratio = summary["k_over_candidates"]
    share = f"{ratio:.2%}" if isinstance(ratio, float) else "n/a"
    return (
        f"K / candidates = {summary['k_requested']} / {summary['n_candidates']} = {share} "
        f"(candidates={summary['candidates']}: {summary['n_judged_candidates']} of them judged)"
    )


def _unknown(text: str) -> Literal["error", "skip"]:
    if text == "error":
        return "error"
    if text == "skip":
        return "skip"
    raise ValueError(f"--unknown-chains must be 'error' or 'skip', got {text!r}")


if __name__ == "__main__":
    app()
