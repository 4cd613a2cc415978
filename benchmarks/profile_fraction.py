"""How much of the pool must the student answer for the skill target to settle?

    python benchmarks/profile_fraction.py --pool tagged.jsonl --verdicts verdicts.jsonl --tree tree.json \
        [-T 0.5 --w-max 10 | --posterior | --smoothing 1] [--fractions 0.02,0.05,0.1,0.2 --seeds 5] \
        [--out runs/profile-fraction]

Input: a tagged pool and a FULL profile of it (every pool problem with a chain judged). The ``skill``
strategy's target (its normalised leaf weights, as ``skillselect`` computes them) from the full profile is
the reference; for each fraction, the verdicts of that share of the judged problems are kept (several
seeds) and the target is computed again. Printed and written (``profile_fraction.json`` and
``profile_fraction.md`` under ``--out``): per fraction, over the seeds, the mean and worst total variation
(half the L1 distance) and largest absolute share difference to the full target, the leaves left with no
judged problem (weight 0, so never drawn), and the largest-to-smallest share ratio of each target.

The computing is skillselect's own (``skillselect.profile_fraction_rows``): this script reads, prints, writes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", required=True, help="tagged pool JSONL (TaggedProblem rows)")
    parser.add_argument("--verdicts", required=True, help="verdicts JSONL judging every pool problem")
    parser.add_argument("--tree", required=True, help="skill tree JSON/YAML")
    parser.add_argument("-T", "--temperature", type=float, default=1.0, help="weight temperature T")
    parser.add_argument("--w-max", type=float, default=1000.0, help="weight cap: min(acc^-T, w_max^T)")
    parser.add_argument("--posterior", action="store_true", help="Beta-posterior mean accuracy")
    parser.add_argument("--prior", default=None, help="Beta prior 'alpha,beta' for --posterior")
    parser.add_argument("--smoothing", type=float, default=0.0, help="add-s (Laplace) leaf accuracy")
    parser.add_argument("--max-depth", type=int, default=None, help="cut the tree at this depth")
    parser.add_argument("--unknown-chains", choices=["error", "skip"], default="error")
    parser.add_argument("--fractions", default="0.02,0.05,0.1,0.2", help="shares of the judged problems")
    parser.add_argument("--seeds", type=int, default=5, help="subsample seeds per fraction (0..N-1)")
    parser.add_argument(
        "--allow-unjudged",
        action="store_true",
        help="run although some pool problems with a chain have no verdict (the reference is then partial)",
    )
    parser.add_argument("--out", default=None, help="folder for profile_fraction.json and .md")
    return parser.parse_args(argv)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fraction, over its seeds: mean and worst of each distance, mean of the share ratio."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        ratios = [r["share_ratio"] for r in group if not math.isnan(r["share_ratio"])]
        out.append(
            {
                "fraction": fraction,
                "n_seeds": len(group),
                "n_judged": statistics.mean(r["n_judged"] for r in group),
                "tv_mean": statistics.mean(r["tv"] for r in group),
                "tv_max": max(r["tv"] for r in group),
                "l1_mean": statistics.mean(r["l1"] for r in group),
                "max_abs_mean": statistics.mean(r["max_abs"] for r in group),
                "max_abs_max": max(r["max_abs"] for r in group),
                "n_leaves_dropped_mean": statistics.mean(r["n_leaves_dropped"] for r in group),
                "share_ratio_mean": statistics.mean(ratios) if ratios else math.nan,
            }
        )
    return out


def markdown(full: dict[str, Any], summary: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [
        f"Skill target from a share of the profile vs the full profile ({full['n_judged']:,} judged of "
        f"{full['n_pool']:,} problems, {full['n_leaves_with_share']} of {full['n_leaves']} leaves weighted, "
        f"share ratio {full['share_ratio']:.3g}); settings: "
        + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "| profiled | judged | seeds | TV mean | TV worst | L1 mean | max abs diff mean | max abs diff worst "
        "| leaves dropped (mean) | share ratio (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['fraction']:.0%} | {s['n_judged']:,.0f} | {s['n_seeds']} | {s['tv_mean']:.4f} | "
            f"{s['tv_max']:.4f} | {s['l1_mean']:.4f} | {s['max_abs_mean']:.4f} | {s['max_abs_max']:.4f} | "
            f"{s['n_leaves_dropped_mean']:.1f} | {s['share_ratio_mean']:.3g} |"
        )
    lines.append(
        f"| 100% (reference) | {full['n_judged']:,} | - | 0 | 0 | 0 | 0 | 0 | 0 | {full['share_ratio']:.3g} |"
    )
    return "\n".join(lines) + "\n"


def _prior(text: str) -> tuple[float, float]:
    alpha, beta = text.split(",")
    return float(alpha), float(beta)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skillcore.io import iter_rows
    from skillcore.records import TaggedProblem, Verdict
    from skillcore.tree import SkillTree
    from skillselect import Pool, SelectConfig, profile_fraction_rows

    start = time.perf_counter()
    tree = SkillTree.load(args.tree)
    tagged = [TaggedProblem.model_validate(r) for r in iter_rows(args.pool)]
    verdicts = [Verdict.model_validate(r) for r in iter_rows(args.verdicts)]
    pool = Pool.from_records([t for t in tagged if t.chains], verdicts)  # as the pipeline's select stage
    judged = pool.judged_mask()
    n_unjudged = pool.n - (int(judged.sum()) if judged is not None else 0)
    if n_unjudged and not args.allow_unjudged:
        print(
            f"error: {n_unjudged} of {pool.n} pool problems with a chain have no verdict; this measurement "
            "needs a full profile (or pass --allow-unjudged)",
            file=sys.stderr,
        )
        return 2
    prior = _prior(args.prior) if args.prior else None
    config = SelectConfig(
        temperature=args.temperature,
        w_max=args.w_max,
        use_posterior=args.posterior,
        prior=prior,
        smoothing=args.smoothing,
        max_depth=args.max_depth,
        unknown_chains=args.unknown_chains,
    )
    fractions = [float(f) for f in args.fractions.split(",")]
    full, rows = profile_fraction_rows(pool, tree, config, fractions=fractions, seeds=range(args.seeds))
    summary = summarise(rows)
    settings = {
        "temperature": args.temperature,
        "w_max": args.w_max,
        "use_posterior": args.posterior,
        "prior": args.prior,
        "smoothing": args.smoothing,
    }
    table = markdown(full, summary, settings)
    print(table, end="")
    print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        result = {
            "inputs": {"pool": args.pool, "verdicts": args.verdicts, "tree": args.tree},
            "settings": settings,
            "full": full,
            "summary": summary,
            "rows": rows,
        }
        (folder / "profile_fraction.json").write_text(json.dumps(_json_safe(result), indent=1))
        (folder / "profile_fraction.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
