"""Baseline profile: the student's per-leaf accuracy on the five benchmark suites.

Generation, judging and scoring are ``distill.eval``'s (the ``hf`` engine, the shared rollout and the
math-verify judge, resumable per suite); this module only picks the problems and tabulates leaf x suite
accuracy. A problem counts toward every leaf its chains name, so a leaf's
accuracy over all problems mixes in the other skills of its multi-skill problems; the ``single``
figures (one-skill problems only) isolate the skill itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skillcore import CHAIN_SEPARATOR, TaggedProblem, Verdict
from skillcore.io import atomic_write_text

from skillworld.world import generate_benchmarks, leaf_names, world_tree


def leaf_accuracy(
    problems: Sequence[TaggedProblem], verdicts: Sequence[Verdict]
) -> dict[str, dict[str, float | int]]:
    """Leaf name -> {"n": attempts, "correct": count, "accuracy": fraction}, for the leaves with attempts
    (``distill.eval.leaf_accuracy`` on the world tree, keyed by the leaf's name)."""
    from distill.eval import leaf_accuracy as by_chain

    rows = by_chain(world_tree(), problems, verdicts)
    return {
        chain.split(CHAIN_SEPARATOR)[-1]: {k: v for k, v in stats.items() if k != "problems"}
        for chain, stats in sorted(rows.items(), key=lambda item: item[0].split(CHAIN_SEPARATOR)[-1])
    }


def run_baseline_profile(
    model: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    suite_size: int = 200,
    max_new_tokens: int = 384,
    temperature: float = 0.0,
    batch_size: int = 64,
    suites: Mapping[str, Sequence[TaggedProblem]] | None = None,
    progress: bool = True,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Profile ``model`` on every suite (resumable per suite folder) and write ``baseline_report.json``.

    ``threads``: torch CPU threads while generating (one is fastest for the tiny student on a busy
    machine); None keeps torch's setting."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(
            model, Path(out_dir), seed, suite_size, max_new_tokens, temperature, batch_size, suites, progress
        )
    finally:
        torch.set_num_threads(before)


def _run(
    model: str,
    out: Path,
    seed: int,
    suite_size: int,
    max_new_tokens: int,
    temperature: float,
    batch_size: int,
    suites: Mapping[str, Sequence[TaggedProblem]] | None,
    progress: bool,
) -> dict[str, Any]:
    from distill.engines import SamplingConfig, make_engine
    from distill.eval import EvalConfig, evaluate

    suites = suites if suites is not None else generate_benchmarks(seed, suite_size)
    config = EvalConfig(
        samples_per_problem=1,
        sampling=SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
        chunk_size=max(batch_size, 64),
        seed=seed,
    )
    with make_engine("hf", model, batch_size=batch_size, device="cpu") as engine:
        # a new student (or alias target) redoes a suite; its folder is this report's own
        report = evaluate(engine, suites, config, out_dir=out, progress=progress, on_mismatch="restart")
    per_suite: dict[str, dict[str, Any]] = {}
    all_problems: list[TaggedProblem] = []
    all_verdicts: list[Verdict] = []
    for name, run in report.benchmarks.items():
        problems = [p for p in run.problems if isinstance(p, TaggedProblem)]
        per_suite[name] = {
            "accuracy": run.rollout.accuracy,
            "n": len(run.rollout.verdicts),
            "leaves": leaf_accuracy(problems, run.rollout.verdicts),
            "status": run.rollout.status_counts(),
        }
        all_problems.extend(problems)
        all_verdicts.extend(run.rollout.verdicts)
    overall = leaf_accuracy(all_problems, all_verdicts)
    one_skill = {p.unique_id: p for p in all_problems if len(p.chains) == 1}
    single = leaf_accuracy(list(one_skill.values()), [v for v in all_verdicts if v.unique_id in one_skill])
    table = {
        "model": model,
        "engine": report.engine,  # which weights answered (an alias's resolved version)
        "seed": seed,
        "suite_size": suite_size,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "accuracy": sum(v.correct for v in all_verdicts) / max(1, len(all_verdicts)),
        "suites": per_suite,
        "leaves": overall,
        "single_skill_leaves": single,
    }
    atomic_write_text(out / "baseline_report.json", json.dumps(table, indent=1))
    return table


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table: one row per leaf (accuracy per suite, over all its problems, and over its
    one-skill problems), tier when known."""
    from skillworld.bootstrap import leaf_tiers

    tiers = leaf_tiers()
    suites = list(report["suites"])
    single = report.get("single_skill_leaves", {})
    head = (
        f"{'leaf skill':30} {'tier':12}"
        + "".join(f"{s[:8]:>9}" for s in suites)
        + f"{'all':>8}{'n':>6}{'1-skill':>9}{'n':>5}"
    )
    lines = [head, "-" * len(head)]

    def cell(stats: Mapping[str, Any] | None, width: int) -> str:
        return f"{stats['accuracy']:{width}.0%}" if stats else f"{'-':>{width}}"

    def order(leaf: str) -> tuple[float, float]:
        return (
            -single.get(leaf, {}).get("accuracy", -1),
            -report["leaves"].get(leaf, {}).get("accuracy", -1),
        )

    for leaf in sorted(leaf_names(), key=order):
        cells = "".join(cell(report["suites"][suite]["leaves"].get(leaf), 9) for suite in suites)
        total, alone = report["leaves"].get(leaf), single.get(leaf)
        lines.append(
            f"{leaf:30} {tiers.get(leaf, ''):12}{cells}"
            + f"{cell(total, 8)}{total['n'] if total else 0:6d}"
            + f"{cell(alone, 9)}{alone['n'] if alone else 0:5d}"
        )
    lines.append("-" * len(head))
    suite_cells = "".join(f"{report['suites'][s]['accuracy']:9.0%}" for s in suites)
    lines.append(f"{'all problems':30} {'':12}" + suite_cells + f"{report['accuracy']:8.0%}")
    return "\n".join(lines)
