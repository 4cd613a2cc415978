"""Test helpers that start real servers: free loopback ports and a ``transformers serve`` process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
from skillcore.testing import free_port


def wait_http(
    url: str, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log tail) if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {process.returncode} before {url} came up{_tail(log)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s{_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n--- server log ---\n" + "\n".join(text)


def stop_process(process: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """SIGTERM the process group started for a server, then SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def server_process(
    argv: list[str],
    *,
    ready_url: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    startup_timeout_s: float = 120.0,
    log_file: str | Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group, wait for ``ready_url``, stop the whole group on exit.

    Its output goes to ``log_file`` when given (kept, for tests that read the server's log), else to a
    temporary file removed on exit."""
    log_dir = Path(tempfile.mkdtemp(prefix="skilldistill-server-"))
    log = Path(log_file) if log_file is not None else log_dir / "server.log"
    with open(log, "wb") as fh:
        process = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        try:
            wait_http(ready_url, timeout_s=startup_timeout_s, process=process, log=log)
            yield process
        finally:
            stop_process(process)
    shutil.rmtree(log_dir, ignore_errors=True)


def _transformers_cli() -> str:
    candidate = Path(sys.executable).with_name("transformers")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("transformers")
    if found is None:
        raise RuntimeError("the `transformers` CLI is missing; install transformers[serving]")
    return found


@contextlib.contextmanager
def openai_server(model_dir: str | Path, *, startup_timeout_s: float = 180.0) -> Iterator[str]:
    """Serve a local model directory with ``transformers serve`` on a free loopback port, on CPU, offline.

    Yields the OpenAI base URL (``http://127.0.0.1:<port>/v1``); the served model name is the
    directory path as given (``str(model_dir)``).
    """
    port = free_port()
    argv = [
        _transformers_cli(),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
    ]
    env = {
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with server_process(
        argv, ready_url=f"http://127.0.0.1:{port}/health", env=env, startup_timeout_s=startup_timeout_s
    ):
        yield f"http://127.0.0.1:{port}/v1"
