"""The static encoder (a token table distilled from the packaged model with model2vec) and the embedding
backend's static pass with its transformer refiner: deterministic vectors, no network, the cache rule (built
once, reused, rebuilt when corrupt or missing), and the cascade's per-problem choice of vector space."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skilltag.encoders as encoders
from skillcore import SkillTree
from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, packaged_model_path
from skilltag.encoders import StaticEncoder, ensure_static, model_digest, static_path
from skilltag.engine import ProblemInput, TaggingEngine, problem_text
from skilltag.testing import small_problems

TEXTS = [
    "Compute gcd(12, 18).",
    "",
    "x",
    "Let $f(x) = x^2 - 3x + 2$. Find all real roots of $f$ and the sum $\\sum_{k=1}^{10} f(k)$.",
    "A triangle has sides 3, 4 and 5.\nWhat is its area?\n\nSolution: right triangle, area = 6.",
    "Ünïcödé naïve café — 東京 の 問題: 2 + 2 = ?",
    "How many ways can 5 people sit around a round table? " * 80,  # longer than 512 tokens: truncated
    "   leading and trailing spaces   ",
    "Compute gcd(12, 18).",  # a duplicate
]


def _fifty() -> list[str]:
    words = [
        "prime",
        "divisor",
        "triangle",
        "circle",
        "probability",
        "sequence",
        "sum",
        "integer",
        "fraction",
        "angle",
    ]
    return [
        f"Problem {i}: find the {words[i % 10]} of {i * 7 + 3} and the {words[(i * 3) % 10]} next to it."
        for i in range(48)
    ] + TEXTS[:2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static table built once for this module in an empty cache folder, with the network cut off."""
    cache = tmp_path_factory.mktemp("static-cache")
    mp = pytest.MonkeyPatch()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.setenv("SKILLTAG_CACHE_DIR", str(cache))
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket.socket, "connect_ex", no_network)
    mp.setattr(socket, "create_connection", no_network)
    mp.setattr(socket, "getaddrinfo", no_network)
    try:
        assert not any(cache.iterdir())
        encoder = StaticEncoder(threads=1)  # cache_dir None: $SKILLTAG_CACHE_DIR
        assert encoder.path == static_path(cache_dir=cache) and encoder.path.is_relative_to(cache)
        assert encoder.encode(["a first text"]).shape == (1, 256)
    finally:
        mp.undo()
    return encoder.path


@pytest.fixture(scope="module")
def static(built: Path) -> StaticEncoder:
    return StaticEncoder(cache_dir=built.parents[2])


def test_built_offline_into_an_empty_cache(built: Path) -> None:
    manifest = json.loads(built.with_suffix(".json").read_text())
    assert manifest["model_digest"] == model_digest(packaged_model_path())
    assert manifest["recipe"] == encoders.STATIC_RECIPE and manifest["pca_dims"] == 256
    assert manifest["size"] == built.stat().st_size and encoders._is_valid(built)
    assert manifest["shape"][1] == 256 and "model2vec" in manifest["versions"]
    assert not list(built.parent.glob(".build-*"))


def test_vectors_are_deterministic_across_batch_sizes_and_calls(static: StaticEncoder) -> None:
    texts = _fifty()
    first = static.encode(texts, batch_size=1)
    assert first.shape == (50, 256) and first.dtype == np.float32
    for batch_size in (7, 64):
        np.testing.assert_array_equal(static.encode(texts, batch_size=batch_size), first)
    np.testing.assert_array_equal(static.encode(texts, batch_size=7), first)  # and again
    alone = np.stack([static.encode(t) for t in texts])
    np.testing.assert_array_equal(alone, first)
    reloaded = StaticEncoder(cache_dir=static.path.parents[2])
    np.testing.assert_array_equal(reloaded.encode(texts, batch_size=64), first)


def test_vectors_are_model2vecs_own(static: StaticEncoder) -> None:
    """The lookup is model2vec's: the same rows as its StaticModel over the same table and tokenizer."""
    from model2vec import StaticModel

    model = StaticModel(vectors=static.vectors, tokenizer=static.tokenizer, normalize=True)
    theirs = model.encode(TEXTS, show_progress_bar=False)
    ours = static.encode(TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    norms = np.linalg.norm(ours, axis=1)
    np.testing.assert_allclose(norms[[0, 2, 3, 4, 5, 6, 7, 8]], 1.0, atol=1e-5)
    assert norms[1] == 0.0  # no tokens: the zero vector
    np.testing.assert_array_equal(ours[0], ours[8])
    assert static.encode("Compute gcd(12, 18).").shape == (256,)
    assert static.encode([]).shape == (0, 256)
    with pytest.raises(ValueError):
        static.encode(["a"], batch_size=0)


def _good_copy(built: Path) -> Any:
    """A stand-in for the distillation that writes the module's good table (fast), counting its calls."""
    calls: list[Path] = []

    def distill(folder: Path, pca_dims: int, out: Path) -> tuple[int, int]:
        calls.append(out)
        shutil.copyfile(built, out)
        with np.load(out) as data:
            rows, dims = data["vectors"].shape
        return int(rows), int(dims)

    distill.calls = calls  # type: ignore[attr-defined]
    return distill


def test_cached_table_is_reused(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt although the cache holds a valid table")

    monkeypatch.setattr(encoders, "_distill_static", no_build)
    assert ensure_static(cache_dir=built.parents[2]) == built
    assert StaticEncoder(cache_dir=built.parents[2]).path == built


def test_corrupt_or_missing_table_is_rebuilt(
    built: Path, static: StaticEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distill = _good_copy(built)
    monkeypatch.setattr(encoders, "_distill_static", distill)
    cache = tmp_path / "cache"
    shutil.copytree(built.parents[2], cache)
    target = static_path(cache_dir=cache)
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2] + b"garbage")  # corrupt: size and digest differ
    rebuilt = StaticEncoder(cache_dir=cache)
    assert len(distill.calls) == 1 and rebuilt.path == target and encoders._is_valid(target)
    np.testing.assert_array_equal(rebuilt.encode(TEXTS), static.encode(TEXTS))
    target.with_suffix(".json").unlink()  # a build that crashed before its manifest was written
    assert ensure_static(cache_dir=cache) == target and len(distill.calls) == 2
    target.unlink()  # missing
    assert ensure_static(cache_dir=cache) == target and len(distill.calls) == 3 and encoders._is_valid(target)
    # a file that matches its manifest but does not load: rebuilt once when the encoder opens it
    target.write_bytes(b"not an npz file")
    meta = json.loads(target.with_suffix(".json").read_text())
    meta.update(size=target.stat().st_size, sha256=encoders._file_sha256(target))
    target.with_suffix(".json").write_text(json.dumps(meta))
    assert encoders._is_valid(target)
    again = StaticEncoder(cache_dir=cache)
    assert len(distill.calls) == 4
    np.testing.assert_array_equal(again.encode(TEXTS), static.encode(TEXTS))
    assert not list(target.parent.glob(".build-*"))


def test_cache_key_follows_the_model_and_the_recipe(tmp_path: Path) -> None:
    assert static_path(cache_dir=tmp_path) != static_path(pca_dims=128, cache_dir=tmp_path)
    assert static_path(cache_dir=tmp_path).parts[-3] == "static"
    with pytest.raises(ValueError):
        static_path(pca_dims=0, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- backend
def _rows() -> list[ProblemInput]:
    return [ProblemInput.from_record(r) for r in small_problems()]


def _backend(**kw: Any) -> EmbeddingBackend:
    return EmbeddingBackend(EmbeddingConfig(encoder="static", threads=1, **kw))


def test_static_pass_and_refiner_choose_per_problem(tree: SkillTree) -> None:
    """margin 0: nothing refined (static tags); a margin no pair of leaves can reach: everything refined (the
    refiner's own tags and scores); between: each problem gets the tags of the space it was walked in."""
    rows = _rows()
    static_only = _backend(refine=None)
    static_tags = TaggingEngine(tree, static_only).tag(rows)
    assert static_only.refiner is None and static_only.problems_refined == 0

    none = _backend(refine="onnx", refine_margin=0.0)
    assert [r.chains for r in TaggingEngine(tree, none).tag(rows)] == [r.chains for r in static_tags]
    assert none.problems_refined == 0 and none.problems_started == len(rows)

    onnx_tags = TaggingEngine(tree, EmbeddingBackend(EmbeddingConfig(encoder="onnx", threads=1))).tag(rows)
    every = _backend(refine="onnx", refine_margin=10.0)
    every_tags = TaggingEngine(tree, every).tag(rows)
    assert every.problems_refined == every.problems_started == len(rows)
    assert [r.chains for r in every_tags] == [r.chains for r in onnx_tags]
    for a, b in zip(every_tags, onnx_tags, strict=True):
        assert a.scores is not None and b.scores is not None
        np.testing.assert_allclose(np.concatenate(a.scores), np.concatenate(b.scores), atol=1e-6)

    some = _backend(refine="onnx", refine_margin=0.0)
    engine = TaggingEngine(tree, some)
    engine.tag(rows[:1])  # bind
    state = some._start([problem_text(r, engine.summary_chars) for r in rows], some._primary)
    margins = some.leaf_margins(state)
    assert margins.shape == (len(rows),) and (margins >= 0).all()
    cut = float(np.median(margins))
    mixed = _backend(refine="onnx", refine_margin=cut)
    mixed_tags = TaggingEngine(tree, mixed).tag(rows)
    refined = margins < cut
    assert mixed.problems_refined == int(refined.sum()) and 0 < refined.sum() < len(rows)
    for i, r in enumerate(mixed_tags):
        assert r.chains == (onnx_tags[i].chains if refined[i] else static_tags[i].chains)


def test_static_tags_are_deterministic_across_batches(tree: SkillTree) -> None:
    rows = _rows()
    backend = _backend(refine="onnx-int8", refine_margin=0.05)
    engine = TaggingEngine(tree, backend)
    whole = [r.chains for r in engine.tag(rows, skip_cache=True)]
    for size in (1, 3):
        got = [r.chains for r in engine.tag_iter(rows, batch_size=size, skip_cache=True)]
        assert got == whole


def test_encoder_and_refiner_are_part_of_the_tag_cache_key() -> None:
    default = EmbeddingBackend(EmbeddingConfig()).config()
    assert "refine" not in default and "refine_margin" not in default  # existing caches keep their key
    assert default["encoder"] == "onnx-int8"
    keys = {
        "static": _backend(refine=None).config(),
        "static+int8": _backend().config(),
        "static+onnx": _backend(refine="onnx").config(),
        "static+int8@0.1": _backend(refine_margin=0.1).config(),
    }
    assert keys["static"]["encoder"] == "static" and "refine_margin" not in keys["static"]
    assert keys["static+int8"]["refine"] == "onnx-int8" and keys["static+int8"]["refine_margin"] == 0.05
    blobs = {json.dumps(v, sort_keys=True) for v in [default, *keys.values()]}
    assert len(blobs) == 5
    with pytest.raises(ValueError):
        _backend(refine_margin=-1.0)
    with pytest.raises(ValueError):
        _backend(refine="static")
