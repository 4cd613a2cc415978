"""The offline world's regime checks and arm table: can a 1,000-example budget move this student?

    python benchmarks/world_regime.py [--model DIR] [--out runs/world-regime] [--seeds 0,1,2] [--part all]

Everything here is the project's own code: the shipped base student (``skillworld.bootstrap``), the
per-leaf probes (``skillworld.probes``), profiling (``distill.profiling``), selection (``skillselect``),
formatting and TRL fine-tuning with the ``cpu-demo`` preset (``distill.sft``), evaluation on the world's
suites with the ``cpu-demo`` evaluation preset (``distill.eval``). Every step is cached under ``--out`` (a
rerun prints the same figures without recomputing), and each step runs on one torch thread.

Parts:
- ``tiers``: the base student's one-skill probe accuracy per leaf and per tier.
- ``regime``: 1,000 one-skill examples concentrated on the weak leaves (250 each) and on the hard leaf, and
  1,000 random pool problems, plain SFT: gains of the focused leaves, loss of the mastered ones.
- ``arms``: random and skill-selected K = 1,000, plain and skill-aware SFT, for each seed (the seed draws the
  selection and orders the training): the suites' average and per-tier probe accuracy, mean and spread.

The pool's chains are the world's ground truth here (the tagger is measured by its own benchmark), and the
profile is the base student's answers (temperature 0.6) on 2,000 pool problems, as in the demo.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

K = 1000
POOL_SIZE = 5000
PROFILE_LIMIT = 2000


def log(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def cached(path: Path, compute: Any) -> Any:
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return value


def fine_tune(base: str, problems: list[Any], out: Path, *, skill_aware: bool, seed: int) -> Path:
    from distill.formatting import FormatConfig, format_examples
    from distill.sft import load_sft_settings, train_sft

    rows, _ = format_examples(problems, FormatConfig(skill_aware=skill_aware))
    settings = load_sft_settings("cpu-demo", seed=seed)
    result = train_sft(base, rows, settings, out_dir=out, progress=False)
    log(f"  trained {out.name}: {result.steps} steps, loss {result.train_loss:.3f}, {result.seconds:.0f}s")
    return out / "model"


def probe(model: Path | str, out: Path) -> dict[str, float]:
    from skillworld.probes import probe_accuracy

    return cached(out / "probe.json", lambda: probe_accuracy(model, out / "probe", progress=False))


def suites(model: Path | str, out: Path) -> dict[str, float]:
    from distill.engines import make_engine
    from distill.eval import evaluate, load_eval_config
    from skillworld import generate_benchmarks

    def run() -> dict[str, float]:
        config = load_eval_config("cpu-demo")
        with make_engine("hf", str(model), batch_size=64, device="cpu") as engine:
            report = evaluate(
                engine, generate_benchmarks(0, 200), config, out_dir=out / "suites", progress=False
            )
        return {name: run.score.avg_at_k.value for name, run in report.benchmarks.items()}

    return cached(out / "suites.json", run)


def tier_means(accuracy: dict[str, float]) -> dict[str, float]:
    """Per tier, the share of its probe answers that are right (leaves weighted by their probe counts:
    a leaf with nine distinct probe questions counts for nine answers, not for as much as one with 30)."""
    from collections import Counter

    from skillworld.bootstrap import leaf_tiers
    from skillworld.probes import probe_problems

    counts = Counter(p.chains[0][-1] for p in probe_problems())
    right: dict[str, float] = {}
    total: dict[str, int] = {}
    for leaf, tier in leaf_tiers().items():
        right[tier] = right.get(tier, 0.0) + accuracy[leaf] * counts[leaf]
        total[tier] = total.get(tier, 0) + counts[leaf]
    return {tier: right[tier] / total[tier] for tier in total}


def skill_naming(folder: Path) -> dict[str, float]:
    """For a skill-aware student's probe answers: how often the Skills block names the probe's own leaf,
    and the accuracy when it does and when it names another."""
    from skillcore import CHAIN_SEPARATOR, read_jsonl
    from skillworld.probes import probe_problems

    probe_dir = folder / "probe" / "probe"
    status = {r["unique_id"]: r["status"] for r in read_jsonl(probe_dir / "verdicts.jsonl")}
    leaf_of = {p.unique_id: p.chains[0][-1] for p in probe_problems()}
    named = {True: [0, 0], False: [0, 0]}
    for row in read_jsonl(probe_dir / "attempts.jsonl"):
        lines = row["response"].split("Skills:\n", 1)
        first = lines[1].split("\n", 1)[0] if len(lines) == 2 else ""
        hit = first.split(CHAIN_SEPARATOR)[-1].strip() == leaf_of[row["unique_id"]]
        named[hit][0] += status[row["unique_id"]] == "correct"
        named[hit][1] += 1
    total = named[True][1] + named[False][1]
    return {
        "right_leaf": named[True][1] / total,
        "accuracy_when_right": named[True][0] / max(1, named[True][1]),
        "accuracy_when_wrong": named[False][0] / max(1, named[False][1]),
    }


def part_tiers(base: Path, out: Path) -> dict[str, float]:
    from skillworld.bootstrap import TIERS, leaf_tiers

    accuracy = probe(base, out / "base")
    tiers = leaf_tiers()
    print(f"\n{'leaf':30} {'tier':12} {'probe':>6}  declared")
    for leaf in sorted(accuracy, key=lambda leaf: (list(TIERS).index(tiers[leaf]), -accuracy[leaf])):
        low, high = TIERS[tiers[leaf]].bounds
        print(f"{leaf:30} {tiers[leaf]:12} {accuracy[leaf]:6.0%}  [{low:.0%}, {high:.0%}]")
    means = tier_means(accuracy)
    print("tier means: " + ", ".join(f"{t} {v:.0%}" for t, v in means.items()))
    return accuracy


def part_regime(base: Path, out: Path) -> None:
    from skillworld import generate_pool
    from skillworld.bootstrap import TIER_LEAVES
    from skillworld.probes import focus_problems

    before = probe(base, out / "base")
    arms = {
        "focus-weak": focus_problems(TIER_LEAVES["weak"], K // len(TIER_LEAVES["weak"])),
        "focus-hard": focus_problems(TIER_LEAVES["hard"], 250),
        "random": generate_pool(K, seed=7),
    }
    tiers = tier_means(before)
    print("\nregime (plain SFT, cpu-demo preset): probe accuracy before -> after")
    for name, problems in arms.items():
        model = fine_tune(str(base), problems, out / "regime" / name, skill_aware=False, seed=0)
        after = probe(model, out / "regime" / name)
        focused = sorted({p.chains[0][-1] for p in problems}) if name != "random" else []
        for leaf in focused:
            print(
                f"  {name:11} {leaf:28} {before[leaf]:5.0%} -> {after[leaf]:5.0%} ({after[leaf] - before[leaf]:+.0%})"
            )
        moved = tier_means(after)
        print(f"  {name:11} tiers: " + ", ".join(f"{t} {tiers[t]:.0%} -> {moved[t]:.0%}" for t in tiers))


def part_arms(base: Path, out: Path, seeds: list[int]) -> None:
    from distill.engines import SamplingConfig, make_engine
    from distill.profiling import ProfileConfig, profile_student
    from skillcore import TaggedProblem
    from skillselect import Pool, select
    from skillworld import generate_pool, world_tree

    tree = world_tree()
    pool = generate_pool(POOL_SIZE, seed=0)
    profiled = pool[:PROFILE_LIMIT]
    config = ProfileConfig(
        sampling=SamplingConfig(temperature=0.6, max_new_tokens=384, seed=0)
    )  # as the demo
    with make_engine("hf", str(base), batch_size=64, device="cpu") as engine:
        result = profile_student(
            engine, tree, profiled, out_dir=out / "profile", config=config, progress=False
        )
    log(f"profile: {result.accuracy:.1%} of {len(profiled)} pool problems")
    selectable = Pool.from_records(profiled, result.verdicts)
    by_id = {p.unique_id: p for p in profiled}
    base_suites = suites(base, out / "base")
    base_tiers = tier_means(probe(base, out / "base"))
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        for strategy in ("random", "skill"):
            selection = select(
                selectable, tree, k=K, strategy=strategy, seed=seed, temperature=0.5, w_max=10.0
            )
            problems: list[TaggedProblem] = [by_id[u] for u in selection.unique_ids]
            for skill_aware in (False, True):
                arm = f"{strategy}-{'skill' if skill_aware else 'plain'}"
                folder = out / "arms" / f"{arm}-s{seed}"
                model = fine_tune(str(base), problems, folder, skill_aware=skill_aware, seed=seed)
                scores = suites(model, folder)
                probe_tiers = tier_means(probe(model, folder))
                rows.setdefault(arm, []).append(
                    {
                        "suites": statistics.mean(scores.values()),
                        **{f"tier:{t}": v for t, v in probe_tiers.items()},
                    }
                )
                naming = ""
                if skill_aware:
                    n = skill_naming(folder)
                    naming = (
                        f"; names the probe's leaf in {n['right_leaf']:.0%} of answers, right then "
                        f"{n['accuracy_when_right']:.0%}, {n['accuracy_when_wrong']:.0%} after another name"
                    )
                log(f"  {arm} seed {seed}: suites {statistics.mean(scores.values()):.1%}{naming}")
    columns = ["suites", *[f"tier:{t}" for t in base_tiers]]
    print(f"\n{'arm':16}" + "".join(f"{c.removeprefix('tier:'):>18}" for c in columns))
    base_row = {
        "suites": statistics.mean(base_suites.values()),
        **{f"tier:{t}": v for t, v in base_tiers.items()},
    }
    print(f"{'base':16}" + "".join(f"{base_row[c]:18.1%}" for c in columns))
    for arm, runs in rows.items():
        cells = []
        for c in columns:
            values = [r[c] for r in runs]
            spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):11.1%} ±{spread:4.1%}")
        print(f"{arm:16}" + "".join(f"{cell:>18}" for cell in cells))
    (out / "arms.json").write_text(json.dumps({"base": base_row, "arms": rows}, indent=1))


def main() -> int:
    from skillworld.bootstrap import shipped_student_dir

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="base student (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("runs/world-regime"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--part", choices=["all", "tiers", "regime", "arms"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = args.model or shipped_student_dir()
    start = time.perf_counter()
    if args.part in {"all", "tiers"}:
        part_tiers(base, args.out)
    if args.part in {"all", "regime"}:
        part_regime(base, args.out)
    if args.part in {"all", "arms"}:
        part_arms(base, args.out, [int(s) for s in args.seeds.split(",")])
    log(f"done in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
