"""Tagger benchmark: quality of the ``embedding`` backend on the offline world, bulk speed, and the latency
of cached calls through the gRPC server with 32 concurrent clients on loopback. One torch thread.

Quality: leaf-level micro precision / recall / F1 against the world's ground-truth chains. Exemplars come
from a disjoint pool (another seed, questions seen there removed from the evaluation set); the backend's
defaults were tuned on yet another pool (seed 0), so the figures are held out. The timed part is tagging
the evaluation set with exemplars; the names-and-descriptions-only backend is scored once beside it.

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
from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, exemplars_from_tagged
from skilltag.cache import TagCache
from skilltag.engine import TaggingEngine
from skilltag.quality import leaf_prf
from skilltagger.client import TaggerClient
from skilltagger.server import TaggerServer
from skillworld import generate_pool, world_tree

THREADS = 1


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
