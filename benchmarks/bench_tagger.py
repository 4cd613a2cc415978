"""Tagger benchmark: quality of the ``embedding`` backend on the offline world and, without exemplars, on
a real-style tree (the shipped ``compmath`` evaluation set), bulk speed, and the latency of cached calls
through the gRPC server with 32 concurrent clients on loopback. One torch thread.

Quality: leaf-level micro precision / recall / F1 against the world's ground-truth chains. Exemplars come
from a disjoint pool (another seed, questions seen there removed from the evaluation set); the backend's
defaults were tuned on yet another pool (seed 0), so the figures are held out. The timed part is tagging
the evaluation set with exemplars; the names-and-descriptions-only backend is scored once beside it.

Zero-shot quality (``test_tagger_zero_shot``): the ``compmath`` set (``skilltag.evalset``: 7 categories,
45 leaves, 157 competition-style problems, 22 with two chains), names and descriptions only. Category
accuracy (the best chain's top-level category is a gold one) and leaf P/R/F1 on its ``test`` split (the
zero-shot settings were tuned on ``dev``), beside the trivial majority baseline and the backend as it was
before per-level calibration (``LEGACY``: own "name: description" text, one absolute threshold).

    .venv/bin/pytest benchmarks/bench_tagger.py --benchmark-enable         # or: make bench / make bench-quick
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from skillcore import SkillTree
from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, exemplars_from_tagged
from skilltag.cache import TagCache
from skilltag.engine import TaggingEngine
from skilltag.evalset import category_accuracy, eval_problems, eval_tree, majority_category, majority_chains
from skilltag.quality import leaf_prf
from skilltagger.client import TaggerClient
from skilltagger.server import TaggerServer
from skillworld import generate_pool, world_tree

THREADS = 1
# the names-only backend before per-level calibration (issue #15): own text, one absolute threshold
LEGACY = {"node_text": "node", "select": "threshold", "subtree_weight": 0.0}


@pytest.mark.parametrize(
    ("n_eval", "n_exemplar_pool"),
    [
        pytest.param(200, 600, marks=[pytest.mark.quick, pytest.mark.quick_only], id="200"),
        pytest.param(600, 1000, marks=pytest.mark.large, id="600"),
    ],
)
def test_tagger_quality(bench: Any, benchmark: Any, n_eval: int, n_exemplar_pool: int) -> None:
    tree = world_tree()
    source = generate_pool(n_exemplar_pool, seed=1)
    seen = {p.question for p in source}
    evaluation = [p for p in generate_pool(n_eval, seed=2) if p.question not in seen]
    exemplars = exemplars_from_tagged([p for p in source if len(p.chains) == 1], per_leaf=20)
    gold = [p.chains for p in evaluation]
    bench.conditions(threads=THREADS)
    plain = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS)))
    names_only = leaf_prf(gold, [r.chains for r in plain.tag(evaluation)])
    engine = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS), exemplars=exemplars))
    engine.tag(evaluation[:16])  # load the model and the exemplar index
    results = benchmark.pedantic(lambda: engine.tag(evaluation, skip_cache=True), rounds=1)
    m = leaf_prf(gold, [r.chains for r in results])
    bench.info.update(
        n_eval=len(evaluation),
        n_multi_skill=sum(len(p.chains) > 1 for p in evaluation),
        n_exemplars=sum(map(len, exemplars.values())),
        with_exemplars={k: round(v, 4) for k, v in m.items()},
        names_only={k: round(v, 4) for k, v in names_only.items()},
        problems_per_s=round(len(evaluation) / bench.best(), 1),
    )
    assert m["f1"] >= 0.85, f"tagging quality fell: leaf F1 {m['f1']:.3f}"
    bench.figure(
        f"embedding tagger leaf precision / recall / F1 on {len(evaluation)} held-out world problems "
        "(names and descriptions only: F1; tagging speed with exemplars)",
        f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f} ({names_only['f1']:.3f}; "
        f"{len(evaluation) / bench.best():.0f} problems/s)",
        order=300 + (n_eval > 300),
    )


@pytest.mark.parametrize("split", [pytest.param("test", marks=pytest.mark.quick), pytest.param("dev")])
def test_tagger_zero_shot(bench: Any, benchmark: Any, split: str) -> None:
    tree = eval_tree()
    problems = eval_problems(split)
    gold = [p.chains for p in problems]
    bench.conditions(threads=THREADS)

    def score(chains: list[list[list[str]]]) -> dict[str, float]:
        m = leaf_prf(gold, chains)
        return {
            "category_accuracy": round(category_accuracy(gold, chains), 4),
            **{k: round(v, 4) for k, v in m.items()},
            "chains_per_problem": round(sum(map(len, chains)) / len(chains), 3),
        }

    legacy = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS, **LEGACY)))
    before = score([r.chains for r in legacy.tag(problems)])
    majority = score([[[majority_category(gold)]]] * len(gold))  # category only: leaf figures are 0
    majority_leaf = score([majority_chains(gold)] * len(gold))
    engine = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS)))
    engine.tag(problems[:4])  # load the model, encode the tree
    results = benchmark.pedantic(lambda: engine.tag(problems, skip_cache=True), rounds=1)
    now = score([r.chains for r in results])
    predicted_categories = sorted({r.chains[0][0] for r in results if r.chains})
    # the same tree with names only (descriptions removed), as in trees that carry no descriptions
    bare = SkillTree.from_dict(_without_descriptions(tree.to_dict()))
    bare_now = score(
        [
            r.chains
            for r in TaggingEngine(bare, EmbeddingBackend(EmbeddingConfig(threads=THREADS))).tag(problems)
        ]
    )
    bare_legacy = TaggingEngine(bare, EmbeddingBackend(EmbeddingConfig(threads=THREADS, **LEGACY)))
    bare_before = score([r.chains for r in bare_legacy.tag(problems)])
    bench.info.update(
        split=split,
        n=len(problems),
        n_multi_skill=sum(len(c) > 1 for c in gold),
        now=now,
        before=before,
        majority_category=majority["category_accuracy"],
        majority_leaf=majority_leaf,
        categories_predicted=len(predicted_categories),
        names_only_tree={"now": bare_now, "before": bare_before},
    )
    if split == "test":
        assert now["category_accuracy"] >= 0.75 and now["f1"] >= 0.6, f"zero-shot quality fell: {now}"
    bench.figure(
        f"embedding tagger without exemplars on the compmath {split} split ({len(problems)} competition-style "
        "problems, 7 categories, 45 leaves): category accuracy, leaf P / R / F1, chains per problem "
        "(before calibration; majority baseline)",
        f"{now['category_accuracy']:.3f}, {now['precision']:.3f} / {now['recall']:.3f} / {now['f1']:.3f}, "
        f"{now['chains_per_problem']:.2f} ({before['category_accuracy']:.3f}, {before['precision']:.3f} / "
        f"{before['recall']:.3f} / {before['f1']:.3f}; majority {majority['category_accuracy']:.3f}, "
        f"leaf F1 {majority_leaf['f1']:.3f})",
        order=305 + (split == "dev"),
    )


def _without_descriptions(node: dict[str, Any]) -> dict[str, Any]:
    return {"name": node["name"], "children": [_without_descriptions(c) for c in node.get("children", [])]}


@pytest.mark.large  # the quick set has the quality benchmark's timed tagging instead
@pytest.mark.parametrize("n", [1000])
def test_tagger_bulk(bench: Any, benchmark: Any, n: int) -> None:
    batch = 256
    tree = world_tree()
    exemplars = exemplars_from_tagged([p for p in generate_pool(1000, seed=1) if len(p.chains) == 1])
    problems = generate_pool(n, seed=3)
    bench.conditions(threads=THREADS)
    engine = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS), exemplars=exemplars))
    engine.tag(generate_pool(32, seed=6))  # load the model and the exemplar index

    def run() -> int:
        return sum(1 for _ in engine.tag_iter(problems, batch_size=batch, skip_cache=True))

    done = benchmark.pedantic(run, rounds=1)
    rate = done / bench.best()
    bench.info.update(n=done, problems_per_s=round(rate, 1), batch=batch)
    bench.figure(
        f"embedding tagger bulk speed, {n:,} problems (in-process, exemplars, batch {batch}, no cache, 1 thread)",
        f"{rate:.0f} problems/s",
        order=310,
    )


@pytest.mark.parametrize(
    "calls",
    [pytest.param(20, marks=[pytest.mark.quick, pytest.mark.quick_only], id="20"), pytest.param(50, id="50")],
)
def test_tagger_cached_grpc(bench: Any, benchmark: Any, calls: int) -> None:
    clients, workers = 32, 16
    tree = world_tree()
    problems = generate_pool(256, seed=4)
    bench.conditions(threads=THREADS, cores=2)
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = TaggingEngine(
            tree, EmbeddingBackend(EmbeddingConfig(threads=THREADS)), TagCache(Path(tmp) / "c.sqlite")
        )
        server = TaggerServer(engine, port=0, workers=workers).start()
        try:
            with TaggerClient.from_address(server.address, batch_size=64) as warm:
                warm.tag(problems)  # fill the cache

            def one_round() -> None:
                lock = threading.Lock()
                barrier = threading.Barrier(clients)
                errors: list[BaseException] = []

                def client_loop(k: int) -> None:
                    try:
                        with TaggerClient.from_address(server.address, timeout=30) as client:
                            client.tag_batch([problems[k]])  # connect
                            barrier.wait()
                            mine = []
                            for i in range(calls):
                                p = problems[(k * calls + i) % len(problems)]
                                t0 = time.perf_counter()
                                result = client.tag_batch([p])
                                mine.append(time.perf_counter() - t0)
                                assert result[0].from_cache
                            with lock:
                                latencies.extend(mine)
                    except BaseException as exc:  # reported below
                        errors.append(exc)

                threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if errors:
                    raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")

            benchmark.pedantic(one_round, rounds=2)
        finally:
            server.stop(1.0).wait()
    q = statistics.quantiles(latencies, n=100)
    n_calls = clients * calls
    bench.info.update(
        clients=clients,
        calls_per_client=calls,
        server_threads=workers,
        p50_ms=round(q[49] * 1000, 2),
        p99_ms=round(q[98] * 1000, 2),
        calls_per_s_best_round=round(n_calls / bench.best()),
    )
    bench.figure(
        f"cached tagging calls, {clients} concurrent gRPC clients x {calls} calls on loopback, "
        f"{workers} server threads",
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, {n_calls / bench.best():,.0f} calls/s",
        order=320 + (calls > 20),
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "--benchmark-enable", *sys.argv[1:]]))


# ------------------------------------------------------------------------------------------------
# Cascade tagging (issue #15 item 3, ``skilltag.cascade``): a scripted OpenAI-compatible server on loopback
# plays an LLM that tags right (the world's ground-truth chains), so its tags are the reference; the
# embedding tagger learns from the LLM's tags of the seed. Recorded: LLM calls against LLM-only tagging
# (measured, and extrapolated to 100K problems), the held-out agreement of the cheap tagger with the LLM
# (alone and with its unsure problems sent back), and a threshold sweep on the same run.
CASCADE_SWEEP = (0.55, 0.6, 0.65, 0.7, 0.75)


@pytest.mark.parametrize(
    ("n_pool", "seed_size", "holdout"),
    [
        pytest.param(600, 200, 50, marks=[pytest.mark.quick, pytest.mark.quick_only], id="600"),
        pytest.param(2000, 600, 150, marks=pytest.mark.large, id="2000"),
    ],
)
def test_tagger_cascade(bench: Any, benchmark: Any, n_pool: int, seed_size: int, holdout: int) -> None:
    from skillcore import read_jsonl
    from skilltag.backends.openai_chat import OpenAIBackend, OpenAIConfig
    from skilltag.cascade import CascadeConfig, run_cascade
    from skilltag.testing import ScriptedModel, knows_chains

    tree = world_tree()
    pool = generate_pool(n_pool, seed=3)
    cfg = CascadeConfig(seed_size=seed_size, holdout=holdout)
    bench.conditions(threads=THREADS)

    def make_cheap(path: Path) -> TaggingEngine:
        rows = [r for r in read_jsonl(path) if len(r.get("chains") or []) == 1]
        backend = EmbeddingBackend(EmbeddingConfig(threads=THREADS), exemplars=exemplars_from_tagged(rows))
        return TaggingEngine(tree, backend)

    model = ScriptedModel(knows_chains(pool))
    with model as url, tempfile.TemporaryDirectory() as tmp:
        llm_backend = OpenAIBackend(OpenAIConfig(base_urls=(url,), model="scripted", max_concurrency=8))
        llm = TaggingEngine(tree, llm_backend)
        inputs = [p.model_dump(exclude={"chains"}) for p in pool]

        def cascade() -> Any:
            return run_cascade(inputs, llm, make_cheap, cfg, Path(tmp) / "exemplars.jsonl", progress=False)

        result = benchmark.pedantic(cascade, rounds=1)
        llm_backend.close()
    report = result.report
    assert len(model.asked) == report["llm"]["requests"]
    agree = report["agreement"]
    per_100k = report["cost"]["per_100k"]
    # the sweep: the same run, other thresholds (held-out agreement with fallbacks, share sent back)
    notes = [r.metadata["tagger"]["cascade"] for r in result.rows]
    held = [(n, r.chains) for n, r in zip(notes, result.rows, strict=True) if n["source"] == "holdout"]
    rest = [n for n in notes if n["source"] in ("cheap", "fallback")]

    def unsure(note: dict[str, Any], t: float) -> bool:
        return note["confidence"] is None or note["confidence"] < t

    sweep = {}
    for t in CASCADE_SWEEP:
        mixed = [gold if unsure(n, t) else n["cheap_chains"] for n, gold in held]
        sweep[str(t)] = {
            "fallback_rate": round(sum(unsure(n, t) for n in rest) / max(len(rest), 1), 4),
            "f1_with_fallback": round(leaf_prf([g for _, g in held], mixed)["f1"], 4),
        }
    bench.info.update(
        n_pool=n_pool,
        seed_size=seed_size,
        holdout=holdout,
        threshold=cfg.threshold,
        fallbacks=report["fallbacks"],
        fallback_rate=round(report["fallback_rate"], 4),
        llm_problems=report["llm"]["problems"],
        llm_calls=report["llm"]["requests"],
        calls_per_problem=round(report["llm"]["calls_per_problem"], 3),
        llm_only_calls_pool=round(report["cost"]["pool"]["llm_only_calls"]),
        saved_calls_per_100k=round(per_100k["saved_calls"]),
        saved_share_per_100k=round(per_100k["saved_share"], 4),
        agreement={k: round(agree[k], 4) for k in ("precision", "recall", "f1", "exact_set", "macro_f1")},
        agreement_with_fallback=round(agree["with_fallback"]["f1"], 4),
        agreement_confident=round(agree["confident"]["f1"], 4),
        agreement_unsure=round(agree["unsure"]["f1"], 4),
        sweep=sweep,
        problems_per_s=round(n_pool / bench.best(), 1),
    )
    assert agree["f1"] >= 0.6, f"cascade agreement fell: {agree['f1']:.3f}"
    bench.figure(
        f"cascade tagging of {n_pool} world problems (LLM seed {seed_size}, {holdout} held out, threshold "
        f"{cfg.threshold}): LLM calls saved per 100K problems; held-out leaf F1 of the cheap tagger vs the LLM "
        "(with fallbacks)",
        f"{per_100k['saved_calls']:,.0f} of {per_100k['llm_only_calls']:,.0f} "
        f"({per_100k['saved_share']:.0%}); F1 {agree['f1']:.3f} ({agree['with_fallback']['f1']:.3f})",
        order=330 + (n_pool > 1000),
    )
