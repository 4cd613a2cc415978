"""Cascade tagging: an LLM tags a seed sample, its tags teach the cheap embedding tagger, the cheap
tagger tags the rest, and the problems it is unsure of go back to the LLM.

1. A seeded random sample of ``seed_size`` pool problems is tagged by the LLM engine (the ``openai``
   backend: the paper's top-down walk, one chat request per open (problem, node) pair).
2. The first ``holdout`` problems of that sample are held out; the LLM's tags of the others are written
   as a tagged JSONL file, the embedding backend's exemplar file (``EngineSettings.exemplars``: rows with
   one chain become exemplars, ``per_leaf`` per leaf, as ``skilltagger tag --exemplars`` reads them).
3. The cheap engine, built on those exemplars, tags every problem outside the seed, and the held-out
   slice: there its tags are compared with the LLM's (``skilltag.quality.leaf_prf``, overall and per leaf).
4. A problem outside the seed whose cheap confidence (``confidence``: the weakest node score over its
   chains; no chain, or no scores at all, counts as unsure) is below ``threshold`` goes back to the LLM.

Every problem ends with one set of chains: the LLM's (seed, held-out slice, fallbacks) or the cheap
tagger's. The report counts the LLM problems and chat requests, the calls saved against tagging
everything with the LLM (on this pool and extrapolated to 100K problems from the measured calls per
problem and fallback rate), and the agreement. Both engines may share one ``TagCache``, so a killed run
redone re-asks nothing the cache holds.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillcore import PoolProblem, TaggedProblem, write_jsonl

from skilltag.engine import TaggingEngine, TagResult, tagged_problem
from skilltag.quality import leaf_prf

if TYPE_CHECKING:
    from skilltag.factory import EngineSettings

Chains = Sequence[Sequence[str]]
PER_100K = 100_000
SOURCES = ("seed", "holdout", "cheap", "fallback")  # who gave a problem its final chains


@dataclass(frozen=True)
class CascadeConfig:
    seed_size: int = 2_000  # problems the LLM tags first (a seeded random sample of the pool)
    holdout: int = 200  # of the seed: kept out of the exemplars, to measure the cheap tagger's agreement
    threshold: float = 0.65  # cheap confidence below this: the problem goes back to the LLM
    per_leaf: int = 20  # exemplars per leaf for the cheap tagger
    sample_seed: int = 0  # seeds the choice of the seed sample
    batch_size: int = 256  # problems per engine call

    def __post_init__(self) -> None:
        if self.seed_size < 1:
            raise ValueError(f"seed_size must be at least 1 (got {self.seed_size})")
        if not 0 <= self.holdout < self.seed_size:
            raise ValueError(
                f"holdout must lie in [0, seed_size): some seed problems must remain as exemplars "
                f"(got holdout {self.holdout}, seed_size {self.seed_size})"
            )
        if self.per_leaf < 1:
            raise ValueError(f"per_leaf must be at least 1 (got {self.per_leaf})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {self.batch_size})")
        if math.isnan(self.threshold):
            raise ValueError("threshold must be a number")


@dataclass
class CascadeResult:
    rows: list[TaggedProblem]  # the tagged pool, in input order (the tagger's output format)
    report: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # unique_id -> one of SOURCES


def split_seed(n: int, config: CascadeConfig) -> tuple[list[int], list[int]]:
    """Positions of the exemplar part and of the held-out part of the seed sample (sampled without
    replacement with ``sample_seed``; the held-out part is the sample's first ``holdout``)."""
    sample = random.Random(config.sample_seed).sample(range(n), min(config.seed_size, n))
    return sample[config.holdout :], sample[: config.holdout]


def confidence(result: TagResult) -> float | None:
    """How sure the cheap tagger is of a result: the weakest node score over all its chains (the
    embedding backend's blended similarity with exemplars, its per-level share in "relative" mode), so
    one doubtful chain makes the problem doubtful; -inf without a chain, None when the backend reports
    no scores (such a problem always goes back to the LLM)."""
    if not result.chains:
        return -math.inf
    if result.scores is None:
        return None
    return min((min(chain) if chain else -math.inf) for chain in result.scores)


def agreement(gold: Sequence[Chains], predicted: Sequence[Chains]) -> dict[str, Any]:
    """How far ``predicted`` agrees with ``gold`` (the LLM's tags): micro P/R/F1 over (problem, leaf) and
    the share of identical chain sets (``leaf_prf``), and per leaf named by either side, P/R/F1 with the
    number of problems each side gave that leaf; ``macro_f1`` averages the leaves the gold side names."""
    overall = leaf_prf(gold, predicted)
    leaves = sorted({tuple(c) for chains in [*gold, *predicted] for c in chains})
    per_leaf: dict[str, dict[str, float]] = {}
    for leaf in leaves:
        g = [[c for c in chains if tuple(c) == leaf] for chains in gold]
        p = [[c for c in chains if tuple(c) == leaf] for chains in predicted]
        prf = leaf_prf(g, p)
        per_leaf[" -> ".join(leaf)] = {
            "precision": prf["precision"],
            "recall": prf["recall"],
            "f1": prf["f1"],
            "gold": sum(bool(x) for x in g),
            "predicted": sum(bool(x) for x in p),
        }
    named = [v["f1"] for v in per_leaf.values() if v["gold"]]
    return {
        "n": len(gold),
        **overall,
        "macro_f1": sum(named) / len(named) if named else 0.0,
        "per_leaf": per_leaf,
    }


def extrapolate(
    calls_per_problem: float | None, seed_size: int, fallback_rate: float | None, n: int = PER_100K
) -> dict[str, float] | None:
    """LLM calls for ``n`` problems tagged by the LLM alone and by the cascade (the seed, then the
    fallback share of the rest), from the measured calls per LLM-tagged problem; None when not measured."""
    if calls_per_problem is None:
        return None
    rate = fallback_rate or 0.0
    seed = min(seed_size, n)
    llm_only = n * calls_per_problem
    cascade = (seed + rate * (n - seed)) * calls_per_problem
    return {
        "problems": n,
        "llm_only_calls": llm_only,
        "cascade_calls": cascade,
        "saved_calls": llm_only - cascade,
        "saved_share": (llm_only - cascade) / llm_only if llm_only else 0.0,
    }


def _batches(items: Sequence[Any], size: int, desc: str, progress: bool) -> Iterator[Sequence[Any]]:
    bar = None
    if progress and items:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="problem", file=sys.stderr)
    for start in range(0, len(items), size):
        batch = items[start : start + size]
        yield batch
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()


def _tag(
    engine: TaggingEngine, problems: Sequence[PoolProblem], cfg: CascadeConfig, desc: str, progress: bool
) -> list[TagResult]:
    out: list[TagResult] = []
    for batch in _batches(problems, cfg.batch_size, desc, progress):
        out.extend(engine.tag(batch))
    return out


def _llm_counts(engine: TaggingEngine) -> dict[str, int]:
    counters: Mapping[str, int] = getattr(engine.backend, "counters", {}) or {}
    return {
        "walked": engine.stats.tagged,
        "from_cache": engine.stats.cache_hits,
        "node_queries": engine.stats.node_queries,
        "requests": int(counters.get("requests", engine.stats.node_queries)),
        "retries": int(counters.get("retries", 0)),
    }


def run_cascade(
    problems: Sequence[PoolProblem | Mapping[str, Any]],
    llm: TaggingEngine,
    make_cheap: Callable[[Path], TaggingEngine],
    config: CascadeConfig,
    exemplars_path: str | Path,
    *,
    progress: bool = True,
) -> CascadeResult:
    """Tag ``problems`` with the cascade. ``make_cheap(exemplars_path)`` builds the cheap engine once the
    exemplar file (the LLM's tags of the seed minus the held-out slice) is written at ``exemplars_path``.
    A repeated ``unique_id`` is tagged once (the first row wins), as ``skilltagger tag`` does."""
    records: list[PoolProblem] = []
    seen: set[str] = set()
    for raw in problems:
        record = raw if isinstance(raw, PoolProblem) else PoolProblem.model_validate(raw)
        if record.unique_id not in seen:
            seen.add(record.unique_id)
            records.append(record)
    n = len(records)
    train_pos, holdout_pos = split_seed(n, config)
    seed_pos = holdout_pos + train_pos
    in_seed = set(seed_pos)
    rest_pos = [i for i in range(n) if i not in in_seed]
    before = _llm_counts(llm)

    # 1. the LLM tags the seed
    seed_results = _tag(llm, [records[i] for i in seed_pos], config, "cascade: LLM seed", progress)
    final: dict[int, TagResult] = dict(zip(seed_pos, seed_results, strict=True))
    sources = {i: "holdout" for i in holdout_pos} | {i: "seed" for i in train_pos}
    after_seed = _llm_counts(llm)

    # 2. its tags of the seed minus the held-out slice become the cheap tagger's exemplars
    exemplar_rows = [tagged_problem(records[i], final[i]) for i in train_pos]
    write_jsonl(exemplars_path, exemplar_rows)
    cheap = make_cheap(Path(exemplars_path))
    if cheap.tree_hash != llm.tree_hash:
        raise ValueError("the cheap engine tags against another tree than the LLM engine")

    # 3. the cheap tagger tags the rest and the held-out slice
    cheap_pos = holdout_pos + rest_pos
    cheap_results = _tag(cheap, [records[i] for i in cheap_pos], config, "cascade: cheap tagger", progress)
    cheap_of = dict(zip(cheap_pos, cheap_results, strict=True))
    conf = {i: confidence(r) for i, r in cheap_of.items()}

    def unsure(i: int) -> bool:
        c = conf[i]
        return c is None or c < config.threshold

    # 4. unsure problems go back to the LLM
    fallback_pos = [i for i in rest_pos if unsure(i)]
    fallback_results = _tag(
        llm, [records[i] for i in fallback_pos], config, "cascade: LLM fallback", progress
    )
    final.update(zip(fallback_pos, fallback_results, strict=True))
    for i in rest_pos:
        if i in final:
            sources[i] = "fallback"
        else:
            final[i] = cheap_of[i]
            sources[i] = "cheap"
    after = _llm_counts(llm)

    rows: list[TaggedProblem] = []
    for i, record in enumerate(records):
        row = tagged_problem(record, final[i])
        note: dict[str, Any] = {"source": sources[i]}
        if i in cheap_of:
            note["confidence"] = _finite(conf[i])
            if sources[i] != "cheap":
                note["cheap_chains"] = cheap_of[i].chains
        row.metadata.setdefault("tagger", {})["cascade"] = note
        rows.append(row)

    # agreement on the held-out slice: the cheap tagger alone, and the cascade (unsure ones to the LLM)
    gold = [final[i].chains for i in holdout_pos]
    cheap_tags = [cheap_of[i].chains for i in holdout_pos]
    confident = [i for i in holdout_pos if not unsure(i)]
    unsure_h = [i for i in holdout_pos if unsure(i)]
    slice_agreement = {
        **agreement(gold, cheap_tags),
        "with_fallback": _brief(
            agreement(gold, [final[i].chains if unsure(i) else cheap_of[i].chains for i in holdout_pos])
        ),
        "confident": _brief(
            agreement([final[i].chains for i in confident], [cheap_of[i].chains for i in confident])
        ),
        "unsure": _brief(
            agreement([final[i].chains for i in unsure_h], [cheap_of[i].chains for i in unsure_h])
        ),
    }

    llm_problems = len(seed_pos) + len(fallback_pos)
    used = {k: after[k] - before[k] for k in after}
    walked = used["walked"]
    calls_per_problem = used["requests"] / walked if walked else None
    fallback_rate = len(fallback_pos) / len(rest_pos) if rest_pos else None
    on_pool = extrapolate(calls_per_problem, config.seed_size, fallback_rate, n)
    if on_pool is not None:  # what was measured here, against the LLM-only estimate for this pool
        on_pool["cascade_calls"] = used["requests"]
        on_pool["saved_calls"] = on_pool["llm_only_calls"] - used["requests"]
        llm_only = on_pool["llm_only_calls"]
        on_pool["saved_share"] = on_pool["saved_calls"] / llm_only if llm_only else 0.0
    report: dict[str, Any] = {
        "config": asdict(config),
        "problems": n,
        "seed": len(seed_pos),
        "holdout": len(holdout_pos),
        "exemplar_problems": len(train_pos),
        "exemplar_single_chain": sum(len(r.chains) == 1 for r in exemplar_rows),
        "cheap_tagged": len(rest_pos),
        "fallbacks": len(fallback_pos),
        "fallback_rate": fallback_rate,
        "no_scores": sum(conf[i] is None for i in rest_pos),
        "sources": {s: sum(v == s for v in sources.values()) for s in SOURCES},
        "llm": {
            "problems": llm_problems,
            "seed_requests": after_seed["requests"] - before["requests"],
            "fallback_requests": after["requests"] - after_seed["requests"],
            **used,
            "calls_per_problem": calls_per_problem,
        },
        "cost": {
            "pool": on_pool,
            "per_100k": extrapolate(calls_per_problem, config.seed_size, fallback_rate),
        },
        "agreement": slice_agreement,
        "engines": {"llm": llm.describe(), "cheap": cheap.describe()},
    }
    return CascadeResult(rows, report, {records[i].unique_id: s for i, s in sources.items()})


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "per_leaf"}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def write_result(result: CascadeResult, out: str | Path, report_path: str | Path) -> None:
    """The tagged pool (JSONL, written atomically) and the report (JSON)."""
    import json

    write_jsonl(out, result.rows)
    Path(report_path).write_text(json.dumps(result.report, indent=1, ensure_ascii=False))


def summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a report (one line for a CLI)."""
    agree = report["agreement"]
    per_100k = report["cost"]["per_100k"] or {}
    return {
        "problems": report["problems"],
        "seed": report["seed"],
        "holdout": report["holdout"],
        "fallbacks": report["fallbacks"],
        "llm_problems": report["llm"]["problems"],
        "llm_calls": report["llm"]["requests"],
        "calls_per_problem": report["llm"]["calls_per_problem"],
        "saved_calls_per_100k": per_100k.get("saved_calls"),
        "agreement_f1": agree["f1"],
        "agreement_f1_with_fallback": agree["with_fallback"]["f1"],
    }


def embedding_from(settings: EngineSettings) -> Callable[[Path], TaggingEngine]:
    """``make_cheap`` for ``run_cascade``: the embedding engine of ``settings`` (its tree, cache, summary
    and path settings, ``per_leaf``, ``embedding_options``) on the cascade's exemplar file."""
    from skilltag.factory import build_engine

    def make(exemplars: Path) -> TaggingEngine:
        return build_engine(replace(settings, backend="embedding", exemplars=str(exemplars)))

    return make


__all__ = [
    "CascadeConfig",
    "CascadeResult",
    "agreement",
    "confidence",
    "embedding_from",
    "extrapolate",
    "run_cascade",
    "split_seed",
    "summary",
    "write_result",
]
