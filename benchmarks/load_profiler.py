"""`/judge` under load, over HTTP, against a real `bentoml serve` of the profiler on loopback.

1. A one-answer request's latency alone, then while a slow request (12 power towers, each judged until the
   5 s per-answer deadline) is in flight: requests share the judge workers item by item, so the small one
   waits for at most one running comparison instead of the whole slow request.
2. 8 and 32 concurrent clients, each sending 10-answer requests (world-pool answers): requests/s,
   answers/s, p50/p99 latency, errors.

    .venv/bin/python benchmarks/load_profiler.py [--judge-workers 2] [--requests 20]

Prints a markdown table and the machine's load before and after (these machines are shared: figures taken
while other processes use the cores are marked busy).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from distill.testing import free_port, server_process
from skillworld import generate_pool

TOWER = "so \\boxed{2^{2^{2^{2^{2^{2}}}}}}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def small_request(i: int) -> dict[str, Any]:
    return {
        "items": [
            {
                "unique_id": f"q{i}",
                "response": f"\\boxed{{\\dfrac{{{2 * i + 2}}}{{{4 * i + 8}}}}}",
                "expected_answer": f"\\frac{{{i + 1}}}{{{2 * i + 4}}}",
            }
        ]
    }


def world_requests(n: int, items: int) -> list[dict[str, Any]]:
    pool = generate_pool(max(1, n * items // 4), seed=3)
    out = []
    for r in range(n):
        chosen = [pool[(r * items + k) % len(pool)] for k in range(items)]
        out.append(
            {
                "items": [
                    {
                        "unique_id": f"{p.unique_id}-{r}-{k}",
                        "response": p.solution,
                        "expected_answer": p.expected_answer,
                    }
                    for k, p in enumerate(chosen)
                ]
            }
        )
    return out


def timed_post(client: httpx.Client, body: dict[str, Any]) -> tuple[float, bool]:
    start = time.perf_counter()
    try:
        ok = client.post("/judge", json=body).status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - start, ok


def small_latency(url: str, n: int, *, behind_slow: bool, round_id: int) -> list[float]:
    """Latencies of ``n`` one-answer requests, each alone or sent 1 s into a fresh slow request."""
    out = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for i in range(n):
            slow_thread = None
            if behind_slow:
                # fresh expected answers each time: the judge remembers an answer that timed out
                slow = {
                    "items": [
                        {"unique_id": f"s{k}", "response": TOWER, "expected_answer": f"{round_id}{i}{k}"}
                        for k in range(12)
                    ]
                }
                slow_thread = threading.Thread(
                    target=timed_post, args=(httpx.Client(base_url=url, timeout=300), slow)
                )
                slow_thread.start()
                time.sleep(1.0)
            seconds, ok = timed_post(client, small_request(i))
            assert ok, "a small /judge request failed"
            out.append(seconds)
            if slow_thread is not None:
                slow_thread.join()
    return out


def concurrent_load(url: str, clients: int, per_client: int, items: int) -> dict[str, Any]:
    bodies = world_requests(clients * per_client, items)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one_client(c: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=300) as client:
            for r in range(per_client):
                seconds, ok = timed_post(client, bodies[c * per_client + r])
                with lock:
                    latencies.append(seconds)
                    errors += not ok

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start
    n = clients * per_client
    return {
        "requests_per_s": n / wall,
        "answers_per_s": n * items / wall,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
        "requests": n,
    }


def bench_cpu_info() -> dict[str, str]:
    """The CPU model and speed-deciding flags, as benchmarks/conftest.py records them for every benchmark."""
    spec = importlib.util.spec_from_file_location("bench_conftest", Path(__file__).with_name("conftest.py"))
    assert spec is not None and spec.loader is not None
    bench_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_conftest)
    return dict(bench_conftest.cpu_info())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge-workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=20, help="requests per client / per latency series")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        env = {
            "SKILLPROFILER_ALLOWED_ROOTS": str(work),
            "SKILLPROFILER_WORK_DIR": str(work / "profiles"),
            "SKILLPROFILER_JUDGE_WORKERS": str(args.judge_workers),
            "BENTOML_HOME": str(work / "bentoml-home"),
            "OMP_NUM_THREADS": "1",
        }
        argv = [str(Path(sys.executable).with_name("bentoml")), "serve", "skillprofiler.service:Profiler"]
        with server_process(
            [*argv, "--port", str(port)], ready_url=f"http://127.0.0.1:{port}/readyz", env=env, cwd=work
        ):
            url = f"http://127.0.0.1:{port}"
            small_latency(url, 3, behind_slow=False, round_id=0)  # warm the workers
            alone = small_latency(url, args.requests, behind_slow=False, round_id=1)
            behind = small_latency(url, max(3, args.requests // 4), behind_slow=True, round_id=2)
            loads = {c: concurrent_load(url, c, args.requests, 10) for c in (8, 32)}
    load_after = os.getloadavg()[0]
    cpu = bench_cpu_info()
    print(
        f"\n`/judge` over HTTP, {args.judge_workers} judge workers, load {load_before:.2f} -> {load_after:.2f}, "
        f"CPU {cpu['cpu']} [{cpu['cpu_flags']}]\n"
    )
    print("| scenario | requests | req/s | answers/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, series in (
        ("1-answer request alone", alone),
        ("1-answer request behind 12 power towers", behind),
    ):
        print(
            f"| {name} | {len(series)} | - | - | {statistics.median(series) * 1000:,.0f} | "
            f"{percentile(series, 0.99) * 1000:,.0f} | 0 |"
        )
    for clients, r in loads.items():
        print(
            f"| {clients} clients x 10-answer requests | {r['requests']} | {r['requests_per_s']:,.1f} | "
            f"{r['answers_per_s']:,.0f} | {r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} | {r['errors']} |"
        )


if __name__ == "__main__":
    main()
