"""Typed records that flow between the stages, and field mappings for public corpora."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Chain = list[str]


class PoolProblem(BaseModel):
    """A teacher-pool problem: the question, the teacher's trace and the reference answer."""

    model_config = ConfigDict(extra="forbid")

    unique_id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    solution: str = ""
    expected_answer: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaggedProblem(PoolProblem):
    """A pool problem attributed to one or more skill chains (names from depth 1 to a leaf)."""

    chains: list[Chain] = Field(default_factory=list)

    @field_validator("chains")
    @classmethod
    def _chains_non_empty(cls, chains: list[Chain]) -> list[Chain]:
        for chain in chains:
            if not chain or any(not isinstance(n, str) or not n for n in chain):
                raise ValueError(f"a chain must be a non-empty list of non-empty names, got {chain!r}")
        return chains


class Attempt(BaseModel):
    """One sampled answer of a student to a problem."""

    model_config = ConfigDict(extra="forbid")

    unique_id: str
    sample_index: int = Field(default=0, ge=0)
    response: str
    model: str = ""
    n_tokens: int | None = None
    finish_reason: str | None = None


VerdictStatus = Literal["correct", "wrong", "no_answer", "timeout", "error"]


class Verdict(BaseModel):
    """The judgement of one attempt against the expected answer."""

    model_config = ConfigDict(extra="forbid")

    unique_id: str
    sample_index: int = Field(default=0, ge=0)
    status: VerdictStatus
    extracted_answer: str | None = None
    expected_answer: str = ""

    @property
    def correct(self) -> bool:
        return self.status == "correct"


# ---------------------------------------------------------------------------- field mappings
class FieldMapping(BaseModel):
    """Which source columns feed which PoolProblem fields. Unmapped columns go to ``metadata``."""

    question: str
    solution: str | None = None
    expected_answer: str
    unique_id: str | None = None  # None: a stable hash of the question text


PRESETS: dict[str, FieldMapping] = {
    "native": FieldMapping(
        question="question", solution="solution", expected_answer="expected_answer", unique_id="unique_id"
    ),
    # nvidia/OpenMathReasoning: problem, generated_solution, expected_answer, pass_rate_72b_tir, ...
    "openmathreasoning": FieldMapping(
        question="problem", solution="generated_solution", expected_answer="expected_answer"
    ),
    # MATH / MATH-500: problem, solution, answer, subject, level, unique_id
    "math": FieldMapping(
        question="problem", solution="solution", expected_answer="answer", unique_id="unique_id"
    ),
}


def stable_id(text: str, prefix: str = "p") -> str:
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:16]}"


def map_record(
    raw: Mapping[str, Any], mapping: FieldMapping | str = "native", *, require_answer: bool = True
) -> PoolProblem:
    """Turn a raw row into a PoolProblem (a TaggedProblem when it carries ``chains``).

    ``require_answer=False`` accepts a row without an expected answer (``""``): tagging reads only the
    question and solution; profiling and evaluation need the answer."""
    fm = PRESETS[mapping] if isinstance(mapping, str) else mapping
    needed = (fm.question, fm.expected_answer) if require_answer else (fm.question,)
    missing = [col for col in needed if col not in raw]
    if missing:
        raise KeyError(f"record lacks field(s) {missing}; present: {sorted(raw)}")
    question = str(raw[fm.question])
    uid_col = fm.unique_id if fm.unique_id and fm.unique_id in raw else None
    used = {fm.question, fm.expected_answer, fm.solution, uid_col, "metadata", "chains"}
    metadata = dict(raw.get("metadata") or {})
    metadata.update({k: v for k, v in raw.items() if k not in used})
    fields: dict[str, Any] = {
        "unique_id": str(raw[uid_col]) if uid_col else stable_id(question),
        "question": question,
        "solution": str(raw.get(fm.solution, "") or "") if fm.solution else "",
        "expected_answer": str(raw.get(fm.expected_answer, "")),
        "metadata": metadata,
    }
    if "chains" in raw:
        return TaggedProblem(**fields, chains=raw["chains"])
    return PoolProblem(**fields)
