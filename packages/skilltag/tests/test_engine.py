"""The attribution engine with the real embedding model: walk, batching, scores, cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from skillcore import SkillTree, TaggedProblem
from skilltag.backends.embedding import (
    EmbeddingBackend,
    EmbeddingConfig,
    exemplars_from_tagged,
    split_segments,
)
from skilltag.cache import TagCache
from skilltag.engine import ProblemInput, TaggingEngine, solution_summary, tagged_problem
from skilltag.testing import PROBLEMS, small_problems

FAST = EmbeddingConfig(threads=1)  # one torch thread: much faster on a busy 2-core machine


def test_tags_small_tree_with_valid_chains_and_scores(tree: SkillTree) -> None:
    engine = TaggingEngine(tree, EmbeddingBackend(FAST))
    rows = small_problems()
    results = engine.tag(rows)
    assert [r.id for r in results] == [r["unique_id"] for r in rows]
    hits = 0
    for row, result in zip(rows, results, strict=True):
        assert result.chains, f"no chain for {row['question']}"
        assert all(tree.is_valid_chain(c) for c in result.chains)
        assert result.scores is not None
        assert [len(s) for s in result.scores] == [len(c) for c in result.chains]
        hits += row["metadata"]["gold_chain"] in result.chains
        assert result.from_cache is False
        assert result.backend == "embedding" and result.tree_hash == tree.content_hash()
    assert hits >= len(PROBLEMS) - 1
    # a level-batched walk: one backend call per depth, not one per problem
    assert engine.stats.backend_calls == 2
    assert engine.stats.node_queries >= 2 * len(rows)


def test_cache_hits_persist_across_engines_and_miss_on_config_change(tree: SkillTree, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    rows = small_problems(8)
    first = TaggingEngine(tree, EmbeddingBackend(FAST), TagCache(path)).tag(rows)
    again = TaggingEngine(tree, EmbeddingBackend(FAST), TagCache(path))
    second = again.tag(rows)
    assert all(r.from_cache for r in second) and again.stats.backend_calls == 0
    assert [r.chains for r in first] == [r.chains for r in second]
    assert [r.scores for r in first] == [r.scores for r in second]
    other = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threshold=0.9, threads=1)), TagCache(path))
    assert other.backend_config_hash != again.backend_config_hash
    assert not any(r.from_cache for r in other.tag(rows[:2]))
    assert len(TagCache(path)) == 8 + 2


def test_lookup_answers_only_fully_cached_batches_without_walking(tree: SkillTree, tmp_path: Path) -> None:
    rows = small_problems(6)
    engine = TaggingEngine(tree, EmbeddingBackend(FAST), TagCache(tmp_path / "c.sqlite"))
    assert engine.lookup(rows[:3]) is None  # nothing cached yet
    tagged = engine.tag(rows[:3])
    calls = engine.stats.backend_calls
    found = engine.lookup(list(reversed(rows[:3])))
    assert found is not None and [r.id for r in found] == [r["unique_id"] for r in reversed(rows[:3])]
    assert [r.chains for r in found] == [r.chains for r in reversed(tagged)] and all(
        r.from_cache for r in found
    )
    assert engine.lookup(rows[:4]) is None  # one problem missing: no partial answer
    assert engine.stats.backend_calls == calls  # a lookup never walks
    assert TaggingEngine(tree, EmbeddingBackend(FAST)).lookup(rows[:1]) is None  # no cache


def test_duplicate_texts_are_walked_once(tree: SkillTree) -> None:
    engine = TaggingEngine(tree, EmbeddingBackend(FAST))
    p = ProblemInput("a", "Compute gcd(12, 18).", "6")
    results = engine.tag([p, ProblemInput("b", p.question, p.solution)])
    assert results[0].chains == results[1].chains and [r.id for r in results] == ["a", "b"]
    assert engine.stats.tagged == 1


def test_max_paths_bounds_chains(tree: SkillTree) -> None:
    loose_cfg = EmbeddingConfig(select="threshold", threshold=-1.0, max_children=10, threads=1)
    results = TaggingEngine(tree, EmbeddingBackend(loose_cfg), max_paths=2).tag(small_problems(3))
    assert all(len(r.chains) == 2 for r in results)
    everything = TaggingEngine(tree, EmbeddingBackend(loose_cfg), max_paths=50)
    result = everything.tag(small_problems(1))[0]
    assert len(result.chains) == tree.n_leaves
    assert result.chains[0] == small_problems(1)[0]["metadata"]["gold_chain"]  # best first
    assert result.scores is not None
    assert [min(s) for s in result.scores] == sorted((min(s) for s in result.scores), reverse=True)


def test_exemplars_shift_scores_and_change_the_config_hash(tree: SkillTree) -> None:
    rows = [
        TaggedProblem(**{k: v for k, v in r.items() if k != "metadata"}, chains=[r["metadata"]["gold_chain"]])
        for r in small_problems()
    ]
    exemplars = exemplars_from_tagged(rows, per_leaf=2)
    assert len(exemplars) == len(PROBLEMS)
    plain = TaggingEngine(tree, EmbeddingBackend(FAST))
    with_ex = TaggingEngine(tree, EmbeddingBackend(FAST, exemplars=exemplars))
    assert plain.backend_config_hash != with_ex.backend_config_hash
    results = with_ex.tag(small_problems())
    assert all(
        r["metadata"]["gold_chain"] in res.chains for r, res in zip(small_problems(), results, strict=True)
    )


def test_exemplars_for_unknown_leaves_are_rejected(tree: SkillTree) -> None:
    with pytest.raises(ValueError, match="not leaves"):
        TaggingEngine(tree, EmbeddingBackend(FAST, exemplars={("Algebra", "Nope"): ["x"]}))


def test_solution_summary_and_segments() -> None:
    trace = "<think>long private reasoning</think>\n\nSo x = 6. The answer is 6."
    assert solution_summary(trace, 100) == "So x = 6. The answer is 6."
    assert solution_summary("<think>only reasoning here", 7) == "only re"
    assert solution_summary(trace, 0) == ""
    assert split_segments("Compute 1 + 2 + ... + 9. Call A. Then double A please.") == [
        "Compute 1 + 2 + ... + 9.",
        "Then double A please.",
    ]


def test_tagged_problem_keeps_record_and_adds_provenance(tree: SkillTree) -> None:
    engine = TaggingEngine(tree, EmbeddingBackend(FAST))
    row = small_problems(1)[0]
    from skillcore import map_record

    record = map_record(row)
    tagged = tagged_problem(record, engine.tag([record])[0])
    assert tagged.unique_id == row["unique_id"] and tagged.chains
    assert tagged.metadata["tagger"]["tree_hash"] == tree.content_hash()
    assert tagged.metadata["gold_chain"] == row["metadata"]["gold_chain"]


def test_factory_builds_engines_from_settings(tmp_path: Path, tree_file: Path) -> None:
    from skillcore import write_jsonl
    from skilltag.factory import EngineSettings, build_engine, load_tree

    rows = [
        {**{k: v for k, v in r.items() if k != "metadata"}, "chains": [r["metadata"]["gold_chain"]]}
        for r in small_problems()
    ]
    write_jsonl(tmp_path / "ex.jsonl", rows)
    engine = build_engine(
        EngineSettings(
            tree=str(tree_file),
            exemplars=str(tmp_path / "ex.jsonl"),
            cache=str(tmp_path / "c.sqlite"),
            embedding_options={"threads": 1},
        )
    )
    assert engine.cache is not None and engine.tree_hash == small_tree_hash(tree_file)
    assert len(engine.backend.exemplars) == len(PROBLEMS)  # type: ignore[attr-defined]
    assert engine.tag(small_problems(2))[0].chains
    assert load_tree(str(tree_file)).n_leaves == len(PROBLEMS)
    with pytest.raises(ValueError, match="unknown backend"):
        build_engine(EngineSettings(tree=str(tree_file), backend="nope"))
    with pytest.raises(ValueError, match="--openai-url"):
        build_engine(EngineSettings(tree=str(tree_file), backend="openai"))
    with pytest.raises(FileNotFoundError, match="skill tree file not found"):
        load_tree(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="skill tree file not found: world"):
        load_tree("world")  # a path only: the library knows no offline world


def small_tree_hash(path: Path) -> str:
    return SkillTree.load(path).content_hash()
