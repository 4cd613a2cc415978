"""Test and recipe helpers: a private PostgreSQL cluster and an MLflow tracking server on top of it.

``postgres_cluster()`` runs ``initdb``/``pg_ctl`` on a private port and socket folder (trust
authentication, loopback only). PostgreSQL refuses to run as root, so as root the data folder is owned by
the ``postgres`` user and the commands run through ``su postgres``. ``mlflow_server(backend_uri)`` starts
``mlflow server --serve-artifacts`` on a free loopback port: runs, datasets, artifacts and the model
registry go over HTTP, as with a team's shared server. The shared-server recipe in ``infra/README.md``
is the same commands.

Hostile inputs (#25): ``hostile_trees`` writes a tree that contains itself (a YAML anchor) and a tree 1,000
levels deep; ``deep_pool_row`` is a pool row nested 3,000 deep. No loader may crash or hang on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL command (as the ``postgres`` user when this process is root)."""
    if os.geteuid() == 0:
        command = ["su", "postgres", "-c", shlex.join(command)]
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@contextlib.contextmanager
def postgres_cluster(database: str = "mlflow") -> Iterator[str]:
    """A throw-away PostgreSQL cluster with ``database`` created; yields its SQLAlchemy URI
    (``postgresql+psycopg2://postgres@127.0.0.1:PORT/DB``: a plain ``postgresql://`` makes the pinned
    SQLAlchemy look for psycopg 3)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH (PostgreSQL server binaries are needed)")
    root = Path(tempfile.mkdtemp(prefix="skilldistill-pg-"))
    root.chmod(0o755)  # the postgres user must reach its folders
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    for folder in (data, sockets):
        folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
        for path in (data, sockets):
            shutil.chown(path, user="postgres")
    port = free_port()
    try:
        _as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(["pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"])
        try:
            subprocess.run(
                [
                    "psql",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "-c",
                    f"CREATE DATABASE {database}",
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
        finally:
            _as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, artifacts: str | Path, *, startup_timeout_s: float = 180.0
) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with ``--serve-artifacts``; yields ``http://127.0.0.1:PORT``."""
    import httpx

    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts",
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log_path = Path(tempfile.mkdtemp(prefix="skilldistill-mlflow-")) / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not answer within {startup_timeout_s:.0f}s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        shutil.rmtree(log_path.parent, ignore_errors=True)


# ---------------------------------------------------------------------------- hostile inputs
SELF_REFERENCING_YAML = """\
# the root lists itself among its children, through a YAML anchor
--- &node
name: Algebra
children:
  - *node
"""


def deep_tree(levels: int) -> str:
    """A nested-format tree ``levels`` skills deep, as JSON text (written without recursion)."""
    return '{"name": "root", "children": [' * levels + '{"name": "leaf"}' + "]}" * levels


def hostile_trees(folder: str | Path) -> dict[str, Path]:
    """Write the hostile trees into ``folder``: ``self_reference`` (YAML anchor, the node contains itself)
    and ``deep`` (a JSON tree 1,000 levels deep). Returns name -> path."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    cyclic = root / "self-reference.yaml"
    cyclic.write_text(SELF_REFERENCING_YAML, encoding="utf-8")
    deep = root / "deep.json"
    deep.write_text(deep_tree(1000), encoding="utf-8")
    return {"self_reference": cyclic, "deep": deep}


def deep_pool_row(levels: int = 3000) -> str:
    """A pool row (JSONL line) whose metadata nests ``levels`` deep."""
    head = json.dumps({"unique_id": "deep", "question": "1+1?", "expected_answer": "2"})[:-1]
    return head + ', "metadata": ' + '{"a": ' * levels + "1" + "}" * levels + "}"
