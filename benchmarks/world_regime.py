"""The offline world's regime checks: can a 1,000-example budget move this student?

    python benchmarks/world_regime.py [--model DIR] [--out runs/world-regime] [--part all]

Everything here is the project's own code: the shipped base student (``skillworld.bootstrap``), the
per-leaf probes (``skillworld.probes``), profiling (``distill.profiling``), selection (``skillselect``),
formatting and TRL fine-tuning with the ``cpu-demo`` preset (``distill.sft``), evaluation on the world's
suites with the ``cpu-demo`` evaluation preset (``distill.eval``). Every step is cached under ``--out`` (a
rerun prints the same figures without recomputing), and each step runs on one torch thread.

Parts:
- ``tiers``: the base student's one-skill probe accuracy per leaf and per tier.
- ``regime``: 1,000 one-skill examples concentrated on the weak leaves (250 each), 1,000 on the hard leaf, and
  1,000 random pool problems, plain SFT: gains of the focused leaves, loss of the mastered ones.

The paper's arms (random or skill selection, plain or skill-aware SFT, over seeds) are run by the pipeline
itself: ``python pipelines/distill.py --registry-model NAME --compare`` (see docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

K = 1000


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
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    rows, _ = format_examples(problems, FormatConfig(skill_aware=skill_aware), tokenizer)
    settings = load_sft_settings("cpu-demo", seed=seed)
    result = train_sft(base, rows, settings, out_dir=out, progress=False)
    log(f"  trained {out.name}: {result.steps} steps, loss {result.train_loss:.3f}, {result.seconds:.0f}s")
    return out / "model"


def probe(model: Path | str, out: Path) -> dict[str, float]:
    from skillworld.probes import probe_accuracy

    return cached(out / "probe.json", lambda: probe_accuracy(model, out / "probe", progress=False))


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
        "focus-hard": focus_problems(TIER_LEAVES["hard"], K),
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


def main() -> int:
    from skillworld.bootstrap import shipped_student_dir

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=None, help="base student (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=Path("runs/world-regime"))
    parser.add_argument("--part", choices=["all", "tiers", "regime"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = args.model or shipped_student_dir()
    start = time.perf_counter()
    if args.part in {"all", "tiers"}:
        part_tiers(base, args.out)
    if args.part in {"all", "regime"}:
        part_regime(base, args.out)
    log(f"done in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
