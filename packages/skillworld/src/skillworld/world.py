"""The world: its skill tree, the composer of 1-3-skill problems, the teacher pool and benchmark suites.

Disjointness of pool and benchmarks is structural: a question belongs to the benchmark side when the
CRC-32 of its text is divisible by ``PARTITION_MODULUS``, to the training side (pool, bootstrap mix)
otherwise, so no seed or size can make them overlap.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from importlib import resources
from typing import Any, Literal

from skillcore import SkillTree, TaggedProblem
from tqdm import tqdm

from skillworld.generators import GENERATORS, HARD_LEAVES, UNFED_LEAVES, Fed, Part, fmt, frac_text

PARTITION_MODULUS = 8
VAR_NAMES = ("A", "B")
Side = Literal["train", "benchmark"]


# ----------------------------------------------------------------------------------------- tree
@cache
def _tree_dict() -> dict[str, Any]:
    text = resources.files("skillworld").joinpath("data/tree.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def world_tree() -> SkillTree:
    """The world's skill tree: 6 categories, 26 leaf skills, each node with a one-line description."""
    return SkillTree.from_dict(_tree_dict())


@cache
def leaf_chains() -> dict[str, tuple[str, str]]:
    """Leaf name -> its chain (category, leaf)."""
    return {node.name: (node.path[0], node.name) for node in world_tree().leaves()}


def leaf_names() -> list[str]:
    return list(leaf_chains())


def category_of(leaf: str) -> str:
    return leaf_chains()[leaf][0]


# ----------------------------------------------------------------------------------------- mixes
@dataclass(frozen=True)
class Mix:
    """How problems are drawn: number of skills, operand level (1-3) and leaf weights."""

    n_skills: Mapping[int, float] = field(default_factory=lambda: {1: 0.5, 2: 0.35, 3: 0.15})
    levels: Mapping[int, float] = field(default_factory=lambda: {1: 1.0, 2: 1.0, 3: 1.0})
    leaf_weights: Mapping[str, float] | None = None  # None: uniform over leaves
    category_weights: Mapping[str, float] | None = None  # multiplies leaf weights
    # Probability that a part's trace opens with a plain sentence naming its skill ("This is a least common
    # multiple question."), as pre-training text does; never the ``Skills:`` chain format.
    skill_mentions: float = 0.0

    def weights(self) -> dict[str, float]:
        out = {}
        for leaf in leaf_names():
            w = 1.0 if self.leaf_weights is None else float(self.leaf_weights.get(leaf, 0.0))
            if self.category_weights is not None:
                w *= float(self.category_weights.get(category_of(leaf), 1.0))
            out[leaf] = w
        if sum(out.values()) <= 0:
            raise ValueError("a mix needs a positive weight on at least one leaf")
        unknown = set(self.leaf_weights or {}) - set(out)
        if unknown:
            raise ValueError(f"unknown leaf skills in mix: {sorted(unknown)}")
        return out


POOL_MIX = Mix()

# Five held-out suites mirroring, in spirit, the paper's AIME24, AIME25, AMC23, MATH Level 5 and
# OlympiadBench: different difficulty and composition mixes over the same skills.
SUITES: dict[str, Mix] = {
    "aime24": Mix(n_skills={2: 0.6, 3: 0.4}, levels={1: 0.5, 2: 0.5}),
    "aime25": Mix(
        n_skills={1: 0.3, 2: 0.5, 3: 0.2},
        levels={1: 0.4, 2: 0.4, 3: 0.2},
        category_weights={"Number theory": 2.0, "Combinatorics": 2.0},
    ),
    "amc23": Mix(n_skills={1: 0.8, 2: 0.2}, levels={1: 0.7, 2: 0.3}),
    "math_l5": Mix(n_skills={1: 0.8, 2: 0.2}, levels={3: 1.0}),
    "olympiadbench": Mix(
        n_skills={1: 0.4, 2: 0.4, 3: 0.2},
        levels={1: 0.3, 2: 0.4, 3: 0.3},
        category_weights={"Algebra": 2.0, "Sequences": 2.0},
    ),
}


# ----------------------------------------------------------------------------------------- problems
@dataclass
class WorldProblem:
    question: str
    answer: Fraction
    parts: list[Part]
    difficulty: int
    think: str
    written: str

    @property
    def solution(self) -> str:
        return f"<think>\n{self.think}\n</think>\n\n{self.written}"

    @property
    def leaves(self) -> list[str]:
        return [p.leaf for p in self.parts]


def side_of(question: str) -> Side:
    return "benchmark" if zlib.crc32(question.encode("utf-8")) % PARTITION_MODULUS == 0 else "train"


class _Sampler:
    def __init__(self, mix: Mix) -> None:
        weights = mix.weights()
        self.leaves = [leaf for leaf, w in weights.items() if w > 0]
        self.weights = [weights[leaf] for leaf in self.leaves]
        self.fed_leaves = [leaf for leaf in self.leaves if leaf not in UNFED_LEAVES]
        self.fed_weights = [weights[leaf] for leaf in self.fed_leaves]
        self.k_values, self.k_weights = list(mix.n_skills), list(mix.n_skills.values())
        self.level_values, self.level_weights = list(mix.levels), list(mix.levels.values())
        self.skill_mentions = mix.skill_mentions

    def draw(self, rng: random.Random) -> WorldProblem:
        k = rng.choices(self.k_values, self.k_weights)[0]
        first = rng.choices(self.leaves, self.weights)[0]
        part = GENERATORS[first](rng, self._level(rng), None)
        assert part is not None  # unfed generators always succeed
        parts = [part]
        while len(parts) < k and self.fed_leaves:
            prev = parts[-1].value
            if prev.denominator != 1:
                break
            fed = Fed(VAR_NAMES[len(parts) - 1], int(prev))
            used = {p.leaf for p in parts}
            nxt = None
            for _ in range(6):
                leaf = rng.choices(self.fed_leaves, self.fed_weights)[0]
                if leaf not in used:
                    nxt = GENERATORS[leaf](rng, self._level(rng), fed)
                    if nxt is not None:
                        break
            if nxt is None:
                break
            parts.append(nxt)
        if self.skill_mentions > 0:
            for part in parts:
                if rng.random() < self.skill_mentions:
                    part.steps.insert(0, skill_mention(part.leaf, rng))
        return assemble(parts, rng)

    def _level(self, rng: random.Random) -> int:
        return rng.choices(self.level_values, self.level_weights)[0]


_MENTIONS = (
    "This is a {leaf} question.",
    "This is {category}: {leaf}.",
    "{Leaf} is what this part needs.",
    "Here I use {leaf}.",
    "A {category} problem, solved with {leaf}.",
    "The skill here is {leaf}, from {category}.",
    "{Leaf}, step by step.",
    "I recognise {leaf} here.",
)


def skill_mention(leaf: str, rng: random.Random) -> str:
    """A plain sentence that names ``leaf`` (and sometimes its category), in one of several phrasings."""
    category = category_of(leaf)
    return rng.choice(_MENTIONS).format(
        Leaf=leaf, leaf=_lc_first(leaf), Category=category, category=_lc_first(category)
    )


def assemble(parts: list[Part], rng: random.Random | None = None) -> WorldProblem:
    """Join parts into one problem: question sentences linked by named results, one trace."""
    questions, think, summaries = [], [], []
    for i, part in enumerate(parts):
        questions.append(part.question)
        think.extend(part.steps)
        summaries.append(part.summary)
        if i < len(parts) - 1:
            questions.append(f"Call the result {VAR_NAMES[i]}.")
            think.append(f"so {VAR_NAMES[i]} = {frac_text(part.value)}")
    answer = parts[-1].value
    difficulty = (
        max(p.level for p in parts) + len(parts) - 1 + (1 if any(p.leaf in HARD_LEAVES for p in parts) else 0)
    )
    written = f"{summaries[-1]}.\n\nThe answer is \\boxed{{{fmt(answer)}}}."
    return WorldProblem(
        question=" ".join(questions),
        answer=answer,
        parts=parts,
        difficulty=min(5, difficulty),
        think="\n".join(think),
        written=written,
    )


def iter_world_problems(mix: Mix, seed: int | str, side: Side) -> Iterator[WorldProblem]:
    """An endless, deterministic stream of problems from one side of the partition."""
    rng = random.Random(f"skillworld:{side}:{seed}")
    sampler = _Sampler(mix)
    while True:
        problem = sampler.draw(rng)
        if side_of(problem.question) == side:
            yield problem


def to_record(problem: WorldProblem, unique_id: str, split: str, rng: random.Random) -> TaggedProblem:
    chains = leaf_chains()
    pass_rate = min(1.0, max(0.0, 1.05 - 0.2 * problem.difficulty + rng.gauss(0.0, 0.08)))
    metadata = {
        "source": "skillworld",
        "split": split,
        "difficulty": problem.difficulty,
        "n_skills": len(problem.parts),
        "skills": problem.leaves,
        "pass_rate": round(pass_rate, 2),
        "parts": [
            {"leaf": p.leaf, "level": p.level, "args": p.args, "value": frac_text(p.value), "fed": i > 0}
            for i, p in enumerate(problem.parts)
        ],
    }
    # Records are valid by construction; skipping pydantic validation keeps 100K records cheap.
    return TaggedProblem.model_construct(
        unique_id=unique_id,
        question=problem.question,
        solution=problem.solution,
        expected_answer=fmt(problem.answer),
        metadata=metadata,
        chains=[list(chains[leaf]) for leaf in problem.leaves],
    )


def generate_pool(
    n: int = 100_000, seed: int = 0, *, mix: Mix = POOL_MIX, progress: bool = False
) -> list[TaggedProblem]:
    """The teacher pool: ``n`` tagged problems from the training side of the partition."""
    if n < 0:
        raise ValueError(f"pool size must be non-negative, got {n}")
    stream = iter_world_problems(mix, seed, "train")
    meta_rng = random.Random(f"skillworld:pool-meta:{seed}")
    out = []
    for i in tqdm(range(n), desc="pool", unit="problem", disable=not progress):
        out.append(to_record(next(stream), f"world-{seed}-{i:06d}", "pool", meta_rng))
    return out


def generate_benchmarks(
    seed: int = 0, size: int = 200, *, suites: Mapping[str, Mix] | None = None
) -> dict[str, list[TaggedProblem]]:
    """Five held-out suites of ``size`` problems each, distinct questions, disjoint from any pool."""
    if size < 1:
        raise ValueError(f"suite size must be positive, got {size}")
    suites = SUITES if suites is None else suites
    seen: set[str] = set()
    out: dict[str, list[TaggedProblem]] = {}
    for name, mix in suites.items():
        stream = iter_world_problems(mix, f"{seed}:{name}", "benchmark")
        meta_rng = random.Random(f"skillworld:bench-meta:{seed}:{name}")
        rows: list[TaggedProblem] = []
        attempts = 0
        while len(rows) < size:
            problem = next(stream)
            attempts += 1
            if attempts > 200 * size:
                raise RuntimeError(f"suite {name}: could not find {size} distinct questions")
            if problem.question in seen:
                continue
            seen.add(problem.question)
            rows.append(to_record(problem, f"{name}-{seed}-{len(rows):04d}", name, meta_rng))
        out[name] = rows
    return out


def generate_mix(n: int, seed: int, mix: Mix) -> list[TaggedProblem]:
    """``n`` training-side problems drawn from a custom mix (the bootstrap corpus uses this)."""
    stream = iter_world_problems(mix, f"mix:{seed}", "train")
    meta_rng = random.Random(f"skillworld:mix-meta:{seed}")
    return [to_record(next(stream), f"mix-{seed}-{i:06d}", "mix", meta_rng) for i in range(n)]


# ----------------------------------------------------------------------------------------- textbook
# Pre-training text names skills the way textbooks do: a section heading, a sentence that says what the
# skill is, a worked example. The worked example's lines are the chat traces' own steps, so a procedure
# read here is the procedure the student writes in a chat answer. Skill names appear in varied natural
# phrasings and never in the ``Skills:`` chain format that skill-aware fine-tuning teaches.
_TEXTBOOK_OPENINGS = (
    "{Leaf}\n\n{description}",
    "Lesson: {leaf}. {description}",
    "In {category}, {leaf} is a basic skill. {description}",
    "A note on {leaf} ({category}). {description}",
    "Chapter: {Category}. Section: {Leaf}.\n{description}",
    "How to use {leaf}: {description_lc}",
)
_TEXTBOOK_EXAMPLES = (
    "Example. {question}\nSolution.\n{steps}\n{summary}, so the answer is {answer}.",
    "Worked example: {question}\n{steps}\nTherefore {summary}. Answer: {answer}.",
    "Try this one. {question}\nWe use {leaf} step by step.\n{steps}\nSo {summary}; the answer is {answer}.",
)


def _lc_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def textbook_text(part: Part, rng: random.Random) -> str:
    """One textbook passage about ``part``'s skill, with ``part`` as its worked example."""
    node = world_tree().node(leaf_chains()[part.leaf])
    names = {
        "Leaf": part.leaf,
        "leaf": _lc_first(part.leaf),
        "Category": category_of(part.leaf),
        "category": _lc_first(category_of(part.leaf)),
        "description": node.description,
        "description_lc": _lc_first(node.description),
    }
    opening = rng.choice(_TEXTBOOK_OPENINGS).format(**names)
    example = rng.choice(_TEXTBOOK_EXAMPLES).format(
        question=part.question,
        steps="\n".join(part.steps),
        summary=part.summary,
        answer=fmt(part.value),
        leaf=names["leaf"],
    )
    return f"{opening}\n\n{example}\n"


def generate_textbook(
    n: int, seed: int, leaf_weights: Mapping[str, float], levels: Mapping[int, float]
) -> list[str]:
    """``n`` textbook passages, one skill each (drawn by ``leaf_weights``), worked examples from the
    training side of the partition (a benchmark question never appears)."""
    weights = Mix(leaf_weights=leaf_weights).weights()
    leaves = [leaf for leaf, w in weights.items() if w > 0]
    rng = random.Random(f"skillworld:textbook:{seed}")
    level_values, level_weights = list(levels), list(levels.values())
    out: list[str] = []
    while len(out) < n:
        leaf = rng.choices(leaves, [weights[leaf] for leaf in leaves])[0]
        part = GENERATORS[leaf](rng, rng.choices(level_values, level_weights)[0], None)
        if part is None or side_of(part.question) != "train":
            continue
        out.append(textbook_text(part, rng))
    return out
