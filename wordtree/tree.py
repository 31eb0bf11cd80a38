"""The WordTree: nodes (WordNet ids), their parents, and contiguous sibling groups.

Node order follows darknet's `.tree` rules (darknet-notes.md, "WordTree"): parents come before
children and siblings are contiguous, so each sibling group is a slice `[offset, offset + size)`
over which the hierarchical softmax runs. Group 0 holds the roots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class TreeError(ValueError):
    """A tree that breaks darknet's ordering rules, or a lookup of a node that is not there."""


@dataclass(frozen=True, eq=False)
class WordTree:
    """A label tree as flat arrays; build it with `WordTree.from_parents`."""

    wnids: list[str]
    names: list[str]
    parent: np.ndarray  # (N,) int64, -1 for a root
    group: np.ndarray = field(repr=False)  # (N,) sibling group of each node
    group_offset: np.ndarray = field(repr=False)  # (G,) first node of each group
    group_size: np.ndarray = field(repr=False)  # (G,) nodes in each group
    child_group: np.ndarray = field(repr=False)  # (N,) group of the node's children, -1 for a leaf
    depth: np.ndarray = field(repr=False)  # (N,) edges between the node and its root

    @classmethod
    def from_parents(cls, wnids: list[str], parents, names: list[str] | None = None) -> "WordTree":
        """Check darknet's ordering rules and derive groups, children and depths."""
        parent = _parent_array(parents)
        n = len(wnids)
        names = list(names) if names is not None else list(wnids)
        if len(parent) != n or len(names) != n:
            raise TreeError(f"{n} wnids but {len(parent)} parents and {len(names)} names")
        if n == 0:
            raise TreeError("a WordTree needs at least one node")
        _check_order(parent)
        group, offset, size = _sibling_groups(parent)
        child_group = np.full(n, -1, dtype=np.int64)
        has_parent = parent[offset] >= 0
        child_group[parent[offset[has_parent]]] = np.nonzero(has_parent)[0]
        duplicated = _duplicates(wnids)
        if duplicated:
            raise TreeError(f"wnids appear more than once: {', '.join(duplicated[:10])}")
        return cls(list(wnids), names, parent, group, offset, size, child_group, _depths(parent))

    def __len__(self) -> int:
        return len(self.wnids)

    @property
    def num_groups(self) -> int:
        return len(self.group_offset)

    @property
    def leaf(self) -> np.ndarray:
        """(N,) bool: True where no node has this node as parent."""
        return self.child_group < 0

    @property
    def roots(self) -> np.ndarray:
        return np.nonzero(self.parent < 0)[0]

    def index(self, wnid: str) -> int:
        """Node index of a WordNet id; a TreeError names the id when it is not in the tree."""
        try:
            return self._index_of[wnid]
        except KeyError:
            raise TreeError(f"{wnid!r} is not a node of this tree ({len(self)} nodes)") from None

    def indices(self, wnids: list[str]) -> np.ndarray:
        """Node indices of many WordNet ids; the error lists every id that is missing."""
        missing = [w for w in wnids if w not in self._index_of]
        if missing:
            raise TreeError(f"{len(missing)} wnids are not in the tree: {', '.join(missing[:20])}")
        return np.array([self._index_of[w] for w in wnids], dtype=np.int64)

    def find(self, name: str) -> list[int]:
        """Indices of the nodes with this human name (names repeat: 662 do in darknet's 9k tree)."""
        return [i for i, n in enumerate(self.names) if n == name]

    def resolve(self, node: str | int) -> int:
        """A node given as index, wnid or unique name."""
        if isinstance(node, (int, np.integer)) or (isinstance(node, str) and node.isascii() and node.isdigit()):
            i = int(node)
            if not 0 <= i < len(self):
                raise TreeError(f"node index {i} is outside 0..{len(self) - 1}")
            return i
        if node in self._index_of:
            return self._index_of[node]
        found = self.find(node)
        if len(found) == 1:
            return found[0]
        if not found:
            raise TreeError(f"no node has the wnid or name {node!r}")
        choices = ", ".join(f"{i} ({self.wnids[i]})" for i in found)
        raise TreeError(f"{len(found)} nodes are named {node!r}: {choices}; give an index or wnid")

    def path_to_root(self, node: int) -> list[int]:
        """[node, parent, grandparent, ..., root]."""
        path = [int(node)]
        while self.parent[path[-1]] >= 0:
            path.append(int(self.parent[path[-1]]))
        return path

    def paths(self) -> np.ndarray:
        """(N, max_depth + 1) int64: row i is node i's path to its root, padded with -1."""
        columns = [np.arange(len(self), dtype=np.int64)]
        while (columns[-1] >= 0).any():
            previous = columns[-1]
            columns.append(np.where(previous >= 0, self.parent[np.maximum(previous, 0)], -1))
        return np.stack(columns[:-1], axis=1)

    def children(self, node: int) -> np.ndarray:
        g = self.child_group[node]
        if g < 0:
            return np.zeros(0, dtype=np.int64)
        return np.arange(self.group_offset[g], self.group_offset[g] + self.group_size[g])

    def siblings(self, node: int) -> np.ndarray:
        """The members of the node's sibling group, the node included."""
        g = self.group[node]
        return np.arange(self.group_offset[g], self.group_offset[g] + self.group_size[g])

    def stats(self) -> dict[str, int]:
        return {
            "nodes": len(self),
            "groups": self.num_groups,
            "leaves": int(self.leaf.sum()),
            "depth": int(self.depth.max()),
            "roots": len(self.roots),
        }

    def stats_line(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.stats().items())

    @property
    def _index_of(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {w: i for i, w in enumerate(self.wnids)}
            object.__setattr__(self, "_index_cache", cached)
        return cached


def _parent_array(parents) -> np.ndarray:
    """(N,) int64 parent indices; a value too large for int64 (a damaged file) is named with its line."""
    try:
        return np.asarray(parents, dtype=np.int64).reshape(-1)
    except OverflowError:
        i, value = next((i, p) for i, p in enumerate(parents) if not -(2**63) <= int(p) < 2**63)
        raise TreeError(
            f"node {i} (line {i + 1}) has parent {value}: parents must come before their children "
            "(parent index < node index, -1 for a root)"
        ) from None


def _check_order(parent: np.ndarray) -> None:
    index = np.arange(len(parent))
    bad = np.nonzero((parent >= index) | (parent < -1))[0]
    if len(bad):
        i = int(bad[0])
        raise TreeError(
            f"node {i} (line {i + 1}) has parent {int(parent[i])}: parents must come before their "
            "children (parent index < node index, -1 for a root)"
        )


def _sibling_groups(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of consecutive equal parents, as darknet's read_tree forms them."""
    starts = np.r_[True, parent[1:] != parent[:-1]]
    offset = np.nonzero(starts)[0]
    size = np.diff(np.r_[offset, len(parent)])
    run_parent = parent[offset]
    unique, counts = np.unique(run_parent, return_counts=True)
    if (counts > 1).any():
        p = int(unique[counts > 1][0])
        lines = (offset[run_parent == p] + 1).tolist()
        whose = "the roots" if p < 0 else f"the children of node {p}"
        raise TreeError(
            f"{whose} are not contiguous (runs start at lines {lines}): "
            "darknet would split them into separate softmax groups"
        )
    return np.cumsum(starts) - 1, offset, size


def _depths(parent: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parent), dtype=np.int64)
    ancestor = parent.copy()
    while (ancestor >= 0).any():
        has = ancestor >= 0
        depth += has
        ancestor = np.where(has, parent[np.maximum(ancestor, 0)], -1)
    return depth


def _duplicates(items: list[str]) -> list[str]:
    seen, repeated = set(), []
    for item in items:
        if item in seen:
            repeated.append(item)
        seen.add(item)
    return repeated
