"""skillpipe: the pipeline's stages as library code, its one caching rule, and its one configuration tree.

``pipelines/distill.py`` composes these stages; the services (gRPC tagger, BentoML profiler) come in as
adapters that implement ``stages.BatchTagger`` and ``stages.Profiler``.
"""

from skillpipe.cache import StageCache, StageOutput, StageResult, digest_json, digest_path, stage_key
from skillpipe.config import ConfigError, PipelineConfig, load_config, preset_names

__all__ = [
    "ConfigError",
    "PipelineConfig",
    "StageCache",
    "StageOutput",
    "StageResult",
    "digest_json",
    "digest_path",
    "load_config",
    "preset_names",
    "stage_key",
]
