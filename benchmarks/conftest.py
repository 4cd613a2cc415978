"""Shared pieces of the pytest-benchmark suite: run conditions, README figures, the figures summary.

Every benchmark asks for the ``bench`` fixture and calls ``bench.conditions(...)`` first: it samples how
many cores other processes are using (from /proc/stat, over a short window, minus this process), reads the
load average, the torch thread count, the CPU model and the instruction-set flags that decide encoder speed
(``cpu_info``: avx2, avx512f, avx512_vnni, amx_*, from /proc/cpuinfo), stores all of it in the benchmark's
``extra_info`` and warns when the machine is busy. ``bench.figure(...)`` stores the benchmark's headline figure (what the README table
shows); ``bench.baseline(...)`` times a baseline in the same process, interleaved with the measured rounds,
for figures that are a ratio against it.

The suite is not collected by ``make test`` (its files are ``bench_*.py``, outside ``testpaths``); run it
with ``make bench`` / ``make bench-quick`` (see the Makefile) or, for one file,
``.venv/bin/pytest benchmarks/bench_select.py --benchmark-enable``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere in the session
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import functools
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

BUSY_CORES = 0.5  # other processes using at least this much CPU make the figures lower bounds
SAMPLE_S = 0.3


class BusyMachineWarning(UserWarning):
    """The benchmark ran while other processes were using the cores it needs."""


def _cpu_jiffies() -> int | None:
    """Busy jiffies of the whole machine since boot (all CPUs), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return sum(fields[:8]) - fields[3] - fields[4]


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# instruction sets that decide how fast the encoders run: int8 ONNX is fast only with VNNI (or AMX), fp32
# and torch with AVX-512 over AVX2
SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The CPU model and which of ``SPEED_FLAGS`` it has (in that order), from /proc/cpuinfo ("?" off Linux)."""
    model, flags = "?", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "?":
                    model = " ".join(value.split())
                elif key == "flags" and not flags:
                    have = set(value.split())
                    flags = " ".join(f for f in SPEED_FLAGS if f in have) or "none"
                if model != "?" and flags:
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags or "?"}


def sample_conditions(window_s: float = SAMPLE_S) -> dict[str, Any]:
    """Cores used by other processes over ``window_s`` (this process excluded), load average, cores, and the
    CPU model with its speed-deciding instruction-set flags (``cpu_info``)."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    j0, own0, t0 = _cpu_jiffies(), _own_cpu_s(), time.perf_counter()
    time.sleep(window_s)
    j1, own1, t1 = _cpu_jiffies(), _own_cpu_s(), time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    others = None
    if j0 is not None and j1 is not None:
        others = max(0.0, ((j1 - j0) / hz - (own1 - own0)) / (t1 - t0))
    return {
        "cores": cores,
        "others_cores": None if others is None else round(others, 2),
        "load_1m": round(load[0], 2),
        "load_5m": round(load[1], 2),
        **cpu_info(),
    }


class Bench:
    """What a benchmark records besides its timings (all of it lands in ``extra_info``)."""

    def __init__(self, benchmark: Any, request: pytest.FixtureRequest) -> None:
        self.benchmark = benchmark
        self.request = request
        self.info: dict[str, Any] = benchmark.extra_info
        self._baseline: list[float] = []

    # ------------------------------------------------------------------ conditions
    def conditions(self, *, threads: int | None = 1, cores: int = 1, note: str = "") -> dict[str, Any]:
        """Check and record the run conditions at the start of a benchmark.

        ``threads``: the torch threads the benchmark runs with (set here when given; None: no torch);
        ``cores``: how many cores it needs to itself (worker processes, threads).
        """
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        state = sample_conditions()
        state["threads"] = threads
        state["needs_cores"] = cores
        if "torch" in sys.modules:
            state["torch_threads"] = sys.modules["torch"].get_num_threads()
        others = state["others_cores"]
        state["busy"] = bool(
            (others is not None and others >= BUSY_CORES) or (others is None and state["load_1m"] > 1.0)
        )
        state["contended"] = bool(others is not None and state["cores"] - others < cores)
        if note:
            state["note"] = note
        self.info["conditions"] = state
        if state["busy"]:
            warnings.warn(
                f"{self.request.node.name}: other processes use {others} of {state['cores']} cores "
                f"(load average {state['load_1m']}); this benchmark needs {cores} core(s) to itself, "
                "so its figures are lower bounds",
                BusyMachineWarning,
                stacklevel=2,
            )
        return state

    def end_conditions(self) -> None:
        """Record the load average at the end (it shows load that arrived during the benchmark)."""
        if hasattr(os, "getloadavg") and "conditions" in self.info:
            self.info["conditions"]["load_1m_end"] = round(os.getloadavg()[0], 2)

    # ------------------------------------------------------------------ baseline and figures
    def baseline(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """A pedantic ``setup`` that times ``fn`` once before each round (so the baseline and the measured
        code alternate and machine load hits both alike); the times go to ``baseline_s()``."""

        def setup() -> None:
            start = time.perf_counter()
            fn()
            self._baseline.append(time.perf_counter() - start)

        return setup

    def baseline_s(self, warmup_rounds: int = 0) -> list[float]:
        return self._baseline[warmup_rounds:]

    def measured_s(self) -> list[float]:
        stats = self.benchmark.stats
        return list(stats.stats.data) if stats is not None else []

    def record_ratio(self, name: str, baseline_name: str, *, warmup_rounds: int = 0) -> dict[str, float]:
        """Store both sides' best and median seconds and the speed ratio (baseline time / measured time,
        > 1 means the measured code is faster), computed on the best rounds."""
        base, meas = self.baseline_s(warmup_rounds), self.measured_s()
        out = {
            f"{baseline_name}_min_s": min(base),
            f"{baseline_name}_median_s": statistics.median(base),
            f"{name}_min_s": min(meas),
            f"{name}_median_s": statistics.median(meas),
            "speed_ratio": min(base) / min(meas),
            "speed_ratio_median": statistics.median(base) / statistics.median(meas),
        }
        self.info.update({k: round(v, 6) for k, v in out.items()})
        return out

    def figure(self, what: str, figure: str, *, order: int) -> None:
        """The README row of this benchmark: what is measured and the figure as it should read."""
        self.end_conditions()
        self.info["readme"] = {"what": what, "figure": figure, "order": order}

    def best(self) -> float:
        return min(self.measured_s())


@pytest.fixture
def bench(benchmark: Any, request: pytest.FixtureRequest) -> Bench:
    return Bench(benchmark, request)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: part of `make bench-quick` (a minute or two)")
    config.addinivalue_line("markers", "large: the large variant of a benchmark (not in `make bench-quick`)")
    config.addinivalue_line("markers", "quick_only: a small variant that `make bench` covers at full size")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine_info["usable_cores"] = cores
    # pytest-benchmark's own "cpu" entry (brand, every flag) stays; these are the flags that decide speed
    machine_info["cpu_speed_flags"] = cpu_info()["cpu_flags"]
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        machine_info["memory_gib"] = round(pages * page / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------- summary
def _fmt_conditions(c: dict[str, Any] | None) -> str:
    if not c:
        return "?"
    others = c.get("others_cores")
    state = "BUSY" if c.get("busy") else "quiet"
    end = f"->{c['load_1m_end']}" if "load_1m_end" in c else ""
    threads = c.get("threads")
    cpu = f", {c['cpu']} [{c.get('cpu_flags', '?')}]" if "cpu" in c else ""
    return (
        f"{state} (others {others} cores, load {c.get('load_1m')}{end}, torch threads {threads or '-'}{cpu})"
    )


def _figures_lines(config: pytest.Config) -> list[str]:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return []
    compared: dict[str, dict[str, Any]] = {}
    for mapping in (session.compared_mapping or {}).values():
        compared.update(mapping)
    lines = []
    for b in sorted(session.benchmarks, key=lambda b: b.extra_info.get("readme", {}).get("order", 1e9)):
        row = b.extra_info.get("readme")
        if not row:
            continue
        lines.append(f"{b.name}: {row['what']}")
        lines.append(f"    now : {row['figure']}  [{_fmt_conditions(b.extra_info.get('conditions'))}]")
        before = compared.get(b.fullname)
        if before is not None and before.get("extra_info", {}).get("readme"):
            old = before["extra_info"]
            lines.append(f"    then: {old['readme']['figure']}  [{_fmt_conditions(old.get('conditions'))}]")
            if "speed_ratio" in b.extra_info and "speed_ratio" in old:
                lines.append(
                    f"    speed ratio vs its in-process baseline: {b.extra_info['speed_ratio']:.2f} now, "
                    f"{old['speed_ratio']:.2f} then"
                )
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter: Any) -> Any:
    # the figures are printed after pytest-benchmark's tables, and even when a regression check fails
    try:
        return (yield)
    finally:
        lines = _figures_lines(terminalreporter.config)
        if lines:
            terminalreporter.write_sep(
                "-", "figures (README rows), with run conditions; 'then' = compared run"
            )
            for line in lines:
                terminalreporter.write_line(line)
