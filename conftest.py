"""Session fixtures shared by every package's tests: the offline world and a tiny Qwen3 student.

Fixture names are a contract with the other packages: ``world_tree``, ``world_pool_small``,
``world_benchmarks_small``, ``tiny_student_dir``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests check properties, not speed: Hypothesis' per-example deadline (200 ms) failed a JSONL
# round trip that took 606 ms once while a training job shared the two cores (17 ms on the rerun).
settings.register_profile("skilldistill", deadline=None)
settings.load_profile("skilldistill")


@pytest.fixture(scope="session")
def world_tree():  # type: ignore[no-untyped-def]
    """The world's skillcore.SkillTree (6 categories, 26 leaves)."""
    from skillworld import world_tree as _world_tree

    return _world_tree()


@pytest.fixture(scope="session")
def world_pool_small():  # type: ignore[no-untyped-def]
    """400 TaggedProblems of the teacher pool (seed 0), with chains, metadata and R1-style solutions."""
    from skillworld import generate_pool

    return generate_pool(400, seed=0)


@pytest.fixture(scope="session")
def world_benchmarks_small():  # type: ignore[no-untyped-def]
    """The five benchmark suites with 20 problems each (seed 0): dict suite name -> list[TaggedProblem]."""
    from skillworld import generate_benchmarks

    return generate_benchmarks(seed=0, size=20)


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    """Path to a tiny Qwen3 student (model + tokenizer, save_pretrained layout) trained for about a minute:
    it usually answers in the ``<think>...</think> ... \\boxed{...}`` shape. Cached across sessions under
    $SKILLWORLD_CACHE (default ~/.cache/skillworld); each session gets its own writable copy."""
    from skillworld.testing import quick_student

    return quick_student(tmp_path_factory.mktemp("tiny-student") / "model")
