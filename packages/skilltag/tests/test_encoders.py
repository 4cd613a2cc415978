"""The ONNX Runtime encoder: same vectors as the torch SentenceTransformer, de-duplication, batching, and the
export cache (built once, reused, rebuilt when corrupt). Exports go to a temporary cache folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skilltag.encoders as encoders
from skillcore import SkillTree
from skilltag.backends.embedding import EmbeddingBackend, EmbeddingConfig, load_model, packaged_model_path
from skilltag.encoders import OnnxEncoder, ensure_export, export_path, length_buckets, model_digest
from skilltag.engine import ProblemInput, TaggingEngine
from skilltag.testing import small_problems

TEXTS = [
    "Compute gcd(12, 18).",
    "",
    "x",
    "Let $f(x) = x^2 - 3x + 2$. Find all real roots of $f$ and the sum $\\sum_{k=1}^{10} f(k)$.",
    "A triangle has sides 3, 4 and 5.\nWhat is its area?\n\nSolution: right triangle, area = 6.",
    "Ünïcödé naïve café — 東京 の 問題: 2 + 2 = ?",
    "How many ways can 5 people sit around a round table? " * 40,  # longer than 256 tokens: truncated
    "   leading and trailing spaces   ",
    "Compute gcd(12, 18).",  # a duplicate
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def fp32(cache_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(threads=1, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def int8(cache_dir: Path, fp32: OnnxEncoder) -> OnnxEncoder:
    return OnnxEncoder(precision="int8", threads=1, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    vecs = load_model().encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vecs, dtype=np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_matches_torch_model(fp32: OnnxEncoder, reference: np.ndarray) -> None:
    got = fp32.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=True)
    assert got.shape == reference.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert fp32.get_embedding_dimension() == 384
    cos = _cos(got, reference)
    assert cos.min() > 0.999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_stays_close_to_torch_model(int8: OnnxEncoder, reference: np.ndarray) -> None:
    got = int8.encode(TEXTS, batch_size=4, normalize_embeddings=True)
    cos = _cos(got, reference)
    assert cos.min() > 0.95 and cos.mean() > 0.98, cos
    assert (
        int8.path.stat().st_size
        < 0.4 * export_path(precision="fp32", cache_dir=int8.path.parents[2]).stat().st_size
    )


def test_rows_come_back_in_input_order_with_one_encoding_per_text(fp32: OnnxEncoder) -> None:
    seen: list[int] = []
    run = fp32.session.run

    def counting(names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        seen.append(len(feeds["input_ids"]))
        return list(run(names, feeds))

    texts = ["b is second", "a", "b is second", "c, the longest text of the three", "a"]
    fp32.session.run = counting
    try:
        together = fp32.encode(texts, batch_size=2)
    finally:
        del fp32.session.run
    assert sum(seen) == 3  # three distinct texts
    alone = np.stack([fp32.encode(t) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_array_equal(together[0], together[2])
    np.testing.assert_array_equal(together[1], together[4])
    assert not np.allclose(together[0], together[1])


def test_batch_size_and_padding_do_not_change_vectors(fp32: OnnxEncoder) -> None:
    one = fp32.encode(TEXTS, batch_size=1)
    many = fp32.encode(TEXTS, batch_size=64)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_int8_vectors_do_not_depend_on_batchmates(int8: OnnxEncoder) -> None:
    alone = np.stack([int8.encode(t) for t in TEXTS])
    np.testing.assert_array_equal(int8.encode(TEXTS, batch_size=64), alone)


def test_length_buckets_respect_rows_and_tokens() -> None:
    lengths = np.array([5, 40, 3, 40, 12, 300, 7])
    batches = [list(b) for b in length_buckets(lengths, batch_size=3, max_tokens=100)]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[b]) <= 100) for b in batches)
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)  # shortest first
    assert [5] in batches  # 300 tokens: alone
    assert [list(b) for b in length_buckets(np.array([], dtype=np.int64), 4)] == []


def test_empty_input_and_single_string(fp32: OnnxEncoder) -> None:
    empty = fp32.encode([], batch_size=8, normalize_embeddings=True)
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    single = fp32.encode("Compute gcd(12, 18).")
    assert single.shape == (384,)
    with pytest.raises(ValueError):
        fp32.encode(["a"], batch_size=0)
    with pytest.raises(ValueError):
        OnnxEncoder(threads=0)


def test_export_cache_is_reused(fp32: OnnxEncoder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-exported although the cache holds a valid export")

    monkeypatch.setattr(encoders, "_export_fp32", no_export)
    monkeypatch.setattr(encoders, "_quantize_int8", no_export)
    again = OnnxEncoder(threads=1, cache_dir=cache_dir)
    assert again.path == fp32.path
    np.testing.assert_allclose(again.encode(TEXTS[:3]), fp32.encode(TEXTS[:3]), atol=1e-6)
    manifest = json.loads(fp32.path.with_suffix(".json").read_text())
    assert manifest["model_digest"] == model_digest(packaged_model_path())
    assert manifest["precision"] == "fp32" and manifest["size"] == fp32.path.stat().st_size


def test_corrupt_or_unfinished_export_is_rebuilt(int8: OnnxEncoder, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(int8.path.parents[2], cache)  # fp32 and int8 exports, so only int8 is rebuilt
    target = export_path(precision="int8", cache_dir=cache)
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2] + b"garbage")  # corrupt: size and digest differ
    rebuilt = OnnxEncoder(precision="int8", threads=1, cache_dir=cache)
    assert rebuilt.path == target and encoders._is_valid(target)
    np.testing.assert_allclose(rebuilt.encode(TEXTS[:3]), int8.encode(TEXTS[:3]), atol=1e-4)
    target.with_suffix(".json").unlink()  # a build that crashed before its manifest was written
    assert not encoders._is_valid(target)
    assert ensure_export(precision="int8", cache_dir=cache) == target and encoders._is_valid(target)
    assert not list(target.parent.glob(".build-*"))  # no temporary build folders left behind


def test_cache_key_follows_the_model_files(tmp_path: Path) -> None:
    src = packaged_model_path()
    copy = tmp_path / "model"
    for p in src.rglob("*"):
        if p.is_file():
            dest = copy / p.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if p.name == "config.json" and p.parent == src:
                shutil.copyfile(p, dest)
            else:
                dest.symlink_to(p)
    assert export_path(copy, cache_dir=tmp_path) == export_path(src, cache_dir=tmp_path)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "note": "changed"}))
    assert export_path(copy, cache_dir=tmp_path) != export_path(src, cache_dir=tmp_path)
    with pytest.raises(ValueError):
        export_path(copy, "fp16", cache_dir=tmp_path)  # type: ignore[arg-type]


def test_backend_tags_the_same_with_every_encoder(tree: SkillTree) -> None:
    """``EmbeddingConfig.encoder`` picks what runs the model; fp32 ONNX gives torch's tags and scores, the
    int8 default the same tags on the small tree."""
    rows = [ProblemInput.from_record(r) for r in small_problems()]

    def tag(encoder: str) -> list[Any]:
        backend = EmbeddingBackend(EmbeddingConfig(encoder=encoder, threads=1))  # type: ignore[arg-type]
        return TaggingEngine(tree, backend).tag(rows)

    torch_results, onnx_results = tag("torch"), tag("onnx")
    assert EmbeddingConfig().encoder == "onnx-int8"
    assert type(EmbeddingBackend(EmbeddingConfig()).model).__name__ == "OnnxEncoder"
    assert [r.chains for r in onnx_results] == [r.chains for r in torch_results]
    for a, b in zip(onnx_results, torch_results, strict=True):
        assert a.scores is not None and b.scores is not None
        np.testing.assert_allclose(np.concatenate(a.scores), np.concatenate(b.scores), atol=1e-3)
    assert [r.chains for r in tag("onnx-int8")] == [r.chains for r in torch_results]
    # another encoder is another tag-cache key (int8 vectors differ); torch keeps the key caches were written under
    configs = {
        e: EmbeddingBackend(EmbeddingConfig(encoder=e)).config() for e in ("torch", "onnx", "onnx-int8")
    }  # type: ignore[arg-type]
    assert "encoder" not in configs["torch"]
    assert configs["onnx"]["encoder"] == "onnx" and configs["onnx-int8"]["encoder"] == "onnx-int8"
