"""Encoder benchmark: the embedding backend tagging the offline world with the torch SentenceTransformer
against ONNX Runtime encoders (``skilltag.encoders.OnnxEncoder``, fp32 and int8) and the static encoder
(``skilltag.encoders.StaticEncoder``, alone or with a transformer refiner for the problems it is unsure of),
side by side in one run, on an idle machine and with one competing CPU-bound process, with the leaf F1 and
the zero-shot category accuracy of each.

    .venv/bin/python benchmarks/bench_encoder.py                     # 1,000 problems x 2 rounds
    .venv/bin/python benchmarks/bench_encoder.py --n 2000 --rounds 1 --loads idle --encoders torch:1,onnx-int8:1

Encoder kinds: ``torch``, ``onnx-fp32`` (or ``onnx``), ``onnx-int8``, ``static`` (the static table alone) and
``static+REFINER`` (the static pass, then REFINER, one of the three transformer kinds, for the problems whose
two best leaf scores are closer than ``EmbeddingConfig.refine_margin``). int8 is fast only on CPUs with VNNI
(or AMX); on AVX2-only CPUs it runs at fp32's speed, so ``onnx-fp32`` and ``static+onnx-fp32`` stand for
what those CPUs get. The run's CPU model and speed-deciding flags are printed with the table.

A plain script (no pytest tests: `make bench` collects nothing from it). Set-up as in bench_tagger.py:
exemplars (20 per leaf) from a world pool of 1,000 problems (seed 1, single-chain problems), the evaluation
problems from another pool (seed 2) minus the questions seen there; the backend's defaults. Each encoder
gets a fresh backend (``backend.model = encoder`` before the engine binds it, so node and exemplar vectors
come from that encoder too) and tags the evaluation set once, uncached, in batches of ``--batch``.

Columns: ``problems/s`` wall-clock; ``per cpu-s`` problems per CPU-second of this process (what one
thread would do on a free core; robust to other load when threads=1); ``encode`` the share of wall time
spent in the encoder; ``others`` the cores other processes used just before each round's run (the
competitor included), one figure a round, and the 1-minute load average; ``refined`` the share of problems
the static pass sent on to its refiner; leaf P/R/F1 against the world's gold chains and the F1 change against
the torch encoder; ``zero-shot cat`` the category accuracy on the shipped ``compmath`` set without exemplars
(``skilltag.evalset``: ``test`` split, ``dev`` in brackets; as ``test_tagger_zero_shot`` in bench_tagger.py
measures it) with that split's refined share.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, exemplars_from_tagged
from skilltag.encoders import cache_root
from skilltag.engine import TaggingEngine
from skilltag.evalset import category_accuracy, eval_problems, eval_tree
from skilltag.quality import leaf_prf
from skillworld import generate_pool, world_tree

from conftest import cpu_info, sample_conditions


class TimedEncoder:
    """Wraps an encoder and adds up the wall time spent in ``encode``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.encode(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def get_embedding_dimension(self) -> int:
        return int(self.inner.get_embedding_dimension())


@contextmanager
def competitor(on: bool) -> Iterator[None]:
    """One CPU-bound process spinning beside the benchmark while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


TRANSFORMERS = {"torch": "torch", "onnx": "onnx", "onnx-fp32": "onnx", "onnx-int8": "onnx-int8"}


def make_config(kind: str, threads: int) -> EmbeddingConfig:
    """The backend configuration of an encoder kind (see the module docstring)."""
    if kind in TRANSFORMERS:
        return EmbeddingConfig(threads=threads, encoder=TRANSFORMERS[kind])  # type: ignore[arg-type]
    if kind == "static":
        return EmbeddingConfig(threads=threads, encoder="static", refine=None)
    head, _, refiner = kind.partition("+")
    if head == "static" and refiner in TRANSFORMERS:
        return EmbeddingConfig(threads=threads, encoder="static", refine=TRANSFORMERS[refiner])  # type: ignore[arg-type]
    raise SystemExit(f"unknown encoder {kind!r} (torch, onnx-fp32, onnx-int8, static, static+TRANSFORMER)")


@dataclass
class Arm:
    """One encoder configuration: its bound engine and what its timed runs measured."""

    kind: str
    threads: int
    engine: TaggingEngine
    timed: TimedEncoder
    backend: EmbeddingBackend
    timed_refiner: TimedEncoder | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    chains: list[list[list[str]]] | None = None
    same_tags: bool = True
    zero_shot: dict[str, tuple[float, float]] = field(default_factory=dict)  # split -> (accuracy, refined)


def make_arm(kind: str, threads: int, tree: Any, exemplars: dict[tuple[str, ...], list[str]]) -> Arm:
    backend = EmbeddingBackend(make_config(kind, threads), exemplars=exemplars)
    timed = TimedEncoder(backend.model)
    backend.model = timed
    timed_refiner = None
    if backend.refiner is not None:
        timed_refiner = TimedEncoder(backend.refiner)
        backend.refiner = timed_refiner
    engine = TaggingEngine(tree, backend)  # binds: node and exemplar vectors from this encoder
    engine.tag(generate_pool(32, seed=6))  # warm
    return Arm(kind, threads, engine, timed, backend, timed_refiner)


def zero_shot(arm: Arm) -> None:
    """Category accuracy on the compmath evaluation set without exemplars, with this arm's encoders."""
    tree = eval_tree()
    for split in ("test", "dev"):
        problems = eval_problems(split)
        backend = EmbeddingBackend(arm.backend.cfg)  # the same (cached) models: load_model is memoised
        results = TaggingEngine(tree, backend).tag(problems, skip_cache=True)
        accuracy = category_accuracy([p.chains for p in problems], [r.chains for r in results])
        arm.zero_shot[split] = (accuracy, backend.problems_refined / max(backend.problems_started, 1))


def time_arm(arm: Arm, load: str, evaluation: Sequence[Any], batch: int) -> None:
    cond = sample_conditions()
    arm.timed.seconds = 0.0
    if arm.timed_refiner is not None:
        arm.timed_refiner.seconds = 0.0
    arm.backend.problems_started = arm.backend.problems_refined = 0
    c0, t0 = time.process_time(), time.perf_counter()
    results = list(arm.engine.tag_iter(evaluation, batch_size=batch, skip_cache=True))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    chains = [r.chains for r in results]
    if arm.chains is None:
        arm.chains = chains
    arm.same_tags &= chains == arm.chains
    arm.runs.append(
        {
            "load": load,
            "rate": len(evaluation) / wall,
            "per_cpu": len(evaluation) / cpu,
            "encode_share": (arm.timed.seconds + (arm.timed_refiner.seconds if arm.timed_refiner else 0.0))
            / wall,
            "others": cond["others_cores"],
            "load_1m": cond["load_1m"],
            "refined": arm.backend.problems_refined / max(arm.backend.problems_started, 1),
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="evaluation problems (before removing seen ones)")
    ap.add_argument("--batch", type=int, default=256, help="problems per walk (tag_iter batch)")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs per encoder and load (best kept)")
    ap.add_argument(
        "--encoders",
        default="torch:1,onnx-fp32:1,onnx-int8:1,static:1,static+onnx-fp32:1,static+onnx-int8:1",
        help="comma-separated KIND:THREADS (kinds: torch, onnx-fp32, onnx-int8, static, static+TRANSFORMER)",
    )
    ap.add_argument("--loads", default="idle,busy", help="idle, busy (one competing CPU-bound process)")
    args = ap.parse_args(argv)

    tree = world_tree()
    source = generate_pool(1000, seed=1)
    seen = {p.question for p in source}
    evaluation = [p for p in generate_pool(args.n, seed=2) if p.question not in seen]
    exemplars = exemplars_from_tagged([p for p in source if len(p.chains) == 1], per_leaf=20)
    gold = [p.chains for p in evaluation]
    cpu = cpu_info()
    start = sample_conditions()
    print(
        f"{datetime.date.today()}: {len(evaluation)} evaluation problems, {sum(map(len, exemplars.values()))} "
        f"exemplars, batch {args.batch}, {len(os.sched_getaffinity(0))} cores, cache {cache_root()}\n"
        f"CPU {cpu['cpu']}, flags: {cpu['cpu_flags']}\n"
        f"at the start: others {start['others_cores']} cores, load average {start['load_1m']} / {start['load_5m']}",
        flush=True,
    )
    arms = [
        make_arm(k, int(t), tree, exemplars)
        for k, _, t in (c.partition(":") for c in args.encoders.split(","))
    ]
    loads = args.loads.split(",")
    for rnd in range(args.rounds):  # interleaved, so drifting load from other processes hits every arm
        for load in loads:
            with competitor(load == "busy"):
                for arm in arms:
                    time_arm(arm, load, evaluation, args.batch)
                    run = arm.runs[-1]
                    print(
                        f"  round {rnd + 1} {load:4s} {arm.kind:16s} t{arm.threads}: {run['rate']:6.1f} problems/s, "
                        f"{run['per_cpu']:6.1f} per cpu-s, refined {run['refined']:.0%}, others {run['others']}, "
                        f"load {run['load_1m']}",
                        flush=True,
                    )
    for arm in arms:
        zero_shot(arm)
    quality = {id(a): leaf_prf(gold, a.chains or []) for a in arms}
    ref = next((quality[id(a)]["f1"] for a in arms if a.kind == "torch"), None)
    end = sample_conditions()
    print(
        f"\nat the end: others {end['others_cores']} cores, load average {end['load_1m']} / {end['load_5m']}"
    )
    print(f"CPU {cpu['cpu']}, flags: {cpu['cpu_flags']}")
    header = (
        f"| {'load':4s} | {'encoder':16s} | thr | problems/s best (median) | per cpu-s best | encode | "
        f"others    | load | refined | {'P':>6s} | {'R':>6s} | {'F1':>6s} | dF1 vs torch | same tags each run | "
        f"zero-shot cat test (dev) | refined |"
    )
    print()
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for load in loads:
        for arm in arms:
            runs = [r for r in arm.runs if r["load"] == load]
            best = max(runs, key=lambda r: r["rate"])
            med = statistics.median(r["rate"] for r in runs)
            q = quality[id(arm)]
            delta = f"{q['f1'] - ref:+.4f}" if ref is not None else "n/a"
            others = "/".join(str(r["others"]) for r in runs)
            rate = f"{best['rate']:.1f} ({med:.1f})"
            test, dev = arm.zero_shot["test"], arm.zero_shot["dev"]
            print(
                f"| {load:4s} | {arm.kind:16s} | {arm.threads:3d} | {rate:>24s} | "
                f"{max(r['per_cpu'] for r in runs):14.1f} | {best['encode_share']:6.0%} | {others:>9s} | "
                f"{best['load_1m']:4.1f} | {best['refined']:7.0%} | "
                f"{q['precision']:.4f} | {q['recall']:.4f} | {q['f1']:.4f} | {delta:>12s} | "
                f"{'yes' if arm.same_tags else 'NO':>18s} | {f'{test[0]:.3f} ({dev[0]:.3f})':>24s} | "
                f"{test[1]:7.0%} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
