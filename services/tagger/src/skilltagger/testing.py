"""Helpers for the service's tests: a real server running in a background thread.
The small tree, its problems and ``free_port`` are in ``skilltag.testing``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from skilltag.testing import free_port


@contextmanager
def running_server(engine: Any, **options: Any) -> Iterator[str]:
    """Serve ``engine`` on a free loopback port; yields ``grpc://127.0.0.1:PORT``; stops on exit."""
    from skilltagger.server import TaggerServer

    server = TaggerServer(engine, host="127.0.0.1", port=free_port(), **options).start()
    try:
        yield server.address
    finally:
        server.stop(grace=1.0).wait()
