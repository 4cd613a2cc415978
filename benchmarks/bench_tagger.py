"""Tagger benchmark: quality of the ``embedding`` backend on the offline world, bulk speed, and the latency
of cached calls through the gRPC server with 32 concurrent clients on loopback.

    .venv/bin/python benchmarks/bench_tagger.py            # full run (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_tagger.py --quick    # smaller sets

Quality: leaf-level micro precision / recall / F1 against the world's ground-truth chains. Exemplars come
from a disjoint pool (another seed, questions seen there removed from the evaluation set); the backend's
defaults were tuned on yet another pool (seed 0), so the figures here are held out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from skilltagger.backends.embedding import EmbeddingBackend, EmbeddingConfig, exemplars_from_tagged
from skilltagger.cache import TagCache
from skilltagger.client import TaggerClient
from skilltagger.engine import TaggingEngine
from skilltagger.quality import leaf_prf
from skilltagger.server import TaggerServer
from skillworld import generate_pool, world_tree


def quality(n_eval: int, n_exemplar_pool: int, per_leaf: int, threads: int | None) -> None:
    tree = world_tree()
    source = generate_pool(n_exemplar_pool, seed=1)
    seen = {p.question for p in source}
    evaluation = [p for p in generate_pool(n_eval, seed=2) if p.question not in seen]
    single = [p for p in source if len(p.chains) == 1]
    exemplars = exemplars_from_tagged(single, per_leaf=per_leaf)
    multi = sum(len(p.chains) > 1 for p in evaluation)
    print(
        f"quality: {len(evaluation)} held-out world problems ({multi} multi-skill), tree of {tree.n_leaves} leaves; "
        f"exemplars: {sum(map(len, exemplars.values()))} single-skill problems from a disjoint pool (<= {per_leaf}/leaf)"
    )
    gold = [p.chains for p in evaluation]
    for label, backend in (
        ("names+descriptions only", EmbeddingBackend(EmbeddingConfig(threads=threads))),
        ("with exemplars (default)", EmbeddingBackend(EmbeddingConfig(threads=threads), exemplars=exemplars)),
    ):
        m = leaf_prf(gold, [r.chains for r in TaggingEngine(tree, backend).tag(evaluation)])
        print(
            f"  {label:<26} precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  "
            f"exact chain set {m['exact_set']:.3f}"
        )


def bulk_speed(n: int, batch: int, threads: int | None) -> None:
    tree = world_tree()
    exemplars = exemplars_from_tagged([p for p in generate_pool(1000, seed=1) if len(p.chains) == 1])
    problems = generate_pool(n, seed=3)
    engine = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(threads=threads), exemplars=exemplars))
    engine.tag(problems[:batch])  # warm up
    start = time.perf_counter()
    done = sum(1 for _ in engine.tag_iter(problems, batch_size=batch, skip_cache=True))
    elapsed = time.perf_counter() - start
    print(
        f"bulk: {done} problems in {elapsed:.1f}s = {done / elapsed:.0f} problems/s "
        f"(embedding + exemplars, batch {batch}, torch threads {threads or 'default'}, in-process, no cache)"
    )


def cached_latency(clients: int, calls: int, workers: int) -> None:
    tree = world_tree()
    problems = generate_pool(256, seed=4)
    with tempfile.TemporaryDirectory() as tmp:
        engine = TaggingEngine(
            tree, EmbeddingBackend(EmbeddingConfig(threads=1)), TagCache(Path(tmp) / "c.sqlite")
        )
        server = TaggerServer(engine, port=0, workers=workers).start()
        try:
            with TaggerClient.from_address(server.address, batch_size=64) as warm:
                warm.tag(problems)  # fill the cache
            latencies: list[float] = []
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
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            server.stop(1.0).wait()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    q = statistics.quantiles(latencies, n=100)
    print(
        f"cached calls: {clients} concurrent clients x {calls} TagProblems calls (1 problem each), "
        f"{workers} server threads: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
        f"{len(latencies) / wall:.0f} calls/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="skill tagger benchmark")
    parser.add_argument("--quick", action="store_true", help="smaller sets for a fast look")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for encoding (0: torch default)"
    )
    args = parser.parse_args()
    threads = args.threads or None
    quality(
        n_eval=200 if args.quick else 600,
        n_exemplar_pool=600 if args.quick else 1000,
        per_leaf=20,
        threads=threads,
    )
    bulk_speed(n=500 if args.quick else 2000, batch=256, threads=threads)
    cached_latency(clients=32, calls=20 if args.quick else 50, workers=16)


if __name__ == "__main__":
    main()
