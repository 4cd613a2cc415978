"""Build the profiler's bento (and, with --containerize, its image) from this checkout.

The project's own distributions (skilldistill-*) are not published, so the bento carries them as wheels:

1. ``pip wheel --no-deps`` of every skilldistill distribution the profiler needs (found from the installed
   metadata, starting at ``skilldistill-profiler``), each built from a temporary copy of its folder so the
   checkout gets no ``build/`` folder, into ``<ctx>/wheels/`` (a folder git ignores: it holds its own
   ``.gitignore``);
2. ``<ctx>/wheels/requirements.txt``: the third-party packages those distributions need, pinned to the
   versions installed here (the tested CPU stack; ``torch==...+cpu`` comes from the PyTorch CPU index named
   in the bentofile), so the image installs what the tests ran; and ``infra/docker/profiler-setup.sh``
   copied beside them (the bentofile's ``docker.setup_script``: BentoML reads no file outside the context);
3. ``bentoml build`` with ``services/profiler/bentofile.yaml``, whose ``python.wheels`` lists the wheels
   and whose ``python.requirements_txt`` is that file (``lock_packages: false``: nothing is resolved
   against a package index at build time, so the build works offline).

    python infra/build_bento.py                 # -> the bento tag, e.g. skilldistill-profiler:abc123
    python infra/build_bento.py --containerize  # then `bentoml containerize` -> skilldistill-profiler:0.1.0
    BENTOML_HOME=/tmp/bentoml python infra/build_bento.py   # keep the bento store out of ~/bentoml

``tests/test_infra.py`` runs the same functions in a temporary copy of the build context.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROFILER = ROOT / "services" / "profiler"
SETUP_SCRIPT = ROOT / "infra" / "docker" / "profiler-setup.sh"
ENTRY_DIST = "skilldistill-profiler"
PROJECT_PREFIX = "skilldistill-"
IMAGE = "skilldistill-profiler"


def project_dirs(root: Path = ROOT) -> dict[str, Path]:
    """Canonical distribution name -> folder, for every packages/* and services/* pyproject."""
    found: dict[str, Path] = {}
    for pyproject in sorted(
        [*root.glob("packages/*/pyproject.toml"), *root.glob("services/*/pyproject.toml")]
    ):
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        found[canonicalize_name(name)] = pyproject.parent
    return found


def _requires(dist: str) -> list[Requirement]:
    """The unconditional requirements of an installed distribution (extras and non-matching markers off)."""
    out = []
    for raw in metadata.requires(dist) or []:
        req = Requirement(raw)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def closure(entry: str = ENTRY_DIST) -> tuple[list[str], dict[str, str]]:
    """(project distributions, {third-party distribution: installed version}) that ``entry`` needs."""
    ours: set[str] = set()
    pins: dict[str, str] = {}
    todo = [canonicalize_name(entry)]
    while todo:
        name = todo.pop()
        if name in ours or name in pins:
            continue
        if name.startswith(PROJECT_PREFIX):
            ours.add(name)
        else:
            pins[name] = metadata.version(name)
        todo.extend(canonicalize_name(r.name) for r in _requires(name))
    return sorted(ours), dict(sorted(pins.items()))


def wheel_name(dist_dir: Path) -> str:
    """The file name ``pip wheel`` gives a pure-Python distribution folder (PEP 427 / PEP 491 escaping)."""
    project = tomllib.loads((dist_dir / "pyproject.toml").read_text())["project"]
    name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    return f"{name}-{project['version']}-py3-none-any.whl"


def build_wheels(dists: Iterable[str], out: Path, root: Path = ROOT) -> list[Path]:
    """``pip wheel --no-deps --no-build-isolation`` of each project distribution into ``out``."""
    dirs = project_dirs(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("*\n")
    built = []
    ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests", ".mypy_cache")
    with tempfile.TemporaryDirectory(prefix="skilldistill-wheels-") as tmp:
        for dist in dists:
            src = dirs[canonicalize_name(dist)]
            copy = Path(tmp) / src.name
            shutil.copytree(src, copy, ignore=ignore)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                 "--no-index", "-w", str(out), str(copy)],
                check=True,
            )  # fmt: skip
            wheel = out / wheel_name(src)
            if not wheel.is_file():
                raise RuntimeError(f"pip wheel did not write {wheel.name} for {src}")
            built.append(wheel)
    return built


def write_requirements(pins: dict[str, str], path: Path) -> Path:
    lines = [
        f"# Pinned by infra/build_bento.py from the environment that built the bento ({sys.version.split()[0]})."
    ]
    lines += [f"{name}=={version}" for name, version in pins.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare(ctx: Path = PROFILER, root: Path = ROOT) -> list[Path]:
    """Wheels, pinned requirements and the image's setup script under ``ctx/wheels`` (BentoML reads files
    only inside the build context); returns the wheels."""
    ours, pins = closure()
    wheels = build_wheels(ours, ctx / "wheels", root)
    write_requirements(pins, ctx / "wheels" / "requirements.txt")
    shutil.copy(SETUP_SCRIPT, ctx / "wheels" / SETUP_SCRIPT.name)
    return wheels


def bentoml_build(ctx: Path = PROFILER, env: dict[str, str] | None = None) -> str:
    """``bentoml build`` in ``ctx``; returns the bento tag (name:version)."""
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", str(ctx), "--output", "tag"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ctx,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    tags = re.findall(r"__tag__:(\S+)", result.stdout)
    if not tags:
        raise RuntimeError(f"bentoml build printed no tag:\n{result.stdout}\n{result.stderr}")
    return tags[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ctx", type=Path, default=PROFILER, help="build context (default services/profiler)"
    )
    parser.add_argument("--containerize", action="store_true", help="then `bentoml containerize` (Docker)")
    parser.add_argument("--image-tag", default=None, help=f"image tag (default {IMAGE}:<profiler version>)")
    args = parser.parse_args(argv)
    wheels = prepare(args.ctx)
    print("wheels:", ", ".join(w.name for w in wheels), file=sys.stderr)
    tag = bentoml_build(args.ctx)
    print(tag)
    if args.containerize:
        version = tomllib.loads((PROFILER / "pyproject.toml").read_text())["project"]["version"]
        image = args.image_tag or f"{IMAGE}:{version}"
        subprocess.run([sys.executable, "-m", "bentoml", "containerize", tag, "-t", image], check=True)
        print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
