"""skillcore: the shared core of skilldistill (trees, records, profiles, IO, MLflow helpers)."""

from skillcore.io import JsonlAppender, JsonlError, ReadStats, iter_rows, read_jsonl, write_jsonl
from skillcore.profile import ProfileError, SkillProfile
from skillcore.records import (
    PRESETS,
    Attempt,
    FieldMapping,
    PoolProblem,
    TaggedProblem,
    Verdict,
    map_record,
)
from skillcore.tree import (
    CHAIN_SEPARATOR,
    RawConversion,
    SkillNode,
    SkillTree,
    SkillTreeError,
    format_chain,
    parse_chain,
)

__all__ = [
    "CHAIN_SEPARATOR",
    "PRESETS",
    "Attempt",
    "FieldMapping",
    "JsonlAppender",
    "JsonlError",
    "PoolProblem",
    "ProfileError",
    "RawConversion",
    "ReadStats",
    "SkillNode",
    "SkillProfile",
    "SkillTree",
    "SkillTreeError",
    "TaggedProblem",
    "Verdict",
    "format_chain",
    "iter_rows",
    "map_record",
    "parse_chain",
    "read_jsonl",
    "write_jsonl",
]
