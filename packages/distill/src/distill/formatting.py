"""Training examples for SFT: the shared question prompt as the user turn, the teacher's trace as the target.

Skill-aware SFT (the paper's second move) starts each target with its skill chains::

    Skills:
    Number theory->Divisibility->Greatest common divisor
    ...

Where the block goes matters with Qwen3's chat template: it keeps only what follows ``<think>`` as the
reasoning, so text written before ``<think>`` (where the paper's code puts it) vanishes when rendered.
``placement="think"`` (the default) writes the block at the start of the thinking block
(``<think>\\nSkills:\\n...\\n\\n<reasoning>``); ``placement="before_think"`` is the paper's placement, for
templates that keep it. ``check_rendered`` proves, on the real tokenizer, that the block survives.

At test time no skills are given and a skill-aware student writes its own block: ``parse_skills_block``
reads it back from a generated response (the writer's format, read tolerantly) and ``names_right`` says
whether it names the problem's skills (the rule is in its docstring).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from skillcore import CHAIN_SEPARATOR, PoolProblem, TaggedProblem, format_chain, parse_chain
from skillcore.prompts import question_messages

SKILLS_HEADER = "Skills:"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class EmptySkillsError(ValueError):
    """A skill-aware example has no chain left to name (no chains, or a depth slice removed them all)."""


class FormatConfig(BaseModel):
    """How training targets are written. ``skill_aware=False`` is plain SFT on the teacher trace."""

    model_config = ConfigDict(extra="forbid")

    skill_aware: bool = False
    placement: Literal["think", "before_think"] = Field(
        default="think", description="think: inside Qwen3's thinking block; before_think: the paper's"
    )
    min_depth: int = Field(default=1, ge=1, description="first tree level of each chain to keep")
    max_depth: int | None = Field(default=None, ge=1, description="last tree level to keep (None: the leaf)")
    display_names: dict[str, str] = Field(
        default_factory=dict, description="node name -> short name (EvalTree's long capability names)"
    )
    on_empty: Literal["drop", "error"] = Field(
        default="drop",
        description="an example with no chain left: drop the Skills header (counted) or raise",
    )

    @model_validator(mode="after")
    def _depths(self) -> FormatConfig:
        if self.max_depth is not None and self.max_depth < self.min_depth:
            raise ValueError(f"max_depth {self.max_depth} is below min_depth {self.min_depth}")
        return self


def load_display_names(path: str | Path) -> dict[str, str]:
    """A ``{"capability name": "short name"}`` JSON file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected a JSON object mapping names to short names")
    return data


def skill_lines(chains: Sequence[Sequence[str]], config: FormatConfig) -> list[str]:
    """One line per chain: the depth slice, display names, joined by ``skillcore.format_chain``; duplicate
    lines (two chains that agree above the slice) are kept once, in order."""
    stop = config.max_depth
    lines: list[str] = []
    for chain in chains:
        part = list(chain)[config.min_depth - 1 : stop]
        if not part:
            continue
        line = format_chain([config.display_names.get(name, name) for name in part])
        if line not in lines:
            lines.append(line)
    return lines


def skills_block(chains: Sequence[Sequence[str]], config: FormatConfig) -> str | None:
    """``Skills:`` and one chain per line, or None when no chain is left."""
    lines = skill_lines(chains, config)
    return "\n".join([SKILLS_HEADER, *lines]) if lines else None


# a line without the chain separator is still a (one-name) chain unless it reads like reasoning: one of
# these characters, or a sentence's end (digits are allowed: names like "2D geometry")
_NOT_IN_A_NAME = frozenset("=\\$<>{}")
_SENTENCE_END = (".", ":", "?", "!")


def _is_chain_line(line: str) -> bool:
    if CHAIN_SEPARATOR in line:
        return True
    return not (any(c in _NOT_IN_A_NAME for c in line) or line.endswith(_SENTENCE_END))


def parse_skills_block(response: str) -> list[list[str]] | None:
    """The chains a generated response names in its Skills block, or None when it writes no block.

    The block is where ``assistant_target`` writes it: the first non-blank line of the response, after an
    optional ``<think>``, is the ``Skills:`` header (text after the header on the same line is read as a
    first chain). Chain lines follow, one per line, names split on ``->`` and stripped; the block ends at
    the first blank line, at ``</think>`` (text before it on that line still counts), at the end of the
    text, or at the first line that is not a chain: one without ``->`` that holds one of
    ``= \\ $ < > { }`` or ends like a sentence (``. : ? !``). A line without ``->`` that passes is a
    one-name chain (a depth slice of one level writes those). Garbled lines are kept as written (empty names
    from a stray ``->`` included), so they count as naming wrong. A header with no chain line under it
    gives ``[]``: a block that names nothing.
    """
    text = response.lstrip()
    if text.startswith(THINK_OPEN):
        text = text[len(THINK_OPEN) :].lstrip()
    first, _, rest = text.partition("\n")
    first = first.strip()
    if not first.startswith(SKILLS_HEADER):
        return None
    inline = first[len(SKILLS_HEADER) :].strip()
    chains: list[list[str]] = []
    for raw in ([inline] if inline else []) + rest.split("\n"):
        line, closed, _ = raw.partition(THINK_CLOSE)
        line = line.strip()
        if not line or not _is_chain_line(line):
            break
        chains.append(list(parse_chain(line)))
        if closed:
            break
    return chains


def names_right(
    named: Sequence[Sequence[str]] | None,
    chains: Sequence[Sequence[str]],
    config: FormatConfig | None = None,
) -> bool:
    """Whether a Skills block (``parse_skills_block``'s chains) names the problem right.

    The problem's chains are first written the way its training target would name them (``skill_lines``
    under ``config``: the depth slice and display names; by default the whole chain, depth 1 to the leaf).
    The block names the problem right when at least one of its chains is one of those in full (every name,
    in order, equal after stripping; case counts), or is a single name equal to the last name of one of
    them (the leaf named alone). A chain with a wrong parent, a misspelt name or a partial path is wrong;
    no block (None) or an empty one is never right.
    """
    if not named:
        return False
    truth = {parse_chain(line) for line in skill_lines(chains, config or FormatConfig())}
    leaves = {chain[-1] for chain in truth}
    return any(tuple(chain) in truth or (len(chain) == 1 and chain[0] in leaves) for chain in named)


def split_reasoning(solution: str) -> tuple[str, str]:
    """(reasoning, answer) the way Qwen3's chat template splits an assistant message."""
    if THINK_CLOSE not in solution:
        return "", solution
    reasoning = solution.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    return reasoning, solution.split(THINK_CLOSE)[-1].lstrip("\n")


def assistant_target(problem: PoolProblem, config: FormatConfig) -> tuple[str, bool]:
    """The assistant message for one problem and whether it names its skills."""
    if not config.skill_aware:
        return problem.solution, False
    chains = problem.chains if isinstance(problem, TaggedProblem) else []
    block = skills_block(chains, config)
    if block is None:
        if config.on_empty == "error":
            raise EmptySkillsError(
                f"{problem.unique_id}: no skill chain left (chains {chains!r}, depths "
                f"{config.min_depth}..{config.max_depth}); tag the problem, widen the slice or on_empty='drop'"
            )
        return problem.solution, False
    if config.placement == "before_think":
        return f"{block}\n\n{problem.solution}", True
    reasoning, answer = split_reasoning(problem.solution)
    thought = f"{block}\n\n{reasoning}" if reasoning else block
    return f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n\n{answer}", True


class FormatStats(BaseModel):
    n_examples: int
    skill_aware: bool
    with_skills: int = Field(description="examples whose target names their skills")
    dropped_headers: int = Field(description="skill-aware examples left without a Skills header")
    mean_skill_lines: float


def format_examples(
    problems: Sequence[PoolProblem], config: FormatConfig
) -> tuple[list[dict[str, Any]], FormatStats]:
    """Rows ``{"unique_id", "messages"}`` for ``problems`` and counts of what the formatting did."""
    rows: list[dict[str, Any]] = []
    with_skills = 0
    n_lines = 0
    for problem in problems:
        target, named = assistant_target(problem, config)
        with_skills += named
        if named:
            chains = problem.chains if isinstance(problem, TaggedProblem) else []
            n_lines += len(skill_lines(chains, config))
        rows.append(
            {
                "unique_id": problem.unique_id,
                "messages": [*question_messages(problem.question), {"role": "assistant", "content": target}],
            }
        )
    stats = FormatStats(
        n_examples=len(rows),
        skill_aware=config.skill_aware,
        with_skills=with_skills,
        dropped_headers=(len(rows) - with_skills) if config.skill_aware else 0,
        mean_skill_lines=round(n_lines / with_skills, 4) if with_skills else 0.0,
    )
    return rows, stats


def render_example(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The full training text the model sees (the tokenizer's chat template, thinking on)."""
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False))


def check_rendered(tokenizer: Any, rows: Sequence[Mapping[str, Any]], *, sample: int = 8) -> None:
    """Raise when the chat template drops the Skills block of a row (checks the first ``sample`` rows
    that carry one): the rendered string is what trains, not the message."""
    checked = 0
    for row in rows:
        content = row["messages"][-1]["content"]
        if SKILLS_HEADER not in content:
            continue
        block = content[content.index(SKILLS_HEADER) :].split("\n\n", 1)[0]
        if block not in render_example(tokenizer, row["messages"]):
            raise ValueError(
                f"{row.get('unique_id', '?')}: the chat template drops the Skills block of the target "
                "(Qwen3 keeps only what follows <think>); use placement='think'"
            )
        checked += 1
        if checked >= sample:
            return
