"""The committed stubs must be exactly what `python -m skilltagger.protos_gen` produces now."""

from __future__ import annotations

from pathlib import Path

from skilltagger import protos_gen


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    written = protos_gen.generate(tmp_path)
    assert {p.name for p in written} == {
        "tagging_pb2.py",
        "tagging_pb2.pyi",
        "tagging_pb2_grpc.py",
        "__init__.py",
    }
    stale = [
        p.name
        for p in written
        if p.name != "__init__.py" and p.read_bytes() != (protos_gen.DEFAULT_OUT / p.name).read_bytes()
    ]
    assert not stale, f"stubs out of date with protos/: {stale}; run `python -m skilltagger.protos_gen`"


def test_generated_module_imports_and_names_service() -> None:
    from skilltagger._generated import tagging_pb2, tagging_pb2_grpc

    service = tagging_pb2.DESCRIPTOR.services_by_name["SkillTagger"]
    assert service.full_name == "skilldistill.tagging.v1.SkillTagger"
    assert {m.name for m in service.methods} == {"TagProblems", "TagStream", "GetSkillTree"}
    assert hasattr(tagging_pb2_grpc, "SkillTaggerStub")
    assert tagging_pb2.DESCRIPTOR.name == "skilldistill/tagging/v1/tagging.proto"


def test_generator_finds_repo_protos() -> None:
    root = protos_gen.find_proto_root()
    assert (root / "skilldistill/tagging/v1/tagging.proto").is_file()
    assert isinstance(root, Path)
