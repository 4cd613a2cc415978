"""Service settings (environment variables) and the checks on what a request may reference."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from distill.models import MLFLOW_URI
from skillcore.tree import check_duplicates_policy, check_raw_levels

HF_ID = re.compile(r"^[A-Za-z0-9][\w\-.]*/[\w\-.]+$")
HF_DATASET = re.compile(r"^hf://[A-Za-z0-9][\w\-.]*/[\w\-.]+(:[\w.\-\[\]:%]+)?$")
# Decimal, octal and hex parts, one to four of them: the forms inet_aton (and so getaddrinfo) accepts.
INET_ATON_FORM = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
PROFILE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class RefusedReference(ValueError):
    """A request referenced something the service may not use (a path outside the allowed roots...)."""


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(os.pathsep) if v.strip()]


N = TypeVar("N", int, float)


def _positive(env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N]) -> N:
    """A positive number from the environment (``default`` when unset); anything else stops the server."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class ServerURL:
    scheme: str
    host: str  # lower case; an IP literal in its canonical form
    port: int | None  # None: the scheme's default
    path: str


def parse_server_url(url: str) -> ServerURL:
    """Split an http(s) URL with the parser of httpx (the OpenAI client's transport), so the host checked
    is the host connected to. Refused: user info (``http://127.0.0.1:80@example.com`` goes to
    example.com), other schemes, and numeric hosts that are not a canonical IP address (``2130706433``,
    ``0x7f.1``: resolvers read them as addresses that a string comparison would not see)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise RefusedReference(f"base_url {url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise RefusedReference(f"base_url {url!r} must be an http:// or https:// URL with a host")
    if parsed.userinfo:
        raise RefusedReference(f"base_url {url!r} carries user info (name:password@), which is refused")
    host = parsed.host.lower()
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        if INET_ATON_FORM.match(host):  # what a resolver reads as an IPv4 address in another notation
            raise RefusedReference(f"base_url {url!r}: host {host!r} is not a canonical IP address") from None
    return ServerURL(parsed.scheme, host, parsed.port, parsed.path or "/")


@dataclass
class Settings:
    """``SKILLPROFILER_*`` environment variables.

    ALLOWED_ROOTS   folders (os.pathsep-separated) under which models, pools and trees may be read
                    (default: the working directory)
    WORK_DIR        where profiles are written (default: ./profiler-work); always readable
    ALLOWED_BASE_URLS  OpenAI-compatible servers the ``openai`` engine may call (default: loopback only)
    JUDGE_WORKERS   judge subprocesses (default 2), shared by all requests; MLFLOW=1 logs profiles to
                    MLflow (default 0)
    JUDGE_MAX_ITEMS items per /judge request (default 1000; more: 400)
    JUDGE_BUDGET_S  seconds one /judge request may judge (default 30); items left then are ``timeout``
    MAX_BODY_BYTES  request body size (default 16 MiB; more: 413)
    MAX_NEW_TOKENS  the largest ``sampling.max_new_tokens`` a profile may ask for (default 32768), lower
                    still where the model's config.json gives ``max_position_embeddings``
    TASK_TIMEOUT_S  seconds a profiling task may run (default 86400); then it stops like a cancelled one
                    (finished answers kept, resumable with its profile_id)
    TREE_DUPLICATES sibling skills with the same name in a request's tree: 'error' (default) refuses the
                    tree, 'merge' merges them
    TREE_RAW_LEVELS EvalTree raw trees: 'instances' (default) keeps instance-level nodes as leaves,
                    'groups' stops at groups of instances
    """

    allowed_roots: list[Path] = field(default_factory=list)
    work_dir: Path = Path("profiler-work")
    allowed_base_urls: list[str] = field(default_factory=list)
    judge_workers: int = 2
    log_to_mlflow: bool = False
    judge_max_items: int = 1000
    judge_budget_s: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_new_tokens: int = 32768
    task_timeout_s: float = 24 * 3600.0
    tree_duplicates: str = "error"
    tree_raw_levels: str = "instances"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        roots = [Path(r).expanduser().resolve() for r in _split(env.get("SKILLPROFILER_ALLOWED_ROOTS"))]
        work = Path(env.get("SKILLPROFILER_WORK_DIR", "profiler-work")).expanduser().resolve()
        urls = [
            u.strip().rstrip("/")
            for u in (env.get("SKILLPROFILER_ALLOWED_BASE_URLS") or "").split(",")
            if u.strip()
        ]
        return cls(
            allowed_roots=roots or [Path.cwd().resolve()],
            work_dir=work,
            allowed_base_urls=urls or ["http://127.0.0.1", "http://localhost"],
            judge_workers=int(env.get("SKILLPROFILER_JUDGE_WORKERS", "2")),
            log_to_mlflow=env.get("SKILLPROFILER_MLFLOW", "0").lower() in {"1", "true", "yes"},
            judge_max_items=_positive(env, "SKILLPROFILER_JUDGE_MAX_ITEMS", 1000, int),
            judge_budget_s=_positive(env, "SKILLPROFILER_JUDGE_BUDGET_S", 30.0, float),
            max_body_bytes=_positive(env, "SKILLPROFILER_MAX_BODY_BYTES", 16 * 1024 * 1024, int),
            max_new_tokens=_positive(env, "SKILLPROFILER_MAX_NEW_TOKENS", 32768, int),
            task_timeout_s=_positive(env, "SKILLPROFILER_TASK_TIMEOUT_S", 24 * 3600.0, float),
            tree_duplicates=check_duplicates_policy(env.get("SKILLPROFILER_TREE_DUPLICATES", "error")),
            tree_raw_levels=check_raw_levels(env.get("SKILLPROFILER_TREE_RAW_LEVELS", "instances")),
        )

    # ------------------------------------------------------------------ reference checks
    def _allowed_path(self, raw: str, what: str) -> Path:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            raise RefusedReference(f"{what} path {raw!r} must be absolute")
        resolved = path.resolve()  # symlinks and '..' resolved before the check
        roots = [*self.allowed_roots, self.work_dir]
        if not any(resolved.is_relative_to(root) for root in roots):
            raise RefusedReference(f"{what} path {raw!r} is outside the allowed roots")
        if not resolved.exists():
            raise FileNotFoundError(f"{what} path {raw!r} does not exist")
        return resolved

    def check_model(self, ref: str) -> str:
        """models:/ URIs and Hub ids pass; anything else must be a directory under an allowed root."""
        if ref.startswith("models:/"):
            if not MLFLOW_URI.match(ref):
                raise ValueError(f"model {ref!r}: expected models:/name/version or models:/name@alias")
            return ref
        if HF_ID.match(ref) and not Path(ref).exists():
            return ref
        return str(self._allowed_path(ref, "model"))

    def check_pool(self, ref: str) -> str:
        if ref.startswith("hf://"):
            if not HF_DATASET.match(ref):
                raise ValueError(f"pool {ref!r}: expected hf://owner/name[:split]")
            return ref
        path = self._allowed_path(ref, "pool")
        if not path.is_file():
            raise ValueError(f"pool {ref!r} is not a file (expected JSONL)")
        return str(path)

    def check_tree(self, ref: str) -> Path:
        path = self._allowed_path(ref, "tree")
        if not path.is_file():
            raise ValueError(f"tree {ref!r} is not a file (expected JSON or YAML)")
        return path

    def check_base_url(self, url: str) -> str:
        """``url`` if it names an allowed server as the HTTP client will read it: same scheme and host
        (and port, where the allowed entry gives one), its path under the entry's; credentials refused."""
        target = parse_server_url(url)
        for allowed in self.allowed_base_urls:
            entry = parse_server_url(allowed)
            if (
                target.scheme == entry.scheme
                and target.host == entry.host
                and (entry.port is None or target.port == entry.port)
                and (target.path + "/").startswith(entry.path.rstrip("/") + "/")
            ):
                return url.rstrip("/")
        raise RefusedReference(
            f"base_url {url!r} is not an allowed server ({', '.join(self.allowed_base_urls)})"
        )

    def profile_dir(self, profile_id: str) -> Path:
        if not PROFILE_ID.match(profile_id):
            raise ValueError(f"profile_id {profile_id!r} must match {PROFILE_ID.pattern}")
        return self.work_dir / "profiles" / profile_id
