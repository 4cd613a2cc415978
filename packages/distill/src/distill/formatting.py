"""Training examples for SFT: the shared question prompt, rendered by the student's chat template, and the
target the student is trained to write after it.

Skill-aware SFT (the paper's second move) starts each target with its skill chains::

    Skills:
    Number theory->Divisibility->Greatest common divisor
    ...

**Rows are TRL prompt-completion examples** (``format_examples``): ``prompt`` is the question rendered by the
student's own chat template with the generation prompt (exactly what the engines render at test time), and
``completion`` is the target text followed by the template's end-of-turn token. The target never goes
through the template, so no template can drop part of it: DeepSeek-R1-Distill templates cut everything up
to ``</think>`` out of an assistant message, Qwen3's keeps only what follows ``<think>`` as the reasoning,
Llama-3's trims the message. ``messages`` keeps what was meant (the user turn and the whole assistant
target) beside them, for the check and for reading.

**Where the Skills block goes depends on the template** (``choose_placement``): inside the thinking block
(``<think>\\nSkills:\\n...\\n\\n<reasoning>``) where the template has one (it handles ``</think>``:
Qwen3, DeepSeek-R1-Distill), at the start of the answer where it has none (Llama-3, SmolLM2; the teacher's
trace follows as written). ``placement="before_think"`` is the paper's placement (the block before the
trace's ``<think>``), refused where the template's generation prompt already opens the thinking block.
The placement used is reported in ``FormatStats.placement``.

``check_rendered`` proves, with the real tokenizer, that what trains is what was meant: it encodes each row
exactly as the trainer does (``encode_example``) and compares the trained tokens with the target and the
prompt tokens with the template's generation prompt; when they differ it refuses with a message that
names the template's behaviour (``TemplateInfo.drops``).

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
        default="think",
        description="think: inside the thinking block where the template has one, else at the start of the "
        "answer; before_think: the paper's (before the trace's <think>)",
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


# ------------------------------------------------------------------------------------ the chat template
Placement = Literal["think", "answer", "before_think"]
# probe texts: unlikely in any template, so where they land in a rendering says what the template did
_BEFORE, _REASONING, _ANSWER, _END = "SKDPROBEBEFORE", "SKDPROBEREASONING", "SKDPROBEANSWER", "SKDPROBEEND"


class TemplateInfo(BaseModel):
    """What a student's chat template does, found by rendering probe messages with it (``template_info``)."""

    thinking: bool = Field(description="the template has a thinking block (it handles </think>)")
    opens_think: bool = Field(description="its generation prompt already opens the thinking block")
    end_of_turn: str = Field(description="what it writes after an assistant message (the student's stop)")
    drops: str | None = Field(
        default=None, description="what it drops of an assistant message, in words (None: nothing)"
    )


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt the student sees: its chat template with the generation prompt, thinking on (the engines'
    ``render_chat``, so training and evaluation prompts are the same text)."""
    from distill.engines.base import render_chat

    return render_chat(tokenizer, list(messages), enable_thinking=True)


def _render(tokenizer: Any, assistant: str) -> str:
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": assistant}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=True))


def template_info(tokenizer: Any) -> TemplateInfo:
    """Probe the tokenizer's chat template: its thinking block, its end-of-turn token, and what it does to an
    assistant message (a message ``before <think>reasoning</think> answer`` rendered through it)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("the tokenizer has no chat template: use a chat/instruct student")
    source = template if isinstance(template, str) else json.dumps(template)
    rendered = _render(tokenizer, _END)
    if _END not in rendered:
        raise ValueError("the chat template drops the whole assistant message")
    end = rendered.rsplit(_END, 1)[1].rstrip()
    if not end:  # the template writes nothing after the message: the tokenizer's eos is the stop
        end = getattr(tokenizer, "eos_token", None) or ""
        if not end:
            raise ValueError(
                "the chat template writes nothing after an assistant message and the tokenizer has no eos token: "
                "the student could not learn to stop"
            )
    probe = _render(tokenizer, f"{_BEFORE}\n\n{THINK_OPEN}\n{_REASONING}\n{THINK_CLOSE}\n\n{_ANSWER}")
    drops = None
    if _REASONING not in probe:
        drops = f"drops the reasoning before {THINK_CLOSE} (everything up to it) from an assistant message"
    elif _BEFORE not in probe:
        drops = f"drops text written before {THINK_OPEN} in an assistant message"
    elif _ANSWER not in probe:
        drops = f"drops the answer after {THINK_CLOSE} from an assistant message"
    generation_prompt = render_prompt(tokenizer, [{"role": "user", "content": "Q"}])
    return TemplateInfo(
        thinking=THINK_CLOSE in source,
        opens_think=generation_prompt.rstrip().endswith(THINK_OPEN),
        end_of_turn=end,
        drops=drops,
    )


def choose_placement(config: FormatConfig, info: TemplateInfo) -> Placement:
    """Where the Skills block goes for this template: ``think`` (inside the thinking block) where the
    template has one, ``answer`` (at the start of the answer) where it has none; ``before_think`` (the
    paper's) when asked for, unless the generation prompt already opens the thinking block."""
    if config.placement == "before_think":
        if info.opens_think:
            raise ValueError(
                f"placement 'before_think' is impossible with this chat template: its generation prompt already "
                f"opens the thinking block ({THINK_OPEN}), so nothing can be written before it; use 'think'"
            )
        return "before_think"
    return "think" if info.thinking else "answer"


def assistant_target(
    problem: PoolProblem, config: FormatConfig, placement: Placement | None = None
) -> tuple[str, bool]:
    """The whole assistant message for one problem and whether it names its skills. ``placement`` is the
    one ``choose_placement`` chose for the student's template (default: ``config.placement``)."""
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
    if (placement or config.placement) in ("before_think", "answer"):
        return f"{block}\n\n{problem.solution}", True
    reasoning, answer = split_reasoning(problem.solution)
    thought = f"{block}\n\n{reasoning}" if reasoning else block
    return f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n\n{answer}", True


def completion_text(prompt: str, target: str, info: TemplateInfo) -> str:
    """What the student is trained to write after ``prompt``: the target and the end-of-turn token. Where the
    generation prompt already opens the thinking block, the target's own ``<think>`` (and the whitespace the
    prompt wrote after it) is not written twice; a target without a thinking block gets an empty one there."""
    if info.opens_think:
        if not target.startswith(THINK_OPEN):
            target = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{target}"
        after = prompt[prompt.rindex(THINK_OPEN) + len(THINK_OPEN) :]
        target = target[len(THINK_OPEN) :]
        if target.startswith(after):
            target = target[len(after) :]
    return target + info.end_of_turn


class FormatStats(BaseModel):
    n_examples: int
    skill_aware: bool
    with_skills: int = Field(description="examples whose target names their skills")
    dropped_headers: int = Field(description="skill-aware examples left without a Skills header")
    mean_skill_lines: float
    placement: Placement | None = Field(
        default=None, description="where the Skills block went for this template (None: plain SFT)"
    )
    template_thinking: bool = Field(default=False, description="the student's template has a thinking block")
    end_of_turn: str = Field(default="", description="the token that ends each completion")


def format_examples(
    problems: Sequence[PoolProblem], config: FormatConfig, tokenizer: Any
) -> tuple[list[dict[str, Any]], FormatStats]:
    """Rows ``{"unique_id", "prompt", "completion", "messages"}`` for ``problems`` (TRL prompt-completion
    form, rendered with ``tokenizer``'s chat template; ``messages`` is what was meant) and counts of what the
    formatting did."""
    info = template_info(tokenizer)
    placement = choose_placement(config, info) if config.skill_aware else None
    rows: list[dict[str, Any]] = []
    with_skills = 0
    n_lines = 0
    for problem in problems:
        target, named = assistant_target(problem, config, placement)
        with_skills += named
        if named:
            chains = problem.chains if isinstance(problem, TaggedProblem) else []
            n_lines += len(skill_lines(chains, config))
        question = question_messages(problem.question)
        prompt = render_prompt(tokenizer, question)
        rows.append(
            {
                "unique_id": problem.unique_id,
                "prompt": prompt,
                "completion": completion_text(prompt, target, info),
                "messages": [*question, {"role": "assistant", "content": target}],
            }
        )
    stats = FormatStats(
        n_examples=len(rows),
        skill_aware=config.skill_aware,
        with_skills=with_skills,
        dropped_headers=(len(rows) - with_skills) if config.skill_aware else 0,
        mean_skill_lines=round(n_lines / with_skills, 4) if with_skills else 0.0,
        placement=placement,
        template_thinking=info.thinking,
        end_of_turn=info.end_of_turn,
    )
    return rows, stats


def encode_example(tokenizer: Any, row: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    """The token ids a row trains on and its completion mask (1: trained), as ``distill.sft`` gives them to
    TRL: the prompt and the completion tokenized apart, no special tokens added (the template wrote its own;
    the engines tokenize the prompt the same way), so the trained tokens are the completion's own."""
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    return [*prompt, *completion], [0] * len(prompt) + [1] * len(completion)


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return str(tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False))


def _first_difference(trained: str, meant: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(trained, meant, strict=False)) if a != b),
        min(len(trained), len(meant)),
    )
    return f"at character {at}, trained {trained[max(0, at - 20) : at + 40]!r}, meant {meant[max(0, at - 20) : at + 40]!r}"


def check_rendered(tokenizer: Any, rows: Sequence[Mapping[str, Any]], *, sample: int | None = None) -> None:
    """Raise unless every row (or the first ``sample``) trains exactly what it means: the trained tokens
    (``encode_example``, as the trainer builds them) decode to the target of ``messages`` plus the
    end-of-turn token, and the prompt tokens to the template's generation prompt for its question. The
    error names the row and, where the template explains the difference, what the template does."""
    info = template_info(tokenizer)
    for n, row in enumerate(rows):
        if sample is not None and n >= sample:
            return
        uid = row.get("unique_id", f"row {n}")
        missing = [k for k in ("prompt", "completion", "messages") if k not in row]
        if missing:
            raise ValueError(
                f"{uid}: a training row needs prompt, completion and messages (missing {missing})"
            )
        *question, answer = row["messages"]
        meant_prompt = render_prompt(tokenizer, question)
        meant = completion_text(meant_prompt, answer["content"], info)
        ids, mask = encode_example(tokenizer, row)
        trained = _decode(tokenizer, [t for t, m in zip(ids, mask, strict=True) if m])
        prompt = _decode(tokenizer, [t for t, m in zip(ids, mask, strict=True) if not m])
        if prompt != meant_prompt:
            raise ValueError(
                f"{uid}: the trained prompt is not the chat template's generation prompt for the question "
                f"({_first_difference(prompt, meant_prompt)})"
            )
        if trained == meant:
            continue
        if _decode(tokenizer, tokenizer(meant, add_special_tokens=False)["input_ids"]) != meant:
            why = "the tokenizer does not encode the target back to the same text"
        elif info.drops is not None and len(trained) < len(meant):  # rows rendered through the template
            why = f"the chat template {info.drops}"
        else:
            why = "the completion is not the target and the end-of-turn token"
        raise ValueError(
            f"{uid}: what is trained differs from the target: {why} ({_first_difference(trained, meant)})"
        )
