"""The pipeline's stages: data, student, tag, benchmarks, profile, select, format, train, evaluate, analysis,
register. Each is a function of typed config sections and the results of the stages before it, run through
the one caching rule (``skillpipe.cache``); each opens a nested MLflow run tagged with its key.

Two stages are not cached by folder because their state lives in the model registry: ``student`` (the
shipped tiny student is registered once; a model reference is only resolved and fingerprinted) and
``register`` (a checkpoint is registered once, found again by its train key). Both are idempotent.

The services are adapters: a stage takes a ``BatchTagger`` or a ``Profiler``; this module provides the
in-process ones, ``pipelines/`` builds the gRPC and HTTP ones.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from skillcore import Attempt, SkillProfile, SkillTree, TaggedProblem, Verdict, read_jsonl, write_jsonl

from skillpipe.cache import StageCache, StageOutput, StageResult, digest_json, digest_path
from skillpipe.config import (
    DataSection,
    EngineSection,
    EvaluateSection,
    ProfileSection,
    SelectSection,
    TagSection,
    TrainSection,
)

log = logging.getLogger(__name__)

STAGE_KEY_TAG = "skilldistill.stage_key"
# SFT settings that do not shape the weights: where, how fast, how often progress is saved or logged
NOT_IN_TRAIN_KEY = {
    "threads",
    "device",
    "keep_checkpoints",
    "logging_steps",
    "save_steps",
    "save_total_limit",
}


class PipelineInputError(ValueError):
    """Bad input found by a stage (a pool row lacking a field, a tagger serving another tree)."""


@dataclass
class Stages:
    """Runs the stages of one pipeline call: the cache, the seed and what each stage reported."""

    workdir: Path
    seed: int = 0
    notify: Callable[[str, dict[str, Any]], None] | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    prefix: str = ""  # names the records of one arm in a comparison ("skill-skill s0/")

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.cache = StageCache(self.workdir)

    def record(self, name: str, result: StageResult | None = None, **info: Any) -> dict[str, Any]:
        entry = {**(result.info if result else {}), **info}
        if result is not None:
            entry.update(key=result.key, dir=str(result.dir), reused=result.reused)
        self.records[self.prefix + name] = entry
        if self.notify:
            self.notify(self.prefix + name, entry)
        return entry


@contextmanager
def _stage_run(
    stage: str, key: str, *, params: dict[str, Any] | None = None, name: str | None = None
) -> Iterator[Any]:
    import mlflow
    from skillcore.tracking import stage_run

    with stage_run(stage, params=params, run_name=name or stage) as run:
        mlflow.set_tag(STAGE_KEY_TAG, key)
        yield run


# ------------------------------------------------------------------------------------------ data
def data(st: Stages, cfg: DataSection) -> StageResult:
    """The teacher pool (normalised to the native fields), the skill tree, tagger exemplars, and for the
    offline world its held-back ground truth and benchmark suites."""
    if cfg.pool is None:
        world = cfg.model_dump(include={"world_pool_size", "world_suite_size", "world_exemplars"})
        result = st.cache.run(
            "data",
            {"world": world, "seed": st.seed},
            {"skillworld": _world_source_digest()},
            lambda out, key: _world(out, key, cfg, st.seed),
        )
    else:
        assert cfg.tree is not None
        inputs = {"pool": _source_digest(cfg.pool), "tree": digest_path(cfg.tree)}
        if cfg.exemplars:
            inputs["exemplars"] = digest_path(cfg.exemplars)
        config = {
            "pool": cfg.pool,
            "pool_format": cfg.pool_format,
            "tree_duplicates": cfg.tree_duplicates,
            "tree_raw_levels": cfg.tree_raw_levels,
        }
        result = st.cache.run("data", config, inputs, lambda out, key: _user_pool(out, key, cfg))
    st.record("data", result)
    return result


def _world_source_digest() -> str:
    """The generator's code decides the world: a digest of skillworld's Python files."""
    import skillworld

    root = Path(skillworld.__file__).parent
    return digest_json([[str(p.relative_to(root)), digest_path(p)] for p in sorted(root.rglob("*.py"))])


def _source_digest(source: str) -> str:
    return digest_json({"hf": source}) if source.startswith("hf://") else digest_path(source)


def _world(out: Path, key: str, cfg: DataSection, seed: int) -> StageOutput:
    from skillcore.tracking import log_dataset
    from skillworld import generate_benchmarks, generate_pool, world_tree

    params = {"pool_size": cfg.world_pool_size, "suite_size": cfg.world_suite_size, "seed": seed}
    with _stage_run("data", key, params=params):
        world_tree().save(out / "tree.json")
        problems = generate_pool(cfg.world_pool_size, seed, progress=True)
        # The tagger re-derives skills: the pool it sees carries no ground-truth chains.
        write_jsonl(out / "pool.jsonl", (p.model_dump(exclude={"chains"}) for p in problems))
        write_jsonl(
            out / "pool_truth.jsonl", ({"unique_id": p.unique_id, "chains": p.chains} for p in problems)
        )
        # Labelled exemplars for the embedding tagger: a separate draw, not the pool itself.
        write_jsonl(out / "exemplars.jsonl", generate_pool(cfg.world_exemplars, seed + 1, progress=False))
        (out / "benchmarks").mkdir(exist_ok=True)
        for name, rows in generate_benchmarks(seed, cfg.world_suite_size).items():
            write_jsonl(out / "benchmarks" / f"{name}.jsonl", rows)
        log_dataset(out / "pool.jsonl", name="teacher-pool", context="pool")
    return StageOutput(
        {
            "pool": "pool.jsonl",
            "tree": "tree.json",
            "exemplars": "exemplars.jsonl",
            "truth": "pool_truth.jsonl",
            "world": ".",
        },
        {"pool_size": cfg.world_pool_size, "source": "offline world"},
    )


def _user_pool(out: Path, key: str, cfg: DataSection) -> StageOutput:
    """Read the user's pool row by row into the native fields; a row that lacks a field fails with its
    line number."""
    from skillcore import JsonlError, iter_rows, map_record
    from skillcore.tracking import log_dataset
    from tqdm import tqdm

    assert cfg.pool is not None and cfg.tree is not None
    SkillTree.load(cfg.tree, duplicates=cfg.tree_duplicates, raw_levels=cfg.tree_raw_levels).save(
        out / "tree.json"
    )
    rows = []
    try:
        for line, raw in enumerate(tqdm(iter_rows(cfg.pool), desc="reading the pool", unit="row"), start=1):
            try:
                rows.append(map_record(raw, cfg.pool_format).model_dump(exclude={"chains"}))
            except (KeyError, ValueError) as exc:
                raise PipelineInputError(
                    f"{cfg.pool} row {line}: {exc} (pool format {cfg.pool_format!r})"
                ) from exc
    except JsonlError as exc:  # a line that is not a JSON object, or nests too deep
        raise PipelineInputError(str(exc)) from exc
    if not rows:
        raise PipelineInputError(f"{cfg.pool}: the pool is empty")
    ids = [r["unique_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise PipelineInputError(f"{cfg.pool}: {len(ids) - len(set(ids))} rows repeat a unique_id")
    write_jsonl(out / "pool.jsonl", rows)
    outputs = {"pool": "pool.jsonl", "tree": "tree.json"}
    if cfg.exemplars:
        shutil.copyfile(cfg.exemplars, out / "exemplars.jsonl")
        outputs["exemplars"] = "exemplars.jsonl"
    with _stage_run("data", key, params={"pool": cfg.pool, "pool_format": cfg.pool_format}):
        log_dataset(out / "pool.jsonl", name="teacher-pool", context="pool", source=cfg.pool)
    return StageOutput(outputs, {"pool_size": len(rows), "source": cfg.pool})


# ------------------------------------------------------------------------------------------ student
@dataclass
class Student:
    ref: str  # what generation and training load: HF id, directory or models:/ URI
    fingerprint: str  # digest of what pins down its weights


def student(st: Stages, model: str | None) -> Student:
    """A model reference, fingerprinted; or the offline tiny Qwen3 (the shipped base student, registered
    once as ``qwen3-tiny-base@base``)."""
    from distill.models import model_fingerprint, resolve_model

    info: dict[str, Any] = {}
    if model is None:
        from skillworld.bootstrap import DEFAULT_ALIAS, DEFAULT_REGISTERED_NAME, bootstrap

        result = bootstrap(st.workdir / "student", registered_name=DEFAULT_REGISTERED_NAME)
        model = result.model_uri or f"models:/{DEFAULT_REGISTERED_NAME}@{DEFAULT_ALIAS}"
        info = {"bootstrapped": not result.skipped, "source": "registry" if result.skipped else result.source}
    fingerprint = digest_json(model_fingerprint(model, resolve_model(model)))
    st.record("student", model=model, fingerprint=fingerprint[:12], **info)
    return Student(model, fingerprint)


# ------------------------------------------------------------------------------------------ tag
Chains = list[list[str]]


class BatchTagger(Protocol):
    """Tags batches of problems; ``identity`` is what decides its answers (it keys the tag stage)."""

    identity: dict[str, Any]

    def __enter__(self) -> Callable[[Sequence[Any]], list[Chains]]: ...

    def __exit__(self, *exc: object) -> None: ...


class InProcessTagger:
    """The tagging engine in this process (``skilltag``), with a SQLite cache shared by every tag run of a
    workdir (its rows are keyed by problem, tree and backend config, exemplars included)."""

    def __init__(self, cfg: TagSection, tree_path: Path, exemplars: Path | None, cache_path: Path) -> None:
        from skilltag.factory import EngineSettings

        self.settings = EngineSettings(
            tree=str(tree_path),
            backend=cfg.backend,
            cache=str(cache_path),
            exemplars=str(exemplars) if exemplars else None,
            per_leaf=cfg.per_leaf,
            openai_urls=tuple(cfg.openai_urls),
            openai_model=cfg.openai_model,
        )
        self.identity = {
            "kind": "in-process",
            "backend": cfg.backend,
            "per_leaf": cfg.per_leaf,
            "exemplars": digest_path(exemplars) if exemplars else None,
            "openai": [list(cfg.openai_urls), cfg.openai_model] if cfg.backend == "openai" else None,
        }
        self._engine: Any = None

    def __enter__(self) -> Callable[[Sequence[Any]], list[Chains]]:
        from skilltag.factory import build_engine

        self._engine = build_engine(self.settings)
        return lambda batch: [r.chains for r in self._engine.tag(batch)]

    def __exit__(self, *exc: object) -> None:
        if self._engine is not None and self._engine.cache is not None:
            self._engine.cache.close()


def tag(st: Stages, cfg: TagSection, data_result: StageResult, tagger: BatchTagger) -> StageResult:
    """Attribute every pool problem to skill chains (resumable: finished rows are kept)."""
    config: dict[str, Any] = {"tagger": tagger.identity, "limit": cfg.limit}
    if cfg.cascade is not None:  # only then: the keys of LLM-only and embedding runs stay as they were
        config["cascade"] = {**cfg.cascade.model_dump(), "sample_seed": st.seed}
    inputs = {"pool": data_result.digest("pool"), "tree": data_result.digest("tree")}

    def run(out: Path, key: str) -> StageOutput:
        from skillcore import JsonlAppender, map_record
        from skillcore.tracking import log_dataset, log_json
        from tqdm import tqdm

        rows = [map_record(r) for r in _take(read_jsonl(data_result.path("pool")), cfg.limit)]
        path = out / "tagged.jsonl"
        params = {
            "tagger": tagger.identity.get("kind"),
            "n_problems": len(rows),
            "tree_hash": inputs["tree"][:16],
        }
        outputs = {"tagged": "tagged.jsonl"}
        figures: dict[str, Any] = {}
        with _stage_run("tag", key, params=params):
            if cfg.cascade is not None:  # the whole pool at once: a rerun re-asks only what the cache lacks
                figures = tag_cascade(out, rows, cfg, tagger, st.seed)
                outputs.update(cascade="cascade.json", exemplars="exemplars.jsonl")
            else:
                with JsonlAppender(path) as sink:
                    todo = [r for r in rows if r.unique_id not in sink.done_ids]
                    with (
                        tagger as tag_batch,
                        tqdm(
                            total=len(rows), initial=len(rows) - len(todo), desc="tagging", unit="problem"
                        ) as bar,
                    ):
                        for start in range(0, len(todo), cfg.batch_size):
                            batch = todo[start : start + cfg.batch_size]
                            for problem, chains in zip(batch, tag_batch(batch), strict=True):
                                sink.write({**problem.model_dump(), "chains": chains})
                            sink.flush()
                            bar.update(len(batch))
            stats = tag_quality(path, data_result)
            import mlflow

            mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
            log_json(stats, "tag/stats.json")
            log_dataset(path, name="tagged-pool", context="tagged")
        info = {k: v for k, v in stats.items() if not isinstance(v, dict)}
        return StageOutput(outputs, {**info, **figures})

    result = st.cache.run("tag", config, inputs, run)
    st.record("tag", result)
    return result


def tag_cascade(
    out: Path, rows: Sequence[Any], cfg: TagSection, tagger: BatchTagger, seed: int
) -> dict[str, Any]:
    """``tag.cascade``: the LLM (``tag.backend=openai``) tags a seed sample, its tags become the embedding
    tagger's exemplars (``exemplars.jsonl``), the embedding tagger tags the rest and its unsure problems go
    back to the LLM (``skilltag.cascade``). Writes ``tagged.jsonl`` and ``cascade.json`` (LLM calls,
    agreement per leaf, fallbacks) in ``out``; logs the report; returns its headline figures."""
    from skillcore.tracking import log_json
    from skilltag.cascade import CascadeConfig, embedding_from, run_cascade, summary, write_result
    from skilltag.factory import build_engine

    if cfg.cascade is None or not isinstance(tagger, InProcessTagger):
        raise PipelineInputError("tag.cascade runs the in-process tagger with tag.backend=openai")
    config = CascadeConfig(
        seed_size=cfg.cascade.seed_size,
        holdout=cfg.cascade.holdout,
        threshold=cfg.cascade.threshold,
        per_leaf=cfg.per_leaf,
        sample_seed=seed,
        batch_size=cfg.batch_size,
    )
    llm = build_engine(tagger.settings)
    try:
        result = run_cascade(rows, llm, embedding_from(tagger.settings), config, out / "exemplars.jsonl")
    finally:
        getattr(llm.backend, "close", lambda: None)()
        if llm.cache is not None:
            llm.cache.close()
    write_result(result, out / "tagged.jsonl", out / "cascade.json")
    log_json(result.report, "tag/cascade.json")
    figures = {f"cascade_{k}": v for k, v in summary(result.report).items() if v is not None}
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in figures.items()})
    return figures


def tag_quality(tagged_path: Path, data_result: StageResult) -> dict[str, Any]:
    """Coverage per leaf, chains per problem, and (offline world) leaf P/R/F1 against the ground truth."""
    from skilltag.quality import leaf_prf, tag_stats

    rows = list(read_jsonl(tagged_path))
    full = tag_stats(rows, SkillTree.load(data_result.path("tree")))
    stats: dict[str, Any] = {
        "problems": full["n_problems"],
        "untagged": full["n_untagged"],
        "mean_chains": round(full["chains_per_problem"]["mean"], 3),
        "leaves_covered": full["leaves_covered"],
        "chains_per_problem": full["chains_per_problem"]["histogram"],
        "coverage_per_leaf": full["coverage"],
    }
    if "truth" in data_result.outputs:
        truth = {r["unique_id"]: r["chains"] for r in read_jsonl(data_result.path("truth"))}
        scored = [r for r in rows if r["unique_id"] in truth]  # a problem without ground truth is not scored
        quality = leaf_prf([truth[r["unique_id"]] for r in scored], [r["chains"] for r in scored])
        stats.update({f"leaf_{k}": round(v, 4) for k, v in quality.items() if k != "exact_set"})
    return stats


# ------------------------------------------------------------------------------------------ benchmarks
def benchmarks(
    st: Stages, cfg: EvaluateSection, data_result: StageResult, tagger: BatchTagger
) -> StageResult:
    """The benchmark problems, each with skill chains for the per-skill analysis: the offline world's
    suites (chains known), or registered benchmarks from the Hub or local files, tagged like the pool."""
    from distill.eval import load_benchmarks

    world = "world" in data_result.outputs
    sources = {name: digest_path(path) for name, path in cfg.sources.items()}
    inputs = {"world": data_result.digest("world")} if world else {"sources": digest_json(sources)}
    config = {"names": cfg.benchmarks, "tagger": None if world else tagger.identity}

    def run(out: Path, key: str) -> StageOutput:
        problems, repeats = load_benchmarks(
            cfg.benchmarks, world_dir=data_result.path("world") if world else None, sources=cfg.sources
        )
        if not world:  # real benchmarks carry no chains: tag them like the pool, for the analysis
            with tagger as tag_batch:
                problems = {
                    name: [
                        TaggedProblem(**p.model_dump(exclude={"chains"}), chains=c)
                        for p, c in zip(rows, tag_batch(rows) if rows else [], strict=True)
                    ]
                    for name, rows in problems.items()
                }
        for name, rows in problems.items():
            write_jsonl(out / f"{name}.jsonl", rows)
        (out / "repeats.json").write_text(json.dumps(repeats))
        return StageOutput({"benchmarks": "."}, {n: len(r) for n, r in problems.items()})

    result = st.cache.run("benchmarks", config, inputs, run)
    st.record("benchmarks", result)
    return result


def read_benchmarks(result: StageResult) -> tuple[dict[str, list[TaggedProblem]], dict[str, int]]:
    repeats: dict[str, int] = json.loads((result.dir / "repeats.json").read_text())
    problems = {
        name: [TaggedProblem.model_validate(r) for r in read_jsonl(result.dir / f"{name}.jsonl")]
        for name in repeats
    }
    return problems, repeats


# ------------------------------------------------------------------------------------------ profile
class Profiler(Protocol):
    """Answers and judges problems with a student, writing ``verdicts.jsonl`` into ``out``; ``identity``
    says what decides the answers besides the student, the problems and the sampling."""

    identity: dict[str, Any]

    def __call__(
        self, student: str, problems: list[TaggedProblem], tree_path: Path, sampling: Any, out: Path, key: str
    ) -> dict[str, Any]: ...


class InProcessProfiler:
    """``distill.profiling.run_profile`` in this process (resumable in the stage's folder)."""

    def __init__(self, engine: EngineSection) -> None:
        self.engine = engine
        self.identity = {"kind": "in-process", "engine": engine.kind, **engine.options()}
        if engine.workers > 1:  # sampled answers depend on how the problems are split into batches
            self.identity["workers"] = engine.workers

    def __call__(
        self, student: str, problems: list[TaggedProblem], tree_path: Path, sampling: Any, out: Path, key: str
    ) -> dict[str, Any]:
        import mlflow
        from distill.profiling import ProfileConfig, run_profile

        result, _, run_id = run_profile(
            student,
            SkillTree.load(tree_path),
            problems,
            out_dir=out,
            engine=self.engine.kind,
            engine_opts=self.engine.options(),
            config=ProfileConfig(sampling=sampling),
            on_mismatch="restart",
            workers=self.engine.workers,
        )
        if run_id is not None:
            mlflow.MlflowClient().set_tag(run_id, STAGE_KEY_TAG, key)
        weakest = ", ".join(f"{r['chain'].split('->')[-1]} {r['accuracy']:.0%}" for r in result.weakest(5))
        return {"accuracy": round(result.accuracy, 4), "weakest": weakest, "run_id": run_id}


def profile(
    st: Stages,
    cfg: ProfileSection,
    tagged: StageResult,
    tree_digest: str,
    tree_path: Path,
    the_student: Student,
    profiler: Profiler,
) -> StageResult:
    """The student answers a seeded sample of the tagged pool; verdicts and the per-skill profile are kept."""
    config = {
        "limit": cfg.limit,
        "sampling": cfg.sampling.model_dump(mode="json"),
        "profiler": profiler.identity,
    }
    inputs = {"tagged": tagged.digest("tagged"), "tree": tree_digest, "student": the_student.fingerprint}

    def run(out: Path, key: str) -> StageOutput:
        rows = [
            r
            for r in (TaggedProblem.model_validate(x) for x in read_jsonl(tagged.path("tagged")))
            if r.chains
        ]
        random.Random(st.seed).shuffle(rows)
        problems = sorted(rows[: cfg.limit] if cfg.limit else rows, key=lambda r: r.unique_id)
        if not problems:
            raise PipelineInputError("no tagged pool problem carries a skill chain: nothing to profile")
        info = profiler(the_student.ref, problems, tree_path, cfg.sampling, out, key)
        if not (out / "verdicts.jsonl").is_file():
            raise RuntimeError(f"the profiler wrote no verdicts.jsonl into {out}")
        verdicts = [Verdict.model_validate(r) for r in read_jsonl(out / "verdicts.jsonl")]
        judged = SkillProfile.from_records(SkillTree.load(tree_path), problems, verdicts, unknown="skip")
        # the profile's tiers: how many leaves are mastered, weak, at the floor (the paper's regime)
        return StageOutput(
            {"verdicts": "verdicts.jsonl"}, {"problems": len(problems), **info, **judged.tier_counts()}
        )

    result = st.cache.run("profile", config, inputs, run)
    st.record("profile", result)
    return result


# ------------------------------------------------------------------------------------------ select
def select(
    st: Stages, cfg: SelectSection, tagged: StageResult, verdicts: StageResult, tree_result: StageResult
) -> dict[str, StageResult]:
    """K training problems by the chosen strategy, and by each baseline for comparison.

    The pool is every tagged problem that carries a chain, with the verdicts of those the profile stage
    judged; ``select.candidates`` decides what the strategies draw from (``all``: every tagged problem, the
    leaf accuracies still measured on the judged ones; ``judged``: the judged ones only)."""
    out: dict[str, StageResult] = {}
    inputs = {
        "tagged": tagged.digest("tagged"),
        "verdicts": verdicts.digest("verdicts"),
        "tree": tree_result.digest("tree"),
    }
    for name in [cfg.strategy, *[b for b in cfg.baselines if b != cfg.strategy]]:
        config = cfg.for_strategy(name)

        def run(folder: Path, key: str, config: Any = config, name: str = name) -> StageOutput:
            import mlflow
            from skillselect import Pool, log_selection
            from skillselect import select as choose

            tree = SkillTree.load(tree_result.path("tree"))
            verdict_rows = [Verdict.model_validate(r) for r in read_jsonl(verdicts.path("verdicts"))]
            rows = [TaggedProblem.model_validate(r) for r in read_jsonl(tagged.path("tagged"))]
            pool = Pool.from_records([r for r in rows if r.chains], verdict_rows)
            selection = choose(pool, tree, config)
            selection.save(out=folder / "selected.jsonl", report_dir=folder)
            run_id = log_selection(selection, dataset_name=f"selected-{name}")
            mlflow.MlflowClient().set_tag(run_id, STAGE_KEY_TAG, key)
            keys = (
                *("l2_to_target", "n_leaves_selected", "n_selected_correct", "n_selected_wrong"),
                # K / candidates: the share of what it could draw from that the selection takes
                *("candidates", "n_candidates", "n_judged_candidates", "k_over_candidates"),
                "n_leaves_unjudged",  # leaves without a judged problem: weight 0, never drawn through
                # the target's spread: its largest leaf share, and largest over smallest positive share
                *("max_target_share", "target_share_ratio"),
            )
            summary = {
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in selection.summary.items()
                if k in keys
            }
            return StageOutput(
                {"selected": "selected.jsonl", "report": "."},
                {"k": len(selection.unique_ids), "run_id": run_id, **summary},
            )

        out[name] = st.cache.run("select", _selection_key(config), inputs, run, label=name)
        st.record(f"select:{name}", out[name])
    return out


# the accuracy-to-weight settings: they shape only the strategies that read the profile's accuracy
WEIGHT_FIELDS = {"temperature", "w_max", "use_posterior", "prior", "smoothing"}


def _selection_key(config: Any) -> dict[str, Any]:
    """What decides a selection: ``random`` or ``balanced`` do not change with the weight settings;
    ``candidates`` (what a strategy draws from) shapes every strategy, so it is always in the key."""
    from skillselect.core import STRATEGIES

    spec = STRATEGIES.get(config.strategy)
    needs_weights = spec is None or spec.needs_accuracy
    return dict(config.model_dump(mode="json", exclude=None if needs_weights else WEIGHT_FIELDS))


# ------------------------------------------------------------------------------------------ format + train
def format_examples(
    st: Stages, fmt: Any, selected: StageResult, the_student: Student, label: str
) -> StageResult:
    """Training rows (TRL prompt-completion, the prompt rendered by the student's chat template) from a
    selection: skill-aware targets carry the Skills block, placed for that template (the placement used is
    in the stage's figures). What trains must be exactly the target (``check_rendered``)."""
    # "rows": the row layout, so a folder of an older layout (conversational rows) is not reused
    config = {**fmt.model_dump(mode="json"), "rows": "prompt-completion"}
    inputs = {"selected": selected.digest("selected"), "student": the_student.fingerprint}

    def run(out: Path, key: str) -> StageOutput:
        from distill.formatting import check_rendered
        from distill.formatting import format_examples as build
        from distill.models import resolve_model
        from transformers import AutoTokenizer

        problems = [TaggedProblem.model_validate(r) for r in read_jsonl(selected.path("selected"))]
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(the_student.ref))
        rows, stats = build(problems, fmt, tokenizer)
        check_rendered(tokenizer, rows)
        write_jsonl(out / "train.jsonl", rows)
        return StageOutput({"train": "train.jsonl"}, {"examples": len(rows), **stats.model_dump()})

    result = st.cache.run("format", config, inputs, run, label=label)
    st.record(f"format:{label}", result)
    return result


def train(
    st: Stages, cfg: TrainSection, formatted: StageResult, the_student: Student, label: str, fmt: Any
) -> StageResult:
    """SFT of the student on the formatted rows through TRL; resumes from its last checkpoint."""
    settings = cfg.sft
    config = settings.model_dump(mode="json", exclude=NOT_IN_TRAIN_KEY)
    inputs = {"train": formatted.digest("train"), "student": the_student.fingerprint}

    def run(out: Path, key: str) -> StageOutput:
        import mlflow
        from distill.sft import train_sft
        from skillcore.tracking import log_dataset, log_json

        rows = list(read_jsonl(formatted.path("train")))
        params = {
            "student": the_student.ref,
            "arm": label,
            "preset": cfg.preset,
            "train_key": key,
            "n_examples": len(rows),
            **{f"sft.{k}": v for k, v in settings.model_dump().items() if k != "extra"},
            **{f"format.{k}": v for k, v in fmt.model_dump().items() if k != "display_names"},
            "format.placement_used": formatted.info.get("placement"),
        }
        with _stage_run("train", key, params=params, name=f"train:{label}") as run:
            dataset = log_dataset(formatted.path("train"), name=f"train-{label}", context="training")
            result = train_sft(the_student.ref, rows, settings, out_dir=out)
            mlflow.log_metrics(
                {
                    "train_loss": result.train_loss,
                    "train_seconds": result.seconds,
                    "steps_per_second": result.steps_per_second,
                    "tokens_per_second": result.tokens_per_second,
                }
            )
            log_json(result, "train/summary.json")
        return StageOutput(
            {"model": os.path.relpath(result.model_dir, out)},
            {
                "preset": cfg.preset,
                "steps": result.steps,
                "loss": round(result.train_loss, 4),
                "seconds": round(result.seconds, 1),
                "resumed": result.resumed_from is not None,
                "run_id": run.info.run_id,
                "dataset_digest": dataset.digest,
            },
            keyed={"model"},
        )

    result = st.cache.run("train", config, inputs, run, label=label)
    st.record(f"train:{label}", result)
    return result


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(
    st: Stages,
    cfg: EvaluateSection,
    engine: EngineSection,
    bench: StageResult,
    model: str,
    model_digest: str,
    label: str,
) -> StageResult:
    """The model on every benchmark (the shared rollout, resumable per benchmark), scored and logged."""
    config = {"eval": cfg.eval.model_dump(mode="json"), "engine": engine.kind, "options": engine.options()}
    if engine.workers > 1:  # batches are made per shard: padding can move a greedy answer's last bits
        config["workers"] = engine.workers
    inputs = {"model": model_digest, "benchmarks": bench.digest("benchmarks")}

    def run(out: Path, key: str) -> StageOutput:
        from distill.eval import run_evaluation

        problems, repeats = read_benchmarks(bench)
        params = {
            "model": model,
            "engine": engine.kind,
            "samples_per_problem": cfg.eval.samples_per_problem,
            "limit": cfg.eval.limit,
            **{f"sampling.{k}": v for k, v in cfg.eval.sampling.model_dump().items()},
        }
        with _stage_run("evaluate", key, params=params, name=f"evaluate:{label}") as run:
            report = run_evaluation(
                model,
                problems,
                cfg.eval,
                out_dir=out,
                engine=engine.kind,
                engine_opts=engine.options(),
                repeats=repeats,
                workers=engine.workers,
            )
        scores = {n: round(r.score.avg_at_k.value, 6) for n, r in report.benchmarks.items()}
        return StageOutput(
            {"report": "eval_report.json", "answers": "."},
            {"average": round(report.headline, 6), "scores": scores, "run_id": run.info.run_id},
        )

    result = st.cache.run("evaluate", config, inputs, run, label=label)
    st.record(f"evaluate:{label}", result)
    return result


def read_verdicts(folder: Path) -> list[Verdict]:
    """A benchmark's verdicts as the rollout saved them (shard files included)."""
    rows: list[Verdict] = []
    for path in sorted(folder.glob("verdicts*.jsonl")):
        rows += [Verdict.model_validate(r) for r in read_jsonl(path, skip_bad=True)]
    return rows


def read_attempts(folder: Path) -> list[Attempt]:
    """A benchmark's answers as the rollout saved them (shard files included): the response text the
    skill-naming analysis reads its Skills blocks from."""
    rows: list[Attempt] = []
    for path in sorted(folder.glob("attempts*.jsonl")):
        rows += [Attempt.model_validate(r) for r in read_jsonl(path, skip_bad=True)]
    return rows


# ------------------------------------------------------------------------------------------ analysis
def analysis(
    st: Stages,
    label: str,
    tree_result: StageResult,
    bench: StageResult,
    before: StageResult,
    after: StageResult,
    selected: StageResult,
    fmt: Any = None,
) -> StageResult:
    """Per-skill accuracy before vs after fine-tuning, against the selection's share of each leaf: does the
    gain concentrate on the skills the selection emphasised?

    And skill naming (``distill.eval.naming_report``): how often the fine-tuned student's own Skills block
    names each problem's skills, and its accuracy when it does and when it does not (``naming.csv``,
    ``naming.md``, metrics ``naming/...``). ``fmt`` (the arm's ``FormatConfig``) says how the targets named
    the chains and whether the arm is skill-aware: a plain arm (or none given) logs the block rate only."""
    inputs = {
        "tree": tree_result.digest("tree"),
        "benchmarks": bench.digest("benchmarks"),
        "before": before.digest("report"),
        "after": after.digest("report"),
        "selected": selected.digest("selected"),
    }

    def run(out: Path, key: str) -> StageOutput:
        import matplotlib

        matplotlib.use("Agg")
        import mlflow
        from distill.eval import (
            gain_correlation,
            gains_markdown,
            naming_report,
            plot_gains,
            selection_share,
            skill_gains,
        )
        from skillcore.tracking import log_metrics_table

        problems_by_bench, _ = read_benchmarks(bench)
        problems: list[TaggedProblem] = []
        verdicts_before: list[Verdict] = []
        verdicts_after: list[Verdict] = []
        for name, rows in problems_by_bench.items():
            # ids are unique within a benchmark only: prefix them with the benchmark's name
            def rename(record: Any, bench_name: str = name) -> Any:
                return record.model_copy(update={"unique_id": f"{bench_name}/{record.unique_id}"})

            problems += [rename(p) for p in rows if p.chains]
            verdicts_before += [rename(v) for v in read_verdicts(before.dir / name)]
            verdicts_after += [rename(v) for v in read_verdicts(after.dir / name)]
        if not problems:
            return StageOutput({}, {"skipped": "no benchmark problem carries skill chains"})
        keep = {p.unique_id for p in problems}
        chosen = [TaggedProblem.model_validate(r) for r in read_jsonl(selected.path("selected"))]
        frame = skill_gains(
            SkillTree.load(tree_result.path("tree")),
            problems,
            [v for v in verdicts_before if v.unique_id in keep],
            [v for v in verdicts_after if v.unique_id in keep],
            selection_share(chosen),
        )
        corr = gain_correlation(frame)
        frame.to_csv(out / "skill_gains.csv", index=False)
        (out / "skill_gains.md").write_text(gains_markdown(frame))
        figure = plot_gains(frame, title=f"Per-skill gain vs selection share ({label})")
        figure.savefig(out / "skill_gains.png", dpi=120, bbox_inches="tight")
        naming = naming_report(
            {name: [p for p in rows if p.chains] for name, rows in problems_by_bench.items()},
            {name: read_attempts(after.dir / name) for name in problems_by_bench},
            {name: read_verdicts(after.dir / name) for name in problems_by_bench},
            fmt=fmt,
        )
        naming.frame().to_csv(out / "naming.csv", index=False)
        (out / "naming.md").write_text(naming.markdown())
        skill_aware = bool(getattr(fmt, "skill_aware", False))
        with _stage_run("analysis", key, name=f"analysis:{label}"):
            mlflow.log_metrics({f"gain_{k}": float(v) for k, v in corr.items() if isinstance(v, int | float)})
            mlflow.log_metrics(naming.metrics(block_only=not skill_aware))
            log_metrics_table(frame, "analysis/skill_gains.json")
            for name in ("skill_gains.csv", "skill_gains.md", "skill_gains.png", "naming.csv", "naming.md"):
                mlflow.log_artifact(str(out / name), artifact_path="analysis")
        overall = naming.overall
        return StageOutput(
            {"gains": "skill_gains.csv", "figure": "skill_gains.png", "naming": "naming.csv"},
            {
                "leaves": corr["n_leaves"],
                "pearson": corr["pearson"],
                "spearman": corr["spearman"],
                "block_rate": _rounded(overall.block_rate),
                "naming_rate": _rounded(overall.rate),
            },
        )

    # the format is in the key: it says how the targets named the chains, which the naming compares with
    config = {"naming": fmt.model_dump(mode="json") if fmt is not None else None}
    result = st.cache.run("analysis", config, inputs, run, label=label)
    st.record(f"analysis:{label}", result)
    return result


# ------------------------------------------------------------------------------------------ register
def register(
    st: Stages, name: str, trained: StageResult, tuned: StageResult, lineage: dict[str, Any]
) -> dict[str, Any]:
    """Register the fine-tuned checkpoint (alias ``candidate``) with its lineage and scores, once per train
    key, and move ``champion`` to it only when its benchmark average beats the current champion's."""
    from distill.registry import (
        find_version,
        move_alias,
        promote_if_better,
        register_checkpoint,
        set_version_tags,
    )
    from skillcore.tracking import log_json, stage_run

    report = json.loads(tuned.path("report").read_text())
    k_of = {b: s["k"] for b, s in report["benchmarks"].items()}
    scores = {f"eval.{b}.avg_at_{k_of[b]}": v for b, v in tuned.info["scores"].items()}
    tags = {"skilldistill.train_key": trained.key, **lineage, "eval.average": tuned.info["average"], **scores}
    with stage_run("register", params={"registry_model": name}, run_name="register") as run:
        version = find_version(name, {"skilldistill.train_key": trained.key})
        reused = version is not None
        if version is None:
            version = register_checkpoint(trained.path("model"), name, tags=tags).version
        else:  # this very checkpoint is registered already: refresh its tags, move the alias back to it
            set_version_tags(name, version, tags)
            move_alias(name, "candidate", version)
        decision = promote_if_better(name, version)
        log_json(
            {"version": version, "tags": tags, "promotion": decision.as_dict()}, "register/decision.json"
        )
    is_champion = decision.promoted or decision.previous_version == version
    base = lineage.get("eval.base_average")
    beats_base = base is None or tuned.info["average"] > base
    st.record(
        "register",
        model=f"models:/{name}/{version}",
        candidate=f"models:/{name}@candidate",
        champion=is_champion,
        reused=reused,
        beats_base=beats_base,
        run_id=run.info.run_id,
        reason=decision.reason,
    )
    return {
        "version": version,
        "promoted": decision.promoted,
        "champion": is_champion,
        "beats_base": beats_base,
    }


def _rounded(value: float) -> float | None:
    """A ratio for a stage's info (JSON): rounded, or None where it is undefined (NaN)."""
    return round(value, 4) if math.isfinite(value) else None


def _take(rows: Any, limit: int | None) -> Any:
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        yield row
