"""Probe and focus sets: one skill each, the right side of the partition, distinct probe questions."""

from __future__ import annotations

from collections import Counter

import pytest
from skillworld import leaf_names, side_of
from skillworld.probes import focus_problems, probe_problems


def test_probe_set_is_one_skill_distinct_and_held_out() -> None:
    probes = probe_problems(n_per_leaf=12)
    counts = Counter(p.chains[0][-1] for p in probes)
    assert set(counts) == set(leaf_names()) and max(counts.values()) == 12
    assert all(len(p.chains) == 1 and p.metadata["n_skills"] == 1 for p in probes)
    assert all(side_of(p.question) == "benchmark" for p in probes)
    assert len({p.question for p in probes}) == len(probes)
    assert len({p.unique_id for p in probes}) == len(probes)
    assert probe_problems(n_per_leaf=12) == probes  # deterministic
    with pytest.raises(ValueError, match="n_per_leaf"):
        probe_problems(n_per_leaf=0)


def test_focus_set_is_training_side_and_never_a_probe() -> None:
    leaves = ["Percentages", "Exact division"]
    focus = focus_problems(leaves, 40)
    assert Counter(p.chains[0][-1] for p in focus) == dict.fromkeys(leaves, 40)
    assert all(side_of(p.question) == "train" for p in focus)
    assert not {p.question for p in focus} & {p.question for p in probe_problems(leaves=leaves)}


def test_quick_student_cache_key_covers_code_and_library_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from skillworld import testing

    files = testing._source_files()
    names = {p.name for p in files}
    assert {"student.py", "generators.py", "world.py", "tokenizer.py", "testing.py", "tree.json"} <= names
    key = testing._cache_key(0)
    assert testing._cache_key(0) == key and testing._cache_key(1) != key
    monkeypatch.setattr(testing, "_source_files", lambda: [p for p in files if p.name != "student.py"])
    assert testing._cache_key(0) != key  # a change to any source file gives another student
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert testing._cache_key(0) != key
