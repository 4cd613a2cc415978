"""The pipeline's one configuration tree, loaded from preset files and overridden from the command line.

Resolution order (later wins):

1. a preset shipped with this package (``cpu-demo``, ``paper``, ``smoke``: ``skillpipe/presets/<name>.yaml``),
   or a user's file (``--config FILE``); either may start from a preset with ``base: <preset>``;
2. the common command-line flags (``--registry-model``, ``--student``, ``--budget``, ...), as dotted keys;
3. ``--set section.key=value`` pairs (values are parsed as YAML: ``1e-4``, ``true``, ``[a, b]``).

Sections reuse the libraries' own typed configs: ``select`` is ``skillselect.SelectConfig``, ``format``
is ``distill.formatting.FormatConfig``, ``train.sft`` is ``distill.sft.SFTSettings`` (resolved from
``train.preset`` plus the fields given), ``evaluate.eval`` is ``distill.eval.EvalConfig`` (likewise from
``evaluate.preset``), ``profile.sampling`` is ``distill.engines.SamplingConfig``. One ``seed`` seeds every
stage. Every error names the key and the file it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from distill.engines import SamplingConfig
from distill.eval import EvalConfig, load_eval_config
from distill.formatting import FormatConfig
from distill.sft import SFTSettings, load_sft_settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from skillselect import SelectConfig


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key, the value and where it came from."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    """The teacher pool and the skill tree; without ``pool`` the offline world is generated."""

    pool: str | None = Field(default=None, description="JSONL file or hf://owner/name[:split]")
    tree: str | None = Field(default=None, description="skill tree JSON/YAML (needed with pool)")
    tree_duplicates: Literal["error", "merge"] = Field(
        default="error",
        description="sibling skills with the same name: 'error' refuses the tree, 'merge' merges",
    )
    tree_raw_levels: Literal["instances", "groups"] = Field(
        default="instances",
        description="EvalTree raw trees: 'instances' keeps instance nodes as leaves, 'groups' stops at groups",
    )
    pool_format: str = Field(default="native", description="native, openmathreasoning or math")
    exemplars: str | None = Field(default=None, description="tagged JSONL for the embedding tagger")
    world_pool_size: int = Field(default=5_000, ge=1, description="offline world: teacher-pool problems")
    world_suite_size: int = Field(default=200, ge=1, description="offline world: problems per suite")
    world_exemplars: int = Field(default=1_000, ge=0, description="offline world: labelled exemplars")

    @model_validator(mode="after")
    def _pool_needs_tree(self) -> DataSection:
        if self.pool is not None and self.tree is None:
            raise ValueError("data.pool needs data.tree (--tree: the skill tree to tag against)")
        return self


class StudentSection(_Section):
    model: str | None = Field(
        default=None, description="HF id, local directory or models:/ URI (None: the shipped tiny Qwen3)"
    )


class CascadeSection(_Section):
    """Cascade tagging (``skilltag.cascade``): the LLM tags ``seed_size`` problems, their tags (less the
    ``holdout`` slice that measures agreement) teach the embedding tagger, which tags the rest; problems
    whose cheap confidence is below ``threshold`` go back to the LLM."""

    seed_size: int = Field(default=2_000, ge=1, description="problems the LLM tags first")
    holdout: int = Field(default=200, ge=0, description="of the seed: kept out of the exemplars")
    threshold: float = Field(default=0.65, description="cheap confidence below this: back to the LLM")

    @model_validator(mode="after")
    def _holdout_below_seed(self) -> CascadeSection:
        if self.holdout >= self.seed_size:
            raise ValueError(f"holdout ({self.holdout}) must be below seed_size ({self.seed_size})")
        return self


class TagSection(_Section):
    tagger: str = Field(default="in-process", description="'in-process' or grpc://host:port")
    backend: Literal["embedding", "openai"] = "embedding"
    per_leaf: int = Field(default=20, ge=1, description="embedding: exemplars per leaf")
    limit: int | None = Field(default=None, ge=1, description="tag only the first N pool problems")
    batch_size: int = Field(default=256, ge=1)
    openai_urls: list[str] = Field(default_factory=list)
    openai_model: str = ""
    cascade: CascadeSection | None = Field(
        default=None, description="openai backend: cascade to the embedding tagger (None: LLM only)"
    )

    @model_validator(mode="after")
    def _cascade_needs_the_llm(self) -> TagSection:
        if self.cascade is not None and (self.backend != "openai" or self.tagger != "in-process"):
            raise ValueError(
                "tag.cascade needs tag.backend=openai (the LLM tags the seed) and the in-process tagger"
            )
        return self


class EngineSection(_Section):
    kind: Literal["hf", "vllm", "openai"] = "hf"
    url: str | None = Field(default=None, description="OpenAI-compatible base URL for kind=openai")
    batch_size: int = Field(default=64, ge=1, description="hf: prompts per generate call")
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm: GPUs per engine")
    workers: int = Field(
        default=1,
        ge=1,
        description="hf: processes answering shards of the problems side by side, one torch thread each "
        "(CPU data parallelism; profiling and evaluation)",
    )

    @model_validator(mode="after")
    def _url(self) -> EngineSection:
        if self.kind == "openai" and not self.url:
            raise ValueError("engine.kind=openai needs engine.url (--engine-url http://host:port/v1)")
        if self.workers > 1 and self.kind != "hf":
            raise ValueError(f"engine.workers is for kind=hf (CPU processes); {self.kind} batches on its own")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword options of ``distill.engines.make_engine`` for this engine."""
        if self.kind == "openai":
            return {"base_url": self.url}
        if self.kind == "vllm":
            return {"tensor_parallel_size": self.tensor_parallel_size}
        return {"batch_size": self.batch_size}


class ProfileSection(_Section):
    profiler: str = Field(default="in-process", description="'in-process' or http://host:port")
    limit: int | None = Field(
        default=2_000, ge=1, description="pool problems the student answers (None: all)"
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.6, max_new_tokens=384)
    )


class SelectSection(SelectConfig):
    """``skillselect.SelectConfig`` (strategy, k, temperature, w_max, ...) plus the baselines selected
    beside it for comparison."""

    baselines: list[str] = Field(default_factory=lambda: ["random"])

    def for_strategy(self, strategy: str) -> SelectConfig:
        return SelectConfig.model_validate({**self.model_dump(exclude={"baselines"}), "strategy": strategy})


class TrainSection(_Section):
    preset: str = Field(default="cpu-demo", description="distill SFT preset name or YAML file")
    sft: SFTSettings = Field(default_factory=SFTSettings)


class EvaluateSection(_Section):
    preset: str = Field(default="cpu-demo", description="distill evaluation preset name or YAML file")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    benchmarks: list[str] = Field(
        default_factory=lambda: ["aime24", "aime25", "amc23", "math-l5", "olympiadbench"]
    )
    sources: dict[str, str] = Field(default_factory=dict, description="benchmark -> local file or folder")


class RegistrySection(_Section):
    name: str = Field(default="", description="registered-model name of the fine-tuned student")


class PipelineConfig(_Section):
    """Everything one pipeline call does. ``preset`` records where it started from."""

    preset: str = "cpu-demo"
    seed: int = 0
    workdir: str | None = Field(default=None, description="stage outputs (default runs/<registry.name>)")
    data: DataSection = Field(default_factory=DataSection)
    student: StudentSection = Field(default_factory=StudentSection)
    tag: TagSection = Field(default_factory=TagSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    profile: ProfileSection = Field(default_factory=ProfileSection)
    select: SelectSection = Field(default_factory=SelectSection)
    format: FormatConfig = Field(default_factory=lambda: FormatConfig(skill_aware=True))
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    registry: RegistrySection = Field(default_factory=RegistrySection)

    @property
    def offline(self) -> bool:
        """No pool given: the generated offline world (and, without a student, the shipped tiny Qwen3)."""
        return self.data.pool is None

    def resolved_workdir(self) -> Path:
        return Path(self.workdir) if self.workdir else Path("runs") / self.registry.name

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------- loading
def preset_names() -> list[str]:
    folder = resources.files("skillpipe").joinpath("presets")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a pipeline config holds a mapping, got {type(data).__name__}")
    return data


def read_preset(name: str) -> dict[str, Any]:
    """A shipped preset; ``base: <preset>`` in it starts from another one."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    text = resources.files("skillpipe").joinpath(f"presets/{name}.yaml").read_text(encoding="utf-8")
    return _with_base(_read_yaml(text, f"preset {name}"), name)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A user's config file; ``base: <preset>`` starts it from a shipped preset."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    return _with_base(_read_yaml(file.read_text(encoding="utf-8"), str(file)), file.name)


def _with_base(data: dict[str, Any], name: str) -> dict[str, Any]:
    base = data.pop("base", None)
    if base is None:
        data.setdefault("preset", name)
        return data
    merged = merge(read_preset(str(base)), data)
    merged["preset"] = f"{merged.get('preset')}+{name}"
    return merged


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of mappings (``over`` wins; lists and scalars are replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["select.w_max=5", "train.sft.learning_rate=1e-4"]`` -> a nested mapping; values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({exc})") from exc
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with suppress(ValueError):
                value = float(value)
        out = merge(out, dotted(key, value))
    return out


def dotted(key: str, value: Any) -> dict[str, Any]:
    node: Any = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return dict(node)


def load_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> PipelineConfig:
    """The resolved config: preset or file, then ``overrides`` (nested), then ``--set`` pairs."""
    if preset is not None and config_file is not None:
        raise ConfigError("give --preset or --config, not both (a config file may say 'base: <preset>')")
    raw = read_config_file(config_file) if config_file is not None else read_preset(preset or "cpu-demo")
    raw = merge(raw, overrides or {})
    raw = merge(raw, parse_set(sets or []))
    where = (
        f"config (--config {config_file}"
        if config_file is not None
        else f"config (preset {raw.get('preset')}"
    )
    where += ", flags and --set)" if overrides or sets else ")"
    return resolve(raw, where)


def resolve(raw: dict[str, Any], where: str = "config") -> PipelineConfig:
    """Validate a raw mapping: SFT and evaluation settings start from their presets, one seed for all."""
    nested = {"train": "sft", "evaluate": "eval", "profile": "sampling", "select": None}
    for section, inner in nested.items():
        value = raw.get(section)
        if isinstance(value, dict) and inner is not None:
            value = value.get(inner)
            section = f"{section}.{inner}"
        if not isinstance(value, dict | None):
            raise ConfigError(f"{where}: {section} holds a mapping of settings, got {value!r}")
    raw = dict(raw)
    seed = raw.get("seed", 0)
    train = dict(raw.get("train") or {})
    train_preset = str(train.get("preset", "cpu-demo"))
    sft = _section(
        where,
        "train.sft",
        lambda: load_sft_settings(train_preset, **{**(train.get("sft") or {}), "seed": seed}),
    )
    raw["train"] = {**train, "preset": train_preset, "sft": sft}
    evaluate = dict(raw.get("evaluate") or {})
    eval_preset = str(evaluate.get("preset", "cpu-demo"))
    ev = _section(
        where,
        "evaluate.eval",
        lambda: load_eval_config(eval_preset, **{**(evaluate.get("eval") or {}), "seed": seed}),
    )
    raw["evaluate"] = {**evaluate, "preset": eval_preset, "eval": ev}
    profile = dict(raw.get("profile") or {})
    profile["sampling"] = {**(profile.get("sampling") or {}), "seed": seed}
    raw["profile"] = profile
    raw["select"] = {**(raw.get("select") or {}), "seed": seed}
    return _section(where, "", lambda: PipelineConfig.model_validate(raw))


def _section(where: str, prefix: str, build: Callable[[], Any]) -> Any:
    """Run a validation; its errors name the dotted key (``train.sft.learning_rate``) and the source."""
    try:
        return build()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join([prefix] * bool(prefix) + [str(p) for p in err['loc']]) or '(top)'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" and _short(err["input"]) else "")
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    except ValueError as exc:  # an unknown SFT/evaluation preset, a bad preset file
        raise ConfigError(f"{where}: {prefix}: {exc}") from exc


def _short(value: Any) -> bool:
    return not isinstance(value, dict | list) and len(repr(value)) <= 80
