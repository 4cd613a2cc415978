"""Cascade tagging (``skilltag.cascade``): the figures on cases checked by hand, then whole cascades
against a scripted OpenAI-compatible server on loopback (``skilltag.testing.ScriptedModel``) that plays a
model that tags right (it names the children on each problem's known chains): first with a scripted
cheap tagger whose every answer and score is known, then with the real embedding tagger on the offline
world. The LLM's calls are counted on the server's side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from skillcore import SkillTree, read_jsonl
from skilltag.cascade import (
    CascadeConfig,
    agreement,
    confidence,
    extrapolate,
    run_cascade,
    split_seed,
)
from skilltag.engine import Choice, NodeQuery, ProblemInput, TaggingEngine, TagResult, problem_text
from skilltag.testing import ScriptedModel, knows_chains, small_problems

AL = ["Algebra", "Linear equations"]
AQ = ["Algebra", "Quadratic equations"]
GC = ["Geometry", "Circle area"]
GT = ["Geometry", "Triangle angles"]
NG = ["Number theory", "Greatest common divisor"]
NP = ["Number theory", "Prime factorization"]


def test_agreement_by_hand() -> None:
    gold = [[AL], [AL, NG], [GC], []]
    cheap = [[AL], [AL], [GT], [NP]]
    got = agreement(gold, cheap)
    # pairs: gold {0 AL, 1 AL, 1 NG, 2 GC}, cheap {0 AL, 1 AL, 2 GT, 3 NP}: tp 2, fp 2, fn 2
    assert (got["n"], got["precision"], got["recall"], got["f1"]) == (4, 0.5, 0.5, 0.5)
    assert got["exact_set"] == 0.25  # only problem 0
    leaf = got["per_leaf"]
    assert set(leaf) == {" -> ".join(c) for c in (AL, NG, GC, GT, NP)}
    assert leaf["Algebra -> Linear equations"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "gold": 2,
        "predicted": 2,
    }
    assert leaf["Number theory -> Greatest common divisor"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "gold": 1,
        "predicted": 0,
    }
    assert (
        leaf["Geometry -> Triangle angles"]["gold"] == 0
        and leaf["Geometry -> Triangle angles"]["predicted"] == 1
    )
    assert got["macro_f1"] == pytest.approx(1 / 3)  # over the leaves the LLM named: AL 1, NG 0, GC 0


def test_extrapolation_and_confidence_by_hand() -> None:
    # 2.5 calls per problem, a 2,000-problem seed, 10% of the rest back to the LLM
    got = extrapolate(2.5, 2_000, 0.1)
    assert got is not None
    assert got["llm_only_calls"] == 250_000
    assert got["cascade_calls"] == pytest.approx((2_000 + 9_800) * 2.5)  # 29,500
    assert got["saved_calls"] == pytest.approx(220_500) and got["saved_share"] == pytest.approx(0.882)
    assert extrapolate(None, 2_000, 0.1) is None

    def result(chains: list[list[str]], scores: list[list[float]] | None) -> TagResult:
        return TagResult("p", chains, scores, "embedding", "h", "t", False)

    assert confidence(result([AL, NG], [[0.9, 0.8], [0.95, 0.6]])) == 0.6  # the weakest link of any chain
    assert confidence(result([], None)) == -math.inf  # no chain: unsure
    assert confidence(result([AL], None)) is None  # no scores: unsure


def test_seed_split_and_config_checks() -> None:
    cfg = CascadeConfig(seed_size=10, holdout=3, sample_seed=7)
    train, held = split_seed(50, cfg)
    assert len(train) == 7 and len(held) == 3 and not set(train) & set(held)
    assert (train, held) == split_seed(50, cfg)  # seeded
    assert split_seed(50, CascadeConfig(seed_size=10, holdout=3, sample_seed=8)) != (train, held)
    train, held = split_seed(4, cfg)  # a pool smaller than the seed: all of it
    assert sorted(train + held) == [0, 1, 2, 3] and len(held) == 3
    with pytest.raises(ValueError, match="holdout must lie in"):
        CascadeConfig(seed_size=5, holdout=5)
    with pytest.raises(ValueError, match="seed_size"):
        CascadeConfig(seed_size=0, holdout=0)


# ------------------------------------------------------------------------------------------------
# A cheap tagger whose answers are scripted by problem (the base question of small_problems): right and
# sure, wrong and sure, right but unsure, or no chain at all.
CHEAP = {
    "Solve for x": (AL, 0.9),  # right, sure
    "Find the roots": (AL, 0.9),  # wrong (the LLM says quadratic), sure: the cascade keeps it
    "What is the area": (GC, 0.3),  # right, unsure: back to the LLM
    "Two angles": (None, 0.0),  # no chain: back to the LLM
    "Compute gcd": (NG, 0.9),
    "Write 360": (NP, 0.7),
}


def scripted(question: str) -> tuple[list[str] | None, float]:
    return next(v for k, v in CHEAP.items() if question.startswith(k))


class ScriptedCheap:
    name = "scripted-cheap"

    def __init__(self, exemplars: Path) -> None:
        self.exemplars = exemplars
        self.tree: SkillTree | None = None

    def config(self) -> dict[str, Any]:
        return {"exemplars": str(self.exemplars)}

    def bind(self, tree: SkillTree) -> None:
        self.tree = tree

    def start(self, texts: Sequence[str]) -> Sequence[str]:
        return texts

    def choose(
        self, state: Sequence[str], queries: Sequence[NodeQuery], deadline: float | None
    ) -> list[list[Choice]]:
        assert self.tree is not None
        out: list[list[Choice]] = []
        for q in queries:
            chain, score = scripted(state[q.problem])
            depth = self.tree.nodes[q.node].depth
            if chain is None:
                out.append([])
                continue
            child = self.tree.node(chain[: depth + 1])
            out.append([Choice(child.index, score)])
        return out


def test_cascade_with_a_scripted_cheap_tagger(tree: SkillTree, tmp_path: Path) -> None:
    problems = small_problems(36)  # six questions, six variants each
    gold = {p["unique_id"]: [p["metadata"]["gold_chain"]] for p in problems}
    cfg = CascadeConfig(seed_size=12, holdout=4, threshold=0.5, batch_size=5)
    train, held = split_seed(len(problems), cfg)
    built: list[ScriptedCheap] = []

    def make_cheap(path: Path) -> TaggingEngine:
        built.append(ScriptedCheap(path))
        return TaggingEngine(tree, built[-1])

    model = ScriptedModel(knows_chains(problems))
    with model as url:
        from skilltag.backends.openai_chat import OpenAIBackend, OpenAIConfig

        backend = OpenAIBackend(OpenAIConfig(base_urls=(url,), model="scripted", max_concurrency=4))
        llm = TaggingEngine(tree, backend)
        result = run_cascade(problems, llm, make_cheap, cfg, tmp_path / "exemplars.jsonl", progress=False)
        backend.close()
    report = result.report
    ids = [p["unique_id"] for p in problems]
    seed_ids = {ids[i] for i in train + held}
    rest = [p for p in problems if p["unique_id"] not in seed_ids]
    unsure = {p["unique_id"] for p in rest if scripted(p["question"])[1] < 0.5}
    assert unsure and len(unsure) < len(rest)

    # exemplars: the LLM's tags of the seed minus the held-out slice, nothing else
    assert len(built) == 1 and built[0].exemplars == tmp_path / "exemplars.jsonl"
    exemplar_rows = list(read_jsonl(tmp_path / "exemplars.jsonl"))
    assert [r["unique_id"] for r in exemplar_rows] == [ids[i] for i in train]
    assert all(r["chains"] == gold[r["unique_id"]] for r in exemplar_rows)

    # the LLM saw exactly the seed and the unsure problems, each walked once (root, then one category)
    by_problem: dict[str, int] = {}
    for asked in model.asked:
        by_problem[asked.problem] = by_problem.get(asked.problem, 0) + 1
    text_of = {p["unique_id"]: problem_text(ProblemInput.from_record(p), 400) for p in problems}
    assert set(by_problem) == {text_of[u] for u in seed_ids | unsure}
    assert set(by_problem.values()) == {2}
    assert report["llm"]["problems"] == len(seed_ids) + len(unsure) == cfg.seed_size + report["fallbacks"]
    assert report["llm"]["requests"] == len(model.asked) == 2 * report["llm"]["problems"]
    assert report["llm"]["seed_requests"] == 2 * cfg.seed_size
    assert report["llm"]["calls_per_problem"] == 2.0
    assert report["fallbacks"] == len(unsure) and report["cheap_tagged"] == len(rest)
    per_100k = report["cost"]["per_100k"]
    rate = len(unsure) / len(rest)
    assert per_100k["saved_calls"] == pytest.approx(2.0 * (100_000 - 12) * (1 - rate))
    pool_cost = report["cost"]["pool"]
    assert pool_cost["llm_only_calls"] == 2.0 * len(problems)
    assert pool_cost["cascade_calls"] == len(model.asked)

    # final chains: the LLM's for the seed and the fallbacks, the cheap tagger's (right or wrong) otherwise
    rows = {r.unique_id: r for r in result.rows}
    assert [r.unique_id for r in result.rows] == ids
    for uid, row in rows.items():
        source = row.metadata["tagger"]["cascade"]["source"]
        question = next(p["question"] for p in problems if p["unique_id"] == uid)
        if uid in seed_ids or uid in unsure:
            assert row.chains == gold[uid] and row.metadata["tagger"]["backend"] == "openai"
            assert source == (
                "fallback" if uid in unsure else "holdout" if uid in {ids[i] for i in held} else "seed"
            )
        else:
            assert source == "cheap" and row.chains == [scripted(question)[0]]
            assert row.metadata["tagger"]["backend"] == "scripted-cheap"
    assert report["sources"] == {
        "seed": 8,
        "holdout": 4,
        "cheap": len(rest) - len(unsure),
        "fallback": len(unsure),
    }

    # agreement on the held-out slice, counted by hand from the script
    tp = fp = fn = 0
    for i in held:
        g = {tuple(gold[ids[i]][0])}
        c = scripted(problems[i]["question"])[0]
        s = {tuple(c)} if c else set()
        tp, fp, fn = tp + len(g & s), fp + len(s - g), fn + len(g - s)
    agree = report["agreement"]
    assert agree["n"] == 4
    assert agree["precision"] == pytest.approx(tp / max(tp + fp, 1))
    assert agree["recall"] == pytest.approx(tp / (tp + fn))
    assert agree["with_fallback"]["n"] == 4
    sure_held = [i for i in held if scripted(problems[i]["question"])[1] >= 0.5]
    assert agree["confident"]["n"] == len(sure_held) and agree["unsure"]["n"] == 4 - len(sure_held)
    held_rows = [rows[ids[i]] for i in held]
    assert all("cheap_chains" in r.metadata["tagger"]["cascade"] for r in held_rows)


@pytest.fixture(scope="module")
def world_cascade(
    world_tree: SkillTree, world_pool_small: list[Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A cascade over 240 world problems (distinct texts): seed 100, 30 held out, the embedding tagger."""
    from skilltag.backends.openai_chat import OpenAIBackend, OpenAIConfig
    from skilltag.cascade import embedding_from
    from skilltag.factory import EngineSettings

    folder = tmp_path_factory.mktemp("cascade")
    tree_path = folder / "tree.json"
    world_tree.save(tree_path)
    seen: set[str] = set()
    pool = []
    for p in world_pool_small:
        text = problem_text(ProblemInput.from_record(p), 400)
        if text not in seen:
            seen.add(text)
            pool.append(p)
    pool = pool[:240]
    cfg = CascadeConfig(seed_size=100, holdout=30, threshold=0.65)
    built: list[TaggingEngine] = []
    make = embedding_from(EngineSettings(tree=tree_path, embedding_options={"threads": 1}))

    def make_cheap(path: Path) -> TaggingEngine:
        built.append(make(path))
        return built[-1]

    model = ScriptedModel(knows_chains(pool))
    with model as url:
        backend = OpenAIBackend(OpenAIConfig(base_urls=(url,), model="scripted", max_concurrency=8))
        llm = TaggingEngine(world_tree, backend)
        inputs = [p.model_dump(exclude={"chains"}) for p in pool]  # the tagger sees no chains
        result = run_cascade(inputs, llm, make_cheap, cfg, folder / "exemplars.jsonl", progress=False)
        backend.close()
    return {"pool": pool, "cfg": cfg, "result": result, "asked": model.asked, "cheap": built[0]}


def test_cascade_on_the_world_with_the_embedding_tagger(world_cascade: dict[str, Any]) -> None:
    pool, cfg, result, asked = (world_cascade[k] for k in ("pool", "cfg", "result", "asked"))
    report = result.report
    train, held = split_seed(len(pool), cfg)
    text = {p.unique_id: problem_text(ProblemInput.from_record(p), 400) for p in pool}
    gold = {p.unique_id: sorted(p.chains) for p in pool}

    # the cheap tagger's exemplars are texts of the seed minus the held-out slice only
    backend = world_cascade["cheap"].backend
    exemplar_texts = {t for texts in backend.exemplars.values() for t in texts}
    train_texts = {text[pool[i].unique_id] for i in train}
    assert exemplar_texts and exemplar_texts <= train_texts
    assert not exemplar_texts & {text[pool[i].unique_id] for i in held}

    # LLM calls == seed + fallbacks, counted on the server (one root request per problem walked)
    roots = [a.problem for a in asked if a.path == ()]
    assert len(roots) == len(set(roots)) == cfg.seed_size + report["fallbacks"] == report["llm"]["problems"]
    assert len(asked) == report["llm"]["requests"]
    asked_texts = set(roots)

    # unsure problems went back to the LLM (and got its chains), sure ones never reached it
    n_cheap = n_fallback = 0
    for row in result.rows:
        note = row.metadata["tagger"]["cascade"]
        if note["source"] in ("seed", "holdout"):
            assert text[row.unique_id] in asked_texts
            continue
        sure = note["confidence"] is not None and note["confidence"] >= cfg.threshold
        if sure:
            n_cheap += 1
            assert note["source"] == "cheap" and text[row.unique_id] not in asked_texts
        else:
            n_fallback += 1
            assert note["source"] == "fallback" and text[row.unique_id] in asked_texts
            assert sorted(row.chains) == gold[row.unique_id]  # the scripted LLM tags right
    assert n_fallback == report["fallbacks"] and n_cheap == report["sources"]["cheap"] and n_cheap > 0
    # the cascade's rows agree with the LLM at least as well as the cheap tagger did on the held-out slice
    agree = report["agreement"]
    assert agree["n"] == 30 and agree["f1"] > 0.5
    assert agree["with_fallback"]["f1"] >= agree["f1"]
    assert report["cost"]["per_100k"]["saved_calls"] > 0
