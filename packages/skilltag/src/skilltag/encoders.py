"""Fast sentence encoders for the embedding backend: ONNX Runtime over an ONNX export of the packaged model,
and a static token table distilled from it (``StaticEncoder``, at the end of this module).

``OnnxEncoder`` has the surface of a SentenceTransformer that the embedding backend uses
(``encode(texts, batch_size=..., convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)``
and ``get_embedding_dimension()``), so it can stand in for one::

    backend = EmbeddingBackend(EmbeddingConfig(), exemplars=...)
    backend.model = OnnxEncoder(threads=1)  # before bind(); the engine binds on its first call

What makes it faster than ``SentenceTransformer.encode`` on a CPU (figures: benchmarks/bench_encoder.py):

- ONNX Runtime instead of eager torch: transformer and masked mean pooling in one graph, traced once from
  the local weights (about 2.3x less CPU than torch for the same vectors, cosine > 0.9999);
- optionally int8 weights (``precision="int8"``: ONNX Runtime dynamic quantization, per-channel weights;
  about 5x less CPU than torch, cosine to torch about 0.99 on average). Dynamic quantization scales the
  activations per run, so int8 runs one text at a time: a text's vector never depends on the texts it was
  batched with, and a tag cache keyed by text stays consistent;
- one encoding per distinct text in a call (rows come back in input order, duplicates share a row);
- length-bucketed batches: texts sorted by token count, at most ``batch_size`` texts and
  ``max_batch_tokens`` padded tokens a batch (small batches stay in cache: faster than 64 long rows);
- an explicit intra-op thread count (default 1: a second thread bought nothing on a shared 2-core machine
  and lost 15-25% when another process used a core), with no spin-waiting between ops.

The export is built once per machine from the local weights (torch, never the hub), in a cache folder keyed
by the digest of the model folder's files and of the export recipe: ``$SKILLTAG_CACHE_DIR``, else
``$XDG_CACHE_HOME/skilltag``, else ``~/.cache/skilltag``. It is written atomically (a temporary file, then a
rename, then a manifest with the file's SHA-256), under a file lock so that concurrent processes build it
once; a file that does not match its manifest, or that ONNX Runtime cannot load, is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

# Bump when the export recipe (graph inputs/outputs, opset, quantization settings) changes: it is part of
# the cache key, so old exports are never reused for a new recipe.
EXPORT_RECIPE = "st-mean-pool/opset17/eager-attn/v1"
OPSET = 17
_SKIP_DIGEST = {"README.md", ".gitattributes"}


def cache_root() -> Path:
    """Where exports are cached: ``$SKILLTAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/skilltag``, else
    ``~/.cache/skilltag``."""
    explicit = os.environ.get("SKILLTAG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "skilltag"


def _default_model_folder() -> Path:
    from skilltag.backends.embedding import packaged_model_path

    return packaged_model_path()


_digest_memo: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_digest_lock = threading.Lock()


def model_digest(folder: str | Path) -> str:
    """SHA-256 over the relative names and contents of a model folder's files (README and
    .gitattributes aside); memoised in-process by the files' sizes and modification times."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _SKIP_DIGEST)
    stamp = tuple((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(root.resolve()), stamp)
    with _digest_lock:
        if key in _digest_memo:
            return _digest_memo[key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_file_sha256(p).encode() + b"\0")
    out = digest.hexdigest()
    with _digest_lock:
        _digest_memo[key] = out
    return out


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """What the export and the encoder need to know about a sentence-transformers folder."""

    folder: Path
    max_seq_length: int
    normalize: bool
    dim: int

    @classmethod
    def read(cls, folder: str | Path) -> ModelSpec:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"embedding model folder not found: {root}")
        modules = _read_json(root / "modules.json", [])
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            raise ValueError(f"unsupported sentence-transformers modules in {root}: {kinds}")
        pooling = _read_json(root / str(modules[1].get("path") or "1_Pooling") / "config.json", {})
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"only mean pooling is supported, {root} has {modes}")
        config = _read_json(root / "config.json", {})
        st_config = _read_json(root / "sentence_bert_config.json", {})
        tok_config = _read_json(root / "tokenizer_config.json", {})
        limits = [
            int(x)
            for x in (
                st_config.get("max_seq_length"),
                tok_config.get("model_max_length"),
                config.get("max_position_embeddings"),
            )
            if isinstance(x, int) and 0 < x < 1_000_000
        ]
        if not (root / "tokenizer.json").is_file():
            raise FileNotFoundError(f"no tokenizer.json (a fast tokenizer) in {root}")
        dim = int(pooling.get("word_embedding_dimension") or config["hidden_size"])
        return cls(root, min(limits) if limits else 512, "Normalize" in kinds, dim)


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- export
def export_path(
    folder: str | Path | None = None, precision: Precision = "fp32", cache_dir: Path | None = None
) -> Path:
    """Where the export of ``folder`` (None: the packaged model) at ``precision`` lives in the cache."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    root = Path(folder) if folder else _default_model_folder()
    key = hashlib.sha256(f"{model_digest(root)}|{EXPORT_RECIPE}".encode()).hexdigest()[:24]
    return (cache_dir or cache_root()) / "onnx" / key / f"model-{precision}.onnx"


def _manifest(path: Path) -> Path:
    return path.with_suffix(".json")


def _is_valid(path: Path) -> bool:
    """The export exists and matches the SHA-256 its manifest (written last) records."""
    try:
        meta = json.loads(_manifest(path).read_text(encoding="utf-8"))
        return bool(path.stat().st_size == meta["size"] and _file_sha256(path) == meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _file_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (POSIX ``flock``; a no-op elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder / ".lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_export(
    folder: str | Path | None = None,
    precision: Precision = "fp32",
    *,
    cache_dir: Path | None = None,
    rebuild: bool = False,
) -> Path:
    """The cached ONNX export of a sentence-transformers folder (None: the packaged model), built (once per
    machine) when it is missing, does not match its manifest, or ``rebuild`` is set."""
    root = Path(folder) if folder else _default_model_folder()
    target = export_path(root, precision, cache_dir)
    if not rebuild and _is_valid(target):
        return target
    # int8 is quantized from the fp32 export (built first, outside this lock: flock is per open file)
    source = ensure_export(root, "fp32", cache_dir=cache_dir) if precision == "int8" else None
    with _file_lock(target.parent):
        if not rebuild and _is_valid(target):  # another process built it while we waited
            return target
        _manifest(target).unlink(missing_ok=True)
        spec = ModelSpec.read(root)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            built = Path(tmp) / target.name
            if source is None:
                _export_fp32(spec, built)
            else:
                _quantize_int8(source, built)
            meta = {
                "sha256": _file_sha256(built),
                "size": built.stat().st_size,
                "precision": precision,
                "model_digest": model_digest(root),
                "recipe": EXPORT_RECIPE,
                "max_seq_length": spec.max_seq_length,
                "versions": _versions(),
            }
            os.replace(built, target)
            tmp_meta = Path(tmp) / "manifest.json"
            tmp_meta.write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp_meta, _manifest(target))  # the manifest is the commit marker
    return target


def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "onnx", "onnxruntime"):
        with contextlib.suppress(Exception):
            out[name] = str(__import__(name).__version__)
    return out


def _export_fp32(spec: ModelSpec, out: Path) -> None:
    """Trace transformer + masked mean pooling (normalisation stays outside, in NumPy) to ONNX."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    # eager attention traces to the plain pattern ORT fuses into its Attention op (sdpa does not)
    model = AutoModel.from_pretrained(str(spec.folder), local_files_only=True, attn_implementation="eager")
    model.eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            )[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    ids = torch.full((2, 16), 1000, dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    mask[1, 9:] = 0
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled(model),
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights (activations quantized on the fly)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "please consider pre-processing" noise
    try:
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.getLogger().setLevel(level)


# ---------------------------------------------------------------------------------------------- encoder
def length_buckets(
    lengths: np.ndarray, batch_size: int, max_tokens: int | None = None
) -> Iterator[np.ndarray]:
    """Row indices in batches of similar token counts (shortest first): at most ``batch_size`` rows, and at
    most ``max_tokens`` tokens once padded to the batch's longest row (a longer row goes alone)."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and end - start < batch_size:
            if max_tokens is not None and (end - start + 1) * int(lengths[order[end]]) > max_tokens:
                break
            end += 1
        yield order[start:end]
        start = end


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # worker threads sleep instead of spinning between ops: spinning burns the core another process needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """A SentenceTransformer stand-in for mean-pooled BERT-like models, on ONNX Runtime (CPU)."""

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        precision: Precision = "fp32",
        threads: int | None = 1,
        max_batch_tokens: int | None = 512,
        cache_dir: Path | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1 (or None: ONNX Runtime's default)")
        self.spec = ModelSpec.read(folder if folder else _default_model_folder())
        self.precision: Precision = precision
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self.path = ensure_export(self.spec.folder, precision, cache_dir=cache_dir)
        try:
            self.session = _session(self.path, threads or 0)
        except Exception:  # a file that passed its manifest but does not load: rebuild once
            self.path = ensure_export(self.spec.folder, precision, cache_dir=cache_dir, rebuild=True)
            self.session = _session(self.path, threads or 0)
        tokenizer = Tokenizer.from_file(str(self.spec.folder / "tokenizer.json"))
        tokenizer.no_padding()  # the file pads every text to 128; batches pad to their own longest
        tokenizer.enable_truncation(self.spec.max_seq_length)
        self.tokenizer = tokenizer
        self.max_seq_length = self.spec.max_seq_length

    def get_embedding_dimension(self) -> int:
        return self.spec.dim

    get_sentence_embedding_dimension = get_embedding_dimension  # the older SentenceTransformer name

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        **_: Any,
    ) -> np.ndarray:
        """Embeddings as float32 rows in input order (one row for a single string). Normalised when the
        model ends with a Normalize module (all-MiniLM-L6-v2 does) or ``normalize_embeddings`` is set."""
        if isinstance(sentences, str):
            return self.encode([sentences], batch_size, normalize_embeddings=normalize_embeddings)[0]
        texts = list(sentences)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        distinct = list(dict.fromkeys(texts))
        vecs = self._encode_distinct(distinct, batch_size)
        if normalize_embeddings or self.spec.normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs /= np.maximum(norms, 1e-12)
        if len(distinct) == len(texts):
            return vecs
        row = {t: i for i, t in enumerate(distinct)}
        return vecs[[row[t] for t in texts]]

    def _encode_distinct(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.precision == "int8":
            batch_size = 1  # activations are quantized per batch: one text per run keeps vectors per text
        for rows in length_buckets(lengths, batch_size, self.max_batch_tokens):
            width = int(lengths[rows[-1]])
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = int(lengths[i])
                input_ids[r, :n] = ids[i]
                mask[r, :n] = 1
            (emb,) = self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": mask})
            out[rows] = emb
        return out

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.spec.folder.name!r}, precision={self.precision!r}, threads={self.threads})"


# ---------------------------------------------------------------------------------------------- static
# Bump when the distillation recipe changes (it is part of the cache key, like EXPORT_RECIPE).
STATIC_RECIPE = "model2vec-distill/mean/sif1e-4/float32/v1"
STATIC_PCA_DIMS = 256
STATIC_MAX_TOKENS = 512  # model2vec's own default truncation


def static_path(
    folder: str | Path | None = None, pca_dims: int = STATIC_PCA_DIMS, cache_dir: Path | None = None
) -> Path:
    """Where the static token table distilled from ``folder`` (None: the packaged model) lives in the cache."""
    if pca_dims < 1:
        raise ValueError("pca_dims must be at least 1")
    root = Path(folder) if folder else _default_model_folder()
    key = hashlib.sha256(f"{model_digest(root)}|{STATIC_RECIPE}|pca{pca_dims}".encode()).hexdigest()[:24]
    return (cache_dir or cache_root()) / "static" / key / f"static-pca{pca_dims}.npz"


def ensure_static(
    folder: str | Path | None = None,
    pca_dims: int = STATIC_PCA_DIMS,
    *,
    cache_dir: Path | None = None,
    rebuild: bool = False,
) -> Path:
    """The cached static token table of a sentence-transformers folder (None: the packaged model): every
    vocabulary token run through the transformer once (model2vec's distillation: mean-pooled, PCA to
    ``pca_dims``, Zipf/SIF-weighted), kept with the tokenizer it was made for. Built once per machine, like
    the ONNX export (atomic write, manifest with SHA-256, file lock); rebuilt when missing, when it does not
    match its manifest, or when ``rebuild`` is set."""
    root = Path(folder) if folder else _default_model_folder()
    target = static_path(root, pca_dims, cache_dir)
    if not rebuild and _is_valid(target):
        return target
    with _file_lock(target.parent):
        if not rebuild and _is_valid(target):  # another process built it while we waited
            return target
        _manifest(target).unlink(missing_ok=True)
        ModelSpec.read(root)  # the same model checks as the export: mean pooling, a fast tokenizer
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            built = Path(tmp) / target.name
            shape = _distill_static(root, pca_dims, built)
            meta = {
                "sha256": _file_sha256(built),
                "size": built.stat().st_size,
                "shape": list(shape),
                "pca_dims": pca_dims,
                "model_digest": model_digest(root),
                "recipe": STATIC_RECIPE,
                "versions": {**_versions(), **_static_versions()},
            }
            os.replace(built, target)
            tmp_meta = Path(tmp) / "manifest.json"
            tmp_meta.write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp_meta, _manifest(target))  # the manifest is the commit marker
    return target


def _static_versions() -> dict[str, str]:
    out = {}
    for name in ("model2vec", "skeletoken", "tokenizers"):
        with contextlib.suppress(Exception):
            out[name] = str(__import__(name).__version__)
    return out


def _distill_static(folder: Path, pca_dims: int, out: Path) -> tuple[int, int]:
    """Distil the token table with model2vec (local weights, torch on CPU) and write it with its tokenizer
    to one ``.npz`` file: ``vectors`` (float32, one row per token id) and ``tokenizer`` (its JSON, as bytes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from model2vec.distill import distill

    model = distill(model_name=str(folder), pca_dims=pca_dims, device="cpu", quantize_to="float32")
    vectors = np.ascontiguousarray(np.asarray(model.embedding, dtype=np.float32))
    tokenizer = np.frombuffer(model.tokenizer.to_str().encode("utf-8"), dtype=np.uint8)
    with open(out, "wb") as fh:
        np.savez(fh, vectors=vectors, tokenizer=tokenizer)
    return int(vectors.shape[0]), int(vectors.shape[1])


def _load_static(path: Path) -> tuple[np.ndarray, Any]:
    from tokenizers import Tokenizer

    with np.load(path, allow_pickle=False) as data:
        vectors = np.ascontiguousarray(data["vectors"], dtype=np.float32)
        tokenizer = Tokenizer.from_str(bytes(data["tokenizer"]).decode("utf-8"))
    if vectors.ndim != 2 or tokenizer.get_vocab_size() > len(vectors):
        raise ValueError(f"static table {path} does not fit its tokenizer")
    return vectors, tokenizer


class StaticEncoder:
    """A SentenceTransformer stand-in over a static token table distilled from the packaged model (see
    ``ensure_static``): a text's vector is the mean of its tokens' rows (no special tokens, unknown tokens
    dropped, at most 512 tokens), unit-normalised. No transformer runs: thousands of texts a second on one
    core of any CPU. Each text is encoded alone, so its vector never depends on its batch-mates or on
    ``batch_size``; a text without known tokens gets the zero vector."""

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        pca_dims: int = STATIC_PCA_DIMS,
        threads: int | None = 1,
        cache_dir: Path | None = None,
    ) -> None:
        self.folder = Path(folder) if folder else _default_model_folder()
        self.pca_dims = pca_dims
        self.threads = threads  # kept for the encoder surface: the lookup runs on the calling thread
        self.path = ensure_static(self.folder, pca_dims, cache_dir=cache_dir)
        try:
            self.vectors, tokenizer = _load_static(self.path)
        except Exception:  # a file that passed its manifest but does not load: rebuild once
            self.path = ensure_static(self.folder, pca_dims, cache_dir=cache_dir, rebuild=True)
            self.vectors, tokenizer = _load_static(self.path)
        tokenizer.no_padding()
        tokenizer.enable_truncation(STATIC_MAX_TOKENS)
        self.tokenizer = tokenizer
        unk = getattr(tokenizer.model, "unk_token", None)
        self.unk_id: int | None = tokenizer.token_to_id(unk) if unk else None

    def get_embedding_dimension(self) -> int:
        return int(self.vectors.shape[1])

    get_sentence_embedding_dimension = get_embedding_dimension

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = True,
        **_: Any,
    ) -> np.ndarray:
        """Unit-normalised float32 rows in input order (one row for a single string); ``batch_size`` and
        ``normalize_embeddings`` change nothing (the vectors are always normalised, as model2vec's are)."""
        if isinstance(sentences, str):
            return self.encode([sentences])[0]
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        texts = list(sentences)
        out = np.zeros((len(texts), self.vectors.shape[1]), dtype=np.float32)
        if not texts:
            return out
        for row, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = [i for i in enc.ids if i != self.unk_id]
            if ids:
                vec = self.vectors[ids].mean(axis=0)
                out[row] = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return out

    def __repr__(self) -> str:
        return f"StaticEncoder({self.folder.name!r}, pca_dims={self.pca_dims})"
