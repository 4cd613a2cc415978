"""Load benchmark of the tagging service: real server processes on loopback, many concurrent clients,
health-probe latency during the load, and the server as it was at HEAD beside the working tree's.

    .venv/bin/python benchmarks/load_tagger.py                    # about 12 minutes on 2 cores
    .venv/bin/python benchmarks/load_tagger.py --quick            # 32 clients, shorter phases
    .venv/bin/python benchmarks/load_tagger.py --impls new --procs 2

Servers: ``skilltagger serve --tree world`` as the CLI builds it (the embedding backend, one torch thread,
exemplars from a disjoint world pool, one SQLite tag cache shared by every process), started by this script
(``--serve``) with either the working tree's ``skilltagger.server`` (``new``) or the one committed at HEAD
(``head``: ``git show HEAD:services/tagger/src/skilltagger/server.py`` loaded as a module), so both run
side by side in one run on the same engine. Each server warms its model before it reports ready.

Clients: one asyncio process (this one), every client with its own channel and connection (a local
subchannel pool), each running calls back to back (closed loop) for ``--seconds``:
- cached: TagProblems with one problem, from 256 problems tagged beforehand (every answer from_cache);
- uncached: TagProblems with ``--uncached-batch`` problems and skip_cache (every call walks the tree).
Health: a separate process probes like a kubelet does (a fresh connection per probe, grpc.health.v1 Check,
every 100 ms) while the load runs; a probe gets 30 s so its latency is measured rather than cut off at 1 s,
and ``>1s`` counts the probes a 1-second liveness probe would have failed.

Floor: ``floor`` is a grpc.aio server that answers TagProblems with a canned answer (no engine): what
gRPC in Python costs on this machine with these clients, the least a cached call can take here.

Two processes: both bind the same port (gRPC sets SO_REUSEPORT on Linux by default), so the kernel spreads
the connections between them; clients need one address, as a Kubernetes Service or a single ``--server``
gives them. The ``cpu s`` column shows how the work split between the processes.
Last, each server gets SIGTERM while uncached calls are in flight: the time until it exits and how many
of those calls were answered show the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SERVER_SOURCE = "services/tagger/src/skilltagger/server.py"
TAG_METHOD = "/skilldistill.tagging.v1.SkillTagger/TagProblems"
PROBE_EVERY_S = 0.1
CALL_TIMEOUT_S = 120.0


def log(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- server
def head_server(folder: Path) -> Path:
    """The server module as committed at HEAD, written to ``folder`` (nothing in the checkout changes)."""
    source = subprocess.run(
        ["git", "show", f"HEAD:{SERVER_SOURCE}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = folder / "skilltagger_server_head.py"
    path.write_text(source)
    return path


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def serve(args: argparse.Namespace) -> None:
    """One server process: the CLI's engine (``--tree world``), the chosen server module, SIGTERM drains."""
    from skilltag.engine import ProblemInput
    from skilltagger.cli import _engine

    if args.server_module == "floor":
        serve_floor(args)
        return
    if args.server_module:
        module = load_module(Path(args.server_module))
    else:
        from skilltagger import server as module
    engine = _engine("world", "embedding", args.cache, args.exemplars, None, "", threads=1)
    engine.tag([ProblemInput("warm", "What is 2 + 3?", "")], skip_cache=True)  # load the model and index
    server = module.TaggerServer(engine, host="127.0.0.1", port=args.port, workers=args.workers).start()
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
            server.stop(args.grace)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("READY", flush=True)
    server.wait()


def serve_floor(args: argparse.Namespace) -> None:
    """The floor: a grpc.aio server whose TagProblems parses the request and returns a canned answer (the
    size of a cached one), with health; what gRPC in Python costs on this machine, with no tagging at all."""
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc
    from skilltagger._generated import tagging_pb2 as pb

    chain = pb.Chain(names=["Algebra", "Linear equations", "One-step equations"], scores=[0.61, 0.58, 0.55])
    canned = pb.TagProblemsResponse(
        results=[pb.ProblemResult(id="x", chains=[chain], backend="embedding", tree_hash="0" * 64)]
    )

    async def tag(request: Any, context: Any) -> Any:
        return canned

    async def main() -> None:
        server = grpc.aio.server()
        methods = {
            "TagProblems": grpc.unary_unary_rpc_method_handler(
                tag,
                request_deserializer=pb.TagProblemsRequest.FromString,
                response_serializer=pb.TagProblemsResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("skilldistill.tagging.v1.SkillTagger", methods),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{args.port}")
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop(1.0)))
        print("READY", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


@dataclass
class ServerProcs:
    label: str
    port: int
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def cpu_s(self) -> list[float]:
        hz = os.sysconf("SC_CLK_TCK")
        out = []
        for p in self.procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / hz)  # utime + stime
        return out


def start_servers(
    label: str, n: int, port: int, module: str, args: argparse.Namespace, tmp: Path
) -> ServerProcs:
    group = ServerProcs(label, port)
    for _ in range(n):
        cmd = [
            sys.executable, __file__, "--serve", "--port", str(port), "--workers", str(args.workers),
            "--cache", str(tmp / "tags.sqlite"), "--exemplars", str(tmp / "exemplars.jsonl"),
            "--grace", str(args.grace),
        ]  # fmt: skip
        if module:
            cmd += ["--server-module", module]
        errlog = (tmp / f"server-{label}-{port}-{len(group.procs)}.log").open("w")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, cwd=REPO)
        group.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # one server at a time: both bind the same port
        if line.strip() != "READY":
            raise RuntimeError(f"server {label} did not start (exit {proc.poll()}): see {errlog.name}")
    return group


def stop_servers(group: ServerProcs) -> None:
    for p in group.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in group.procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------------------- probe
def probe(args: argparse.Namespace) -> None:
    """Health probes like a kubelet's: a fresh connection per probe; prints the latencies (JSON)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + args.seconds
    latencies: list[float] = []
    failures: list[str] = []
    while time.monotonic() < end:
        t0 = time.perf_counter()
        with grpc.insecure_channel(args.probe, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    failures.append(f"status {reply.status}")
                latencies.append(time.perf_counter() - t0)
            except grpc.RpcError as exc:
                failures.append(str(exc.code()))
        time.sleep(PROBE_EVERY_S)
    print(json.dumps({"latencies": latencies, "failures": failures}), flush=True)


def start_probe(port: int, seconds: float) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--probe", f"127.0.0.1:{port}", "--seconds", f"{seconds:.1f}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)


# ---------------------------------------------------------------------------------------------- load
@dataclass
class LoadResult:
    latencies: list[float]
    errors: list[str]
    elapsed: float
    problems_per_call: int


async def run_load(
    port: int, clients: int, seconds: float, requests: list[list[bytes]], *, calls_each: int | None = None
) -> LoadResult:
    """``clients`` closed-loop clients, client k cycling through ``requests[k]``, for ``seconds`` (or
    ``calls_each`` calls); every client on its own channel and connection."""
    import grpc
    from skilltagger._generated import tagging_pb2 as pb

    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(clients)
    ]
    latencies: list[float] = []
    errors: list[str] = []
    go = asyncio.Event()
    stop_at = 0.0

    async def client(k: int) -> None:
        call = channels[k].unary_unary(TAG_METHOD, response_deserializer=pb.TagProblemsResponse.FromString)
        await channels[k].channel_ready()
        await go.wait()
        mine = requests[k]
        i = 0
        while (calls_each is None and time.monotonic() < stop_at) or (
            calls_each is not None and i < calls_each
        ):
            t0 = time.perf_counter()
            try:
                await call(mine[i % len(mine)], timeout=CALL_TIMEOUT_S)
                latencies.append(time.perf_counter() - t0)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
            i += 1

    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    await asyncio.sleep(0.5)  # connect
    start = time.monotonic()
    stop_at = start + seconds
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    for ch in channels:
        await ch.close()
    per_call = len(pb.TagProblemsRequest.FromString(requests[0][0]).problems)
    return LoadResult(latencies, errors, elapsed, per_call)


def build_requests(problems: list[Any], clients: int, per_call: int, skip_cache: bool) -> list[list[bytes]]:
    from skilltagger._generated import tagging_pb2 as pb

    def req(rows: list[Any]) -> bytes:
        msg = pb.TagProblemsRequest(
            problems=[pb.Problem(id=p.unique_id, question=p.question, solution=p.solution) for p in rows],
            skip_cache=skip_cache,
        )
        return bytes(msg.SerializeToString())

    out = []
    for k in range(clients):
        start = (k * 7 * per_call) % len(problems)
        rows = (problems * 2)[start : start + 8 * per_call]  # 8 requests a client, cycled
        out.append([req(rows[i : i + per_call]) for i in range(0, len(rows), per_call)])
    return out


# ---------------------------------------------------------------------------------------------- report
def ms(values: list[float], q: float) -> str:
    """The ``q`` quantile in milliseconds (nearest rank; 1.0 is the maximum)."""
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000:.1f}"


HEADER = (
    f"{'server':<6} {'procs':>5} {'clients':>7} {'load':<12} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'errors':>6} | {'health p50':>10} {'p99':>7} {'max':>7} {'>1s':>4} {'probes':>6} | server cpu s"
)


def row(
    label: str, procs: int, clients: int, what: str, res: LoadResult, health: dict[str, Any], cpu: list[float]
) -> str:
    lat = res.latencies
    hl = health["latencies"]
    over = sum(x > 1.0 for x in hl) + len(health["failures"])
    rate = len(lat) / res.elapsed if res.elapsed > 0 else 0.0
    return (
        f"{label:<6} {procs:>5} {clients:>7} {what:<12} {rate:>8.1f} {ms(lat, 0.5):>8} {ms(lat, 0.99):>8} "
        f"{len(res.errors):>6} | {ms(hl, 0.5):>10} {ms(hl, 0.99):>7} {ms(hl, 1.0):>7} {over:>4} "
        f"{len(hl) + len(health['failures']):>6} | {' / '.join(f'{c:.1f}' for c in cpu)}"
        f" ({sum(cpu) * 1000 / max(1, len(lat)):.2f} ms/call)"
    )


async def measure(
    group: ServerProcs, procs: int, clients: int, what: str, requests: list[list[bytes]], seconds: float
) -> str:
    cpu0 = group.cpu_s()
    prober = start_probe(group.port, max(1.0, seconds - 1.0))
    result = await run_load(group.port, clients, seconds, requests)
    out, _ = prober.communicate(timeout=120)
    health = json.loads(out.strip().splitlines()[-1])
    cpu = [b - a for a, b in zip(cpu0, group.cpu_s(), strict=True)]
    if result.errors:
        log(f"{group.label} {what}: {len(result.errors)} errors, first: {result.errors[0]}")
    if health["failures"]:
        log(f"{group.label} {what}: health probe failures: {health['failures'][:3]}")
    line = row(group.label, procs, clients, what, result, health, cpu)
    print(line, flush=True)
    return line


async def drain(group: ServerProcs, clients: int, requests: list[list[bytes]]) -> str:
    """SIGTERM while ``clients`` uncached calls are in flight: seconds to exit, calls answered."""
    proc = group.procs[0]
    task = asyncio.create_task(run_load(group.port, clients, 0.0, requests, calls_each=1))
    await asyncio.sleep(2.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while proc.poll() is None:
        await asyncio.sleep(0.02)
    exited = time.monotonic() - t0
    result = await task
    line = (
        f"{group.label:<6} SIGTERM with {clients} uncached calls in flight: exit after {exited:.1f} s, "
        f"{len(result.latencies)}/{clients} answered, {len(result.errors)} failed"
        + (f" ({result.errors[0]})" if result.errors else "")
    )
    print(line, flush=True)
    return line


def conditions() -> str:
    spec = importlib.util.spec_from_file_location("bench_conftest", REPO / "benchmarks" / "conftest.py")
    assert spec is not None and spec.loader is not None
    bench_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_conftest)  # its sample_conditions: cores other processes use
    state = bench_conftest.sample_conditions(1.0)
    return (
        f"{state['cores']} cores, other processes using {state['others_cores']} cores, "
        f"load average {state['load_1m']}, CPU {state['cpu']} [{state['cpu_flags']}]"
    )


async def main(args: argparse.Namespace) -> None:
    from skilltag.testing import free_port
    from skilltagger.client import TaggerClient
    from skillworld import generate_pool

    with tempfile.TemporaryDirectory(prefix="load-tagger-") as folder:
        tmp = Path(folder)
        exemplars = generate_pool(1000, seed=1)
        (tmp / "exemplars.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in exemplars))
        cached_pool = generate_pool(256, seed=4)
        uncached_pool = generate_pool(1024, seed=3)
        modules = {"head": str(head_server(tmp)), "new": "", "floor": "floor"}
        configs = [(impl, n) for impl in args.impls for n in args.procs if impl != "floor" or n == 1]
        lines = [f"conditions at start: {conditions()}", HEADER]
        print(lines[0], flush=True)
        print(HEADER, flush=True)
        warmed = False
        for impl, n in configs:
            port = free_port()
            log(f"starting {n} {impl} server process(es) on 127.0.0.1:{port}")
            group = start_servers(impl, n, port, modules[impl], args, tmp)
            try:
                if not warmed and impl != "floor":
                    log("tagging the 256 problems of the cached phase (shared SQLite cache)")
                    with TaggerClient.from_address(f"grpc://127.0.0.1:{port}", batch_size=64) as c:
                        c.tag(cached_pool)
                    warmed = True
                for clients in args.clients:
                    cached = build_requests(cached_pool, clients, 1, skip_cache=False)
                    lines.append(await measure(group, n, clients, "cached x1", cached, args.seconds))
                    if impl == "floor" or "uncached" not in args.phases:
                        continue  # the floor has no tagging behind it
                    uncached = build_requests(uncached_pool, clients, args.uncached_batch, skip_cache=True)
                    what = f"uncached x{args.uncached_batch}"
                    lines.append(await measure(group, n, clients, what, uncached, args.uncached_seconds))
                if n == 1 and impl != "floor" and "drain" in args.phases:
                    drain_requests = build_requests(uncached_pool, 32, args.uncached_batch, skip_cache=True)
                    lines.append(await drain(group, 32, drain_requests))
            finally:
                stop_servers(group)
        lines.append(f"conditions at end: {conditions()}")
        print(lines[-1], flush=True)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--impls",
        nargs="+",
        default=["floor", "head", "new"],
        choices=["floor", "head", "new"],
        help="floor: a no-op gRPC server (cached phase only); head: server.py at HEAD; new: the working tree's",
    )
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 2], help="server processes (same port)")
    ap.add_argument("--clients", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of a cached phase")
    ap.add_argument("--uncached-seconds", type=float, default=12.0, help="length of an uncached phase")
    ap.add_argument("--uncached-batch", type=int, default=8, help="problems in one uncached call")
    ap.add_argument("--workers", type=int, default=8, help="tagging threads of a server (the CLI default)")
    ap.add_argument("--grace", type=float, default=10.0, help="SIGTERM grace (the CLI default)")
    ap.add_argument(
        "--phases",
        nargs="+",
        default=["cached", "uncached", "drain"],
        choices=["cached", "uncached", "drain"],
        help="what to measure (cached calls always run; drain: SIGTERM under load, one process)",
    )
    ap.add_argument("--quick", action="store_true", help="32 clients, one process, shorter phases")
    ap.add_argument("--out", help="also write the table to this file")
    # internal: the server and probe processes
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--server-module", default="", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--exemplars", help=argparse.SUPPRESS)
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.clients, args.procs, args.seconds, args.uncached_seconds = [32], [1], 5.0, 8.0
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        serve(arguments)
    elif arguments.probe:
        probe(arguments)
    else:
        asyncio.run(main(arguments))
