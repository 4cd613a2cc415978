"""Generate the Python gRPC stubs from ``protos/`` with grpcio-tools: ``python -m skilltagger.protos_gen``.

protoc writes ``skilldistill/tagging/v1/tagging_pb2*.py`` with an absolute import of the message module;
the stubs are flattened into ``skilltagger/_generated/`` and that import is rewritten to point there, so
the generated code imports without touching ``sys.path``. The descriptor keeps its canonical file name
(``skilldistill/tagging/v1/tagging.proto``), which is what server reflection reports.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_FILES = ("skilldistill/tagging/v1/tagging.proto",)
GENERATED_PACKAGE = "skilltagger._generated"
DEFAULT_OUT = Path(__file__).resolve().parent / "_generated"


def find_proto_root() -> Path:
    """The repository's ``protos/`` folder, searched upwards from this file."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "protos"
        if all((candidate / f).is_file() for f in PROTO_FILES):
            return candidate
    raise FileNotFoundError(
        f"no protos/ folder holding {PROTO_FILES[0]} above {Path(__file__).resolve()}; pass --proto-root"
    )


def generate(out_dir: Path = DEFAULT_OUT, proto_root: Path | None = None) -> list[Path]:
    """Run protoc for every proto file; write flattened stubs into ``out_dir``; return the written paths."""
    from grpc_tools import protoc

    proto_root = proto_root or find_proto_root()
    include = str(resources.files("grpc_tools") / "_proto")
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}: {' '.join(args)}")
        for proto in PROTO_FILES:
            stem = Path(proto).with_suffix("")
            module_path = ".".join(stem.parts)
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
                src = Path(tmp) / f"{stem}{suffix}"
                text = src.read_text(encoding="utf-8")
                # `from skilldistill.tagging.v1 import tagging_pb2 as ...` -> our flat package
                parent_module, _, name = module_path.rpartition(".")
                text = text.replace(f"from {parent_module} import {name}_pb2", f"from . import {name}_pb2")
                dst = out_dir / src.name
                dst.write_text(text, encoding="utf-8")
                written.append(dst)
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated gRPC stubs (python -m skilltagger.protos_gen); do not edit."""\n')
    written.append(init)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the package)")
    parser.add_argument("--proto-root", type=Path, default=None, help="folder holding skilldistill/...")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.proto_root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
