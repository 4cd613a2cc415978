"""Hierarchical skill trees.

Two input formats are accepted:

* nested ``{"name": ..., "description": ..., "children": [...]}`` JSON, as used by the public SkillMix
  and EvalTree skill trees (the root's name is kept but excluded from chains);
* EvalTree's raw ``{"description": ..., "subtrees": ...}`` output, where a dict (or a list of dicts)
  of subtrees makes an internal node, a list of instance indices makes a leaf (a group of instances)
  and a single integer index makes an *instance-level* node (one benchmark instance). A node's name is
  its description. ``raw_levels="instances"`` (the default) keeps instance-level nodes as leaves;
  ``raw_levels="groups"`` drops them, so their parent, the group of instances, becomes the leaf (what
  the processed public EvalTree trees hold). The conversion logs, and keeps in
  ``SkillTree.raw_conversion``, how many instance-level nodes it found, kept and dropped.

Sibling nodes with the same name are refused (``duplicates="error"``, listing every clash) or merged
(``duplicates="merge"``). Every entry point offers both settings: ``--tree-duplicates`` and
``--tree-raw-levels`` on the command lines (``skillcore.cli_options``), ``data.tree_duplicates`` and
``data.tree_raw_levels`` in the pipeline config, ``SKILLPROFILER_TREE_DUPLICATES`` and
``SKILLPROFILER_TREE_RAW_LEVELS`` for the profiler service.

A *chain* (or path) is the list of node names from depth 1 down to a node, root excluded. Node ids are
derived from the chain only, so they are stable across processes and file orderings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

CHAIN_SEPARATOR = "->"
DuplicatePolicy = Literal["error", "merge"]
RawLevels = Literal["instances", "groups"]
DUPLICATE_POLICIES: tuple[DuplicatePolicy, ...] = ("error", "merge")
RAW_LEVELS: tuple[RawLevels, ...] = ("instances", "groups")
# How to choose the merge policy, named in the error that lists duplicate siblings.
DUPLICATES_HINT = (
    "to merge them: --tree-duplicates merge (skillselect, distill, skilltagger), "
    "--set data.tree_duplicates=merge (pipeline config), SKILLPROFILER_TREE_DUPLICATES=merge (profiler "
    "service), duplicates='merge' (Python)"
)

log = logging.getLogger("skillcore.tree")


MAX_TREE_DEPTH = 100  # skill levels below the root (real trees: 3 to 8)
MAX_TREE_ITEMS = 2_000_000  # JSON objects and lists walked in one tree (YAML aliases count each time used)


def check_tree_shape(data: Any) -> None:
    """Refuse, in one line and without recursion, what the tree parsers cannot walk: a node that contains
    itself (a YAML anchor referring to itself), nesting deeper than ``MAX_TREE_DEPTH`` levels, or more than
    ``MAX_TREE_ITEMS`` objects (aliases that multiply a small file)."""
    limit = 2 * MAX_TREE_DEPTH + 2  # a level is a node object and its list of children
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(data, 0, False)]
    seen = 0
    while stack:
        item, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(item))
            continue
        if id(item) in on_path:
            name = item.get("name") if isinstance(item, dict) else None
            raise SkillTreeError(
                f"the skill tree contains itself{f' at node {name!r}' if isinstance(name, str) else ''} "
                "(a YAML anchor that refers to itself?): a tree cannot hold a cycle"
            )
        if depth > limit:
            raise SkillTreeError(f"the skill tree is nested deeper than {MAX_TREE_DEPTH} levels")
        seen += 1
        if seen > MAX_TREE_ITEMS:
            raise SkillTreeError(f"the skill tree holds more than {MAX_TREE_ITEMS} objects")
        on_path.add(id(item))
        stack.append((item, depth, True))
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, False))


class SkillTreeError(ValueError):
    """A skill tree document is malformed; the message lists every problem found."""


def check_duplicates_policy(value: str) -> DuplicatePolicy:
    """``value`` if it is a known duplicate-name policy; ValueError naming the choices otherwise."""
    for policy in DUPLICATE_POLICIES:
        if value == policy:
            return policy
    raise ValueError(
        f"unknown duplicate-name policy {value!r}: choose one of {', '.join(DUPLICATE_POLICIES)}"
    )


def check_raw_levels(value: str) -> RawLevels:
    """``value`` if it is a known raw-EvalTree conversion; ValueError naming the choices otherwise."""
    for levels in RAW_LEVELS:
        if value == levels:
            return levels
    raise ValueError(f"unknown raw EvalTree levels {value!r}: choose one of {', '.join(RAW_LEVELS)}")


@dataclass(frozen=True)
class RawConversion:
    """What the EvalTree raw-format conversion kept.

    ``instance_nodes``: nodes whose ``subtrees`` is one instance index; ``instance_leaves``: those kept
    as leaves (``raw_levels="instances"``); ``dropped_instances``: those removed (``"groups"``);
    ``group_leaves``: nodes that became leaves because every child was an instance-level node."""

    raw_levels: RawLevels
    instance_nodes: int
    instance_leaves: int
    dropped_instances: int
    group_leaves: int

    def describe(self) -> str:
        if self.raw_levels == "instances":
            return (
                f"EvalTree raw conversion (raw_levels=instances): {self.instance_leaves} instance-level "
                f"node(s) kept as leaves (--tree-raw-levels groups stops at their groups)"
            )
        return (
            f"EvalTree raw conversion (raw_levels=groups): {self.dropped_instances} instance-level node(s) "
            f"dropped, {self.group_leaves} group(s) of instances became leaves"
        )


@dataclass
class SkillNode:
    name: str
    description: str = ""
    children: list[SkillNode] = field(default_factory=list)
    path: tuple[str, ...] = ()
    index: int = -1  # preorder position in the tree, root = 0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def depth(self) -> int:
        return len(self.path)

    @property
    def id(self) -> str:
        return node_id(self.path)

    @property
    def chain_text(self) -> str:
        return CHAIN_SEPARATOR.join(self.path)


def node_id(path: Sequence[str]) -> str:
    """Stable id of the node at ``path`` (root excluded): a short hash of the chain."""
    digest = hashlib.blake2b("\x1f".join(path).encode("utf-8"), digest_size=8).hexdigest()
    return f"sk-{digest}"


@dataclass(frozen=True)
class DepthStats:
    n_nodes: int
    n_leaves: int
    max_depth: int
    mean_leaf_depth: float
    leaves_per_depth: dict[int, int]


class SkillTree:
    """An immutable, validated skill tree with preorder-indexed nodes for vectorised work."""

    def __init__(self, root: SkillNode) -> None:
        self.root = root
        self.raw_conversion: RawConversion | None = None  # set when built from EvalTree's raw format
        self.nodes: list[SkillNode] = []
        self._by_path: dict[tuple[str, ...], SkillNode] = {}
        self._index(root, ())
        n = len(self.nodes)
        self.parent = np.full(n, -1, dtype=np.int64)
        self.depth = np.zeros(n, dtype=np.int64)
        for node in self.nodes:
            self.depth[node.index] = node.depth
            for child in node.children:
                self.parent[child.index] = node.index
        self.leaf_indices = np.array([nd.index for nd in self.nodes if nd.is_leaf], dtype=np.int64)
        self._ancestors: list[np.ndarray] = [self._compute_ancestors(i) for i in range(n)]

    # ----------------------------------------------------------------- construction
    def _index(self, node: SkillNode, path: tuple[str, ...]) -> None:
        node.path = path
        node.index = len(self.nodes)
        self.nodes.append(node)
        self._by_path[path] = node
        for child in node.children:
            self._index(child, (*path, child.name))

    def _compute_ancestors(self, index: int) -> np.ndarray:
        """Indices of the node and its ancestors, excluding the root (which no chain names)."""
        out = []
        while index > 0:
            out.append(index)
            index = int(self.parent[index])
        return np.array(out[::-1], dtype=np.int64)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        duplicates: DuplicatePolicy | str = "error",
        raw_levels: RawLevels | str = "instances",
    ) -> SkillTree:
        """Build from either supported JSON shape (detected from the root's keys).

        ``duplicates``: ``"error"`` refuses sibling nodes with the same name (listing them all),
        ``"merge"`` merges them. ``raw_levels`` (EvalTree raw format only): ``"instances"`` keeps
        instance-level nodes as leaves, ``"groups"`` drops them so groups of instances are the leaves.
        Any other value is a ValueError."""
        policy = check_duplicates_policy(duplicates)
        levels = check_raw_levels(raw_levels)
        if not isinstance(data, Mapping):
            raise SkillTreeError(f"a skill tree must be a JSON object, got {type(data).__name__}")
        check_tree_shape(data)
        errors: list[str] = []
        conversion: RawConversion | None = None
        if "subtrees" in data:
            instances: set[int] = set()
            root = _parse_evaltree(data, (), errors, instances)
            if not errors:
                conversion = _apply_raw_levels(root, levels, instances)
        elif "name" in data or "children" in data:
            root = _parse_nested(data, (), errors, is_root=True)
        else:
            raise SkillTreeError(
                "unrecognised skill tree: expected a root with 'name'/'children' (nested format) "
                "or 'description'/'subtrees' (EvalTree raw format)"
            )
        if errors:
            raise SkillTreeError("invalid skill tree:\n  " + "\n  ".join(errors))
        _resolve_duplicates(root, (), policy)
        if not root.children:
            raise SkillTreeError("a skill tree needs at least one skill below the root")
        tree = cls(root)
        if conversion is not None:
            tree.raw_conversion = conversion
            log.info("%s; %d nodes, %d leaves", conversion.describe(), len(tree) - 1, tree.n_leaves)
        return tree

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        duplicates: DuplicatePolicy | str = "error",
        raw_levels: RawLevels | str = "instances",
    ) -> SkillTree:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text) if path.suffix in {".yaml", ".yml"} else json.loads(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise SkillTreeError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
        except RecursionError:
            raise SkillTreeError(
                f"{path}: nested too deeply to read (a skill tree has at most {MAX_TREE_DEPTH} levels)"
            ) from None
        return cls.from_dict(data, duplicates=duplicates, raw_levels=raw_levels)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Compact nested form: ``description`` and ``children`` only where non-empty."""
        return _node_to_dict(self.root)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False)

    def save(self, path: str | Path) -> None:
        from skillcore.io import atomic_write_text

        path = Path(path)
        text = self.to_yaml() if path.suffix in {".yaml", ".yml"} else self.to_json(indent=1)
        atomic_write_text(path, text)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON (names, descriptions, child order)."""
        canonical = json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.nodes)

    def leaves(self) -> Iterator[SkillNode]:
        for i in self.leaf_indices:
            yield self.nodes[int(i)]

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_indices.size)

    def node(self, chain: Sequence[str] | str) -> SkillNode:
        """The node a chain names (list of names, or names joined by '->'); KeyError if none."""
        path = parse_chain(chain)
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(f"no skill node at {CHAIN_SEPARATOR.join(path)!r}") from None

    def find(self, chain: Sequence[str] | str) -> SkillNode | None:
        return self._by_path.get(parse_chain(chain))

    def is_valid_chain(self, chain: Sequence[str] | str, *, to_leaf: bool = True) -> bool:
        found = self.find(chain)
        return found is not None and found.index > 0 and (found.is_leaf or not to_leaf)

    def ancestors(self, index: int) -> np.ndarray:
        """Preorder indices from depth 1 down to ``index`` (root excluded)."""
        return self._ancestors[index]

    def depth_stats(self) -> DepthStats:
        leaf_depths = self.depth[self.leaf_indices]
        values, counts = np.unique(leaf_depths, return_counts=True)
        return DepthStats(
            n_nodes=len(self.nodes) - 1,
            n_leaves=self.n_leaves,
            max_depth=int(self.depth.max()),
            mean_leaf_depth=float(leaf_depths.mean()),
            leaves_per_depth={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        )

    def truncate(self, max_depth: int) -> SkillTree:
        """A new tree cut at ``max_depth``: nodes at that depth become leaves."""
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")

        def cut(node: SkillNode, depth: int) -> SkillNode:
            kids = [] if depth >= max_depth else [cut(c, depth + 1) for c in node.children]
            return SkillNode(node.name, node.description, kids)

        return SkillTree(cut(self.root, 0))

    def truncate_chain(self, chain: Sequence[str], max_depth: int) -> tuple[str, ...]:
        return tuple(chain[:max_depth])


def parse_chain(chain: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(chain, str):
        return tuple(part.strip() for part in chain.split(CHAIN_SEPARATOR))
    return tuple(chain)


def format_chain(chain: Sequence[str]) -> str:
    return CHAIN_SEPARATOR.join(chain)


# --------------------------------------------------------------------- parsing helpers
def _where(path: tuple[str, ...]) -> str:
    return "<root>" + "".join(f" -> {p}" for p in path)


def _check_name(name: Any, path: tuple[str, ...], errors: list[str]) -> str | None:
    if not isinstance(name, str):
        errors.append(f"{_where(path)}: node name must be a string, got {type(name).__name__}")
        return None
    if not name.strip():
        errors.append(f"{_where(path)}: empty node name")
        return None
    return name.strip()


def _parse_nested(data: Any, path: tuple[str, ...], errors: list[str], *, is_root: bool = False) -> SkillNode:
    if not isinstance(data, Mapping):
        errors.append(f"{_where(path)}: expected an object with 'name', got {type(data).__name__}")
        return SkillNode("?")
    raw_name = data.get("name", "root" if is_root else None)
    name = "root" if is_root and raw_name is None else _check_name(raw_name, path, errors)
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        errors.append(f"{_where(path)}: description must be a string")
        description = ""
    children_raw = data.get("children", [])
    if children_raw is None:
        children_raw = []
    if not isinstance(children_raw, list):
        errors.append(f"{_where(path)}: 'children' must be a list, got {type(children_raw).__name__}")
        children_raw = []
    children = []
    for i, child in enumerate(children_raw):
        child_name = child.get("name") if isinstance(child, Mapping) else None
        label = child_name if isinstance(child_name, str) and child_name.strip() else f"[{i}]"
        children.append(_parse_nested(child, (*path, label), errors))
    return SkillNode(name or "?", description, children)


def _parse_evaltree(data: Any, path: tuple[str, ...], errors: list[str], instances: set[int]) -> SkillNode:
    """Parse a raw EvalTree node; the ``id`` of every instance-level node parsed is added to ``instances``."""
    if not isinstance(data, Mapping):
        errors.append(f"{_where(path)}: expected an object with 'subtrees', got {type(data).__name__}")
        return SkillNode("?")
    is_root = not path
    description = data.get("description")
    name = "root" if is_root and description is None else _check_name(description, path, errors)
    subtrees = data.get("subtrees")
    instance = False
    children: list[SkillNode] = []
    items: list[tuple[str, Any]] = []
    if isinstance(subtrees, Mapping):
        items = [(str(k), v) for k, v in subtrees.items()]
    elif isinstance(subtrees, list) and subtrees and all(isinstance(s, Mapping) for s in subtrees):
        items = [(f"[{i}]", v) for i, v in enumerate(subtrees)]
    elif isinstance(subtrees, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in subtrees):
        pass  # a leaf holding instance indices
    elif isinstance(subtrees, int) and not isinstance(subtrees, bool):
        instance = True  # an instance-level node: one instance index
    else:
        errors.append(
            f"{_where(path)}: 'subtrees' must be a dict or list of subtrees, a list of instance "
            f"indices or one index, got {type(subtrees).__name__}"
        )
    for key, child in items:
        child_desc = child.get("description") if isinstance(child, Mapping) else None
        label = child_desc if isinstance(child_desc, str) and child_desc.strip() else key
        children.append(_parse_evaltree(child, (*path, label), errors, instances))
    # EvalTree's descriptions are the capability names; keep them as both.
    node = SkillNode(name or "?", name or "", children)
    if instance and path:  # a root holding one index is not an instance of a group
        instances.add(id(node))
    return node


def _apply_raw_levels(root: SkillNode, levels: RawLevels, instances: set[int]) -> RawConversion:
    """Count instance-level nodes; with ``"groups"`` drop them (their parents become leaves)."""
    counts = {"instances": 0, "dropped": 0, "groups": 0}

    def visit(node: SkillNode) -> None:
        kept: list[SkillNode] = []
        for child in node.children:
            if id(child) in instances:
                counts["instances"] += 1
                if levels == "groups":
                    counts["dropped"] += 1
                    continue
            kept.append(child)
            visit(child)
        if levels == "groups" and node.children and not kept:
            counts["groups"] += 1
        node.children = kept

    visit(root)
    found = counts["instances"]
    return RawConversion(
        raw_levels=levels,
        instance_nodes=found,
        instance_leaves=found - counts["dropped"],
        dropped_instances=counts["dropped"],
        group_leaves=counts["groups"],
    )


def _resolve_duplicates(node: SkillNode, path: tuple[str, ...], policy: DuplicatePolicy) -> None:
    """Find sibling name clashes everywhere; raise listing all, or merge them (recursively)."""
    offending: list[str] = []
    _collect_duplicates(node, path, offending)
    if not offending:
        return
    if policy == "error":
        raise SkillTreeError(
            f"{len(offending)} duplicate sibling name(s) ({DUPLICATES_HINT}):\n  " + "\n  ".join(offending)
        )
    warnings.warn(f"merging {len(offending)} duplicate sibling name(s): {offending[:5]}", stacklevel=3)
    _merge(node)


def _collect_duplicates(node: SkillNode, path: tuple[str, ...], out: list[str]) -> None:
    seen: set[str] = set()
    reported: set[str] = set()
    for child in node.children:
        if child.name in seen and child.name not in reported:
            out.append(_where((*path, child.name)))
            reported.add(child.name)
        seen.add(child.name)
        _collect_duplicates(child, (*path, child.name), out)


def _merge(node: SkillNode) -> None:
    merged: dict[str, SkillNode] = {}
    for child in node.children:
        if child.name in merged:
            target = merged[child.name]
            target.children.extend(child.children)
            if not target.description:
                target.description = child.description
        else:
            merged[child.name] = child
    node.children = list(merged.values())
    for child in node.children:
        _merge(child)


def _node_to_dict(node: SkillNode) -> dict[str, Any]:
    out: dict[str, Any] = {"name": node.name}
    if node.description:
        out["description"] = node.description
    if node.children:
        out["children"] = [_node_to_dict(c) for c in node.children]
    return out
