"""The MLflow model registry: log saved checkpoints, register versions with lineage tags, move aliases.

This is the one module of the project that logs, registers and promotes models. Every version is logged
with ``mlflow.transformers`` from the checkpoint folder itself (``transformers_model="<folder>"``): MLflow
copies the folder and reads only its config and tokenizer, so an 8B student is never loaded into memory
just to be logged. Versions carry their lineage as tags (selection run, dataset digest, strategy, preset,
eval scores: whatever the caller passes) and move through aliases, never stages: ``candidate`` for the
newest version, ``champion`` for the best one so far (``promote_if_better``). ``models:/name@alias`` loads
back through ``distill.models.resolve_model``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import ActiveRun
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_TASK = "text-generation"
CANDIDATE = "candidate"
CHAMPION = "champion"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class RegisteredCheckpoint:
    """One registered model version: ``uri`` pins the version, ``alias_uri`` follows the alias."""

    name: str
    version: str
    alias: str
    uri: str
    alias_uri: str
    run_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromotionDecision:
    """What ``promote_if_better`` did with a candidate version, and why."""

    promoted: bool
    reason: str
    name: str
    version: str
    score: float
    champion_alias: str
    previous_version: str | None
    previous_score: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference adds torchvision, which is not installed here."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "tokenizers", "mlflow")]


def name_filter(name: str) -> str:
    """A ``search_model_versions`` filter for one registered-model name, quoted so that a quote in the name
    cannot break it (``name='it's'`` is a syntax error, which read as "no such model")."""
    if "'" not in name:
        return f"name='{name}'"
    if '"' not in name:
        return f'name="{name}"'
    raise ValueError(f"registered-model name {name!r} holds both quote characters; choose another name")


def registered_model_exists(name: str) -> bool:
    """Whether ``name`` has at least one version in the registry of the current tracking store."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return bool(MlflowClient().search_model_versions(name_filter(name), max_results=1))
    except MlflowException:
        return False


def find_version(name: str, tags: Mapping[str, Any]) -> str | None:
    """The newest version of ``name`` whose tags include all of ``tags`` (values compared stringified), or
    None: how a rerun recognises a checkpoint it already registered."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    wanted = {key: _tag_value(value) for key, value in tags.items()}
    try:
        versions = MlflowClient().search_model_versions(name_filter(name))
    except MlflowException:
        return None
    matching = [int(v.version) for v in versions if all(v.tags.get(k) == val for k, val in wanted.items())]
    return str(max(matching)) if matching else None


def log_checkpoint(
    model_dir: str | Path,
    *,
    artifact_name: str = "model",
    registered_name: str | None = None,
    task: str = DEFAULT_TASK,
    requirements: list[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log a saved checkpoint folder as an MLflow ``transformers`` model under the active run.

    The folder is what ``save_pretrained`` writes (config, weights, tokenizer with its chat template,
    generation config). MLflow copies it verbatim into the model's ``model/`` folder and re-saves only the
    tokenizer under ``components/tokenizer/``; no model weights are loaded. The whole folder is copied, so
    pass a clean saved model, not a trainer output folder holding optimizer states and ``checkpoint-*``
    folders. With ``registered_name`` the model is also registered as a new version of that name.
    ``requirements`` defaults to ``pip_requirements()``.
    """
    import mlflow

    # An absolute path: MLflow looks a relative name_or_path up on the Hugging Face Hub for its model card
    # and license, and without network that costs half a minute of retries.
    folder = Path(model_dir).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: not a saved transformers checkpoint")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        raise FileNotFoundError(f"{folder} holds no weight files (*.safetensors / *.bin)")
    with _local_checkpoint_compat():
        info = mlflow.transformers.log_model(
            transformers_model=str(folder),
            name=artifact_name,
            task=task,
            registered_model_name=registered_name,
            pip_requirements=requirements if requirements is not None else pip_requirements(),
            metadata=dict(metadata) if metadata else None,
        )
    return info


def register_checkpoint(
    model_dir: str | Path,
    registered_name: str,
    *,
    tags: Mapping[str, Any],
    alias: str = CANDIDATE,
    description: str | None = None,
) -> RegisteredCheckpoint:
    """Log ``model_dir``, register it as a new version of ``registered_name``, tag it, point ``alias`` at it.

    Logs under the active run, or under a ``register`` stage run opened for it when none is active. Every
    call registers a new version. ``tags`` (lineage: selection run id, dataset digest, strategy, preset,
    eval scores, ...) are set on the version with their values stringified (see ``set_version_tags``).
    """
    from mlflow import MlflowClient

    with _active_or_stage_run("register") as run:
        info = log_checkpoint(model_dir, registered_name=registered_name)
        version = str(info.registered_model_version)
        set_version_tags(registered_name, version, tags)
        client = MlflowClient()
        if description is not None:
            client.update_model_version(registered_name, version, description=description)
        move_alias(registered_name, alias, version)
    log.info("registered %s version %s (alias %s) from %s", registered_name, version, alias, model_dir)
    return RegisteredCheckpoint(
        name=registered_name,
        version=version,
        alias=alias,
        uri=f"models:/{registered_name}/{version}",
        alias_uri=f"models:/{registered_name}@{alias}",
        run_id=run.info.run_id,
    )


@contextmanager
def _active_or_stage_run(stage: str) -> Iterator[ActiveRun]:
    import mlflow
    from skillcore.tracking import stage_run

    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    with stage_run(stage) as run:
        yield run


def move_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` (``candidate``, ``champion``, ...) of ``name`` at ``version``."""
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str | int, tags: Mapping[str, Any]) -> None:
    """Set tags on a model version. Values are stringified: scalars with ``str``, mappings and lists as
    JSON; ``None`` values are skipped."""
    from mlflow import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(name, str(version), key, _tag_value(value))


def promote_if_better(
    registered_name: str,
    version: str | int,
    *,
    metric_tag: str = "eval.average",
    champion: str = CHAMPION,
    higher_is_better: bool = True,
) -> PromotionDecision:
    """Move the ``champion`` alias to ``version`` when its ``metric_tag`` score strictly beats the champion's.

    With no champion yet, the version is promoted. A missing or unparseable score (on the candidate, or on
    a current champion it has to be compared with) raises ``ValueError``. The decision is logged and returned.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    version = str(version)
    score = _score(client.get_model_version(registered_name, version), metric_tag)
    # The registered model's alias map, not get_model_version_by_alias: stores differ in the error code
    # they raise for a missing alias (INVALID_PARAMETER_VALUE in SQL stores).
    aliases = client.get_registered_model(registered_name).aliases or {}
    current = (
        client.get_model_version(registered_name, str(aliases[champion])) if champion in aliases else None
    )

    previous_version = previous_score = None
    if current is None:
        promoted, reason = True, f"version {version} ({metric_tag} {score:g}) is the first {champion!r}"
    else:
        previous_version = str(current.version)
        previous_score = _score(current, metric_tag)
        if previous_version == version:
            promoted, reason = False, f"version {version} is already {champion!r}"
        else:
            better = score > previous_score if higher_is_better else score < previous_score
            relation = "beats" if better else "does not beat"
            promoted = better
            reason = (
                f"{metric_tag} {score:g} {relation} {champion!r} version {previous_version} "
                f"({previous_score:g}, {'higher' if higher_is_better else 'lower'} is better)"
            )
    if promoted:
        move_alias(registered_name, champion, version)
    decision = PromotionDecision(
        promoted=promoted,
        reason=reason,
        name=registered_name,
        version=version,
        score=score,
        champion_alias=champion,
        previous_version=previous_version,
        previous_score=previous_score,
    )
    log.info(
        "%s version %s: %s (%s)",
        registered_name,
        version,
        f"promoted to {champion!r}" if promoted else "not promoted",
        reason,
    )
    return decision


def _score(found: ModelVersion, metric_tag: str) -> float:
    raw = (found.tags or {}).get(metric_tag)
    where = f"version {found.version} of {found.name!r}"
    if raw is None:
        raise ValueError(f"{where} has no {metric_tag!r} tag to compare (set it with set_version_tags)")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{where}: tag {metric_tag!r} = {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: tag {metric_tag!r} = {raw!r} is not a finite number")
    return value


def _tag_value(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# MLflow's checkpoint-folder path (mlflow/transformers/flavor_config.py,
# build_flavor_config_from_local_checkpoint, MLflow 3.17.2) names the pipeline class with
# ``pipelines.check_task(task)[1]["impl"].__name__``. Transformers 5 stores that ``impl`` as a dotted path
# string (resolved lazily by its own ``_resolve_impl``), so the call raises
# ``AttributeError: 'str' object has no attribute '__name__'``. While MLflow logs a folder, and only when
# the registry really holds a string, ``check_task`` hands MLflow the class that string names.
_compat_lock = threading.Lock()


@contextmanager
def _local_checkpoint_compat() -> Iterator[None]:
    from transformers import pipelines

    if not isinstance(pipelines.check_task(DEFAULT_TASK)[1].get("impl"), str):
        yield  # a transformers that stores classes: MLflow's lookup works as it is
        return
    with _compat_lock:
        original = pipelines.check_task

        def check_task(task: str) -> tuple[str, dict[Any, Any], Any]:
            normalized, defaults, options = original(task)
            impl = defaults.get("impl")
            if isinstance(impl, str):
                module, _, cls = impl.rpartition(".")
                defaults = {**defaults, "impl": getattr(importlib.import_module(module), cls)}
            return normalized, defaults, options

        pipelines.check_task = check_task
        try:
            yield
        finally:
            pipelines.check_task = original
