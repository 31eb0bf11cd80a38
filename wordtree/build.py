"""WordNet synsets → WordTree, by the YOLO9000 paper's rule (section 4, "Hierarchical classification").

The rule: first add every synset that has a single hypernym path to the root; then, for each
remaining synset in input order, add the path that adds the fewest new nodes to the tree so far.
Ties go to the shortest path, then to the lexicographically smallest top-down wnid sequence.
Hypernyms and instance hypernyms both count as parents, as in nltk's `hypernym_paths` and in
darknet's 9k.tree (sun, an instance of star with no hypernym, sits under star there).

A path is added from its synset upwards and stops at the first node already in the tree, whose
parent is kept: every node has one parent, set by the first path that brought it in. "New nodes"
of a candidate path are exactly the nodes that adding it would create.

labels-only shape: the paths are chosen as above (over all their synsets), then only the given
synsets stay, each under its nearest given ancestor on its chosen path (darknet's 9k.tree has this
shape: vein sits under structure, blood vessel and vessel are not nodes).

Node order follows darknet's 9k.tree (darknet-notes.md, "WordTree"): the root's children form
group 0; then, depth first, each node's children are written as one contiguous group right after
the groups of the nodes before it (thing, matter, ...; then thing's children; then body part's
children; ...). Siblings are ordered by the first input synset whose tree path contains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wordtree.labelsets import is_wnid
from wordtree.tree import WordTree
from wordtree.wordnet import NounGraph, noun_graph, open_wordnet, synset_of, wnid_of

Path_ = tuple[str, ...]  # wnids top-down, the root excluded, the synset itself last


class BuildError(ValueError):
    """Input that no tree can be built from (unknown root, no synset under it, bad shape)."""


@dataclass(frozen=True)
class BuildResult:
    """The tree, and the given synsets it leaves out because they do not descend from the root."""

    tree: WordTree
    outside: list[str] = field(default_factory=list)  # wnids not under the root, in input order
    multi_path: int = 0  # given synsets with more than one path to the root


def build_tree(
    wnids: list[str],
    root: str = "physical_entity.n.01",
    shape: Literal["full", "labels-only"] = "full",
    wordnet=None,
    collapse_chains: bool = False,
) -> BuildResult:
    """A WordTree over the given synsets under `root` (the root itself is not a node).

    `collapse_chains` drops every added (not given) node with a single child, whose group would hold one
    node with P(child | parent) = 1: the shape of the paper's WordTree1k (see `collapse_single_children`).
    """
    if shape not in ("full", "labels-only"):
        raise BuildError(f"shape must be 'full' or 'labels-only', not {shape!r}")
    wordnet = wordnet or open_wordnet()
    given = list(dict.fromkeys(wnids))
    root_wnid = _root_wnid(root, wordnet)
    paths = _PathFinder(root_wnid, noun_graph(wordnet))
    inside = [w for w in given if paths.of(w)]
    outside = [w for w in given if not paths.of(w)]
    if not inside:
        raise BuildError(f"none of the {len(given)} synsets descends from the root {root!r}")
    parent = choose_parents(inside, paths.of)
    if shape == "labels-only":
        parent = _nearest_given_ancestors(inside, parent)
    if collapse_chains:
        parent = collapse_single_children(inside, parent)
    order = _darknet_order(inside, parent)
    index = {w: i for i, w in enumerate(order)}
    parents = [index[parent[w]] if parent[w] is not None else -1 for w in order]
    names = [paths.name(w) for w in order]
    multi = sum(len(paths.of(w)) > 1 for w in inside)
    return BuildResult(WordTree.from_parents(order, parents, names), outside, multi)


def choose_parents(given: list[str], paths_of) -> dict[str, str | None]:
    """{wnid: parent wnid or None for a child of the root}: the paper's rule, see the module doc."""
    parent: dict[str, str | None] = {}
    for wnid in given:
        if len(paths_of(wnid)) == 1:
            _add_path(paths_of(wnid)[0], parent)
    for wnid in given:
        if wnid not in parent:
            best = min(paths_of(wnid), key=lambda path: (count_new_nodes(path, parent), len(path), path))
            _add_path(best, parent)
    return parent


def count_new_nodes(path: Path_, parent: dict) -> int:
    """How many nodes adding this path creates: those below its deepest node already in the tree."""
    new = 0
    for wnid in reversed(path):
        if wnid in parent:
            break
        new += 1
    return new


def _add_path(path: Path_, parent: dict) -> None:
    """Give each new node of the path, from the bottom up, its parent on the path."""
    for depth in range(len(path) - 1, -1, -1):
        if path[depth] in parent:
            return
        parent[path[depth]] = path[depth - 1] if depth > 0 else None


def collapse_single_children(given: list[str], parent: dict) -> dict[str, str | None]:
    """Remove the added nodes that have exactly one child; each remaining node hangs under its nearest
    remaining ancestor. Child counts of the others do not change, so one pass removes whole chains."""
    children: dict[str | None, int] = {}
    for node, up in parent.items():
        children[up] = children.get(up, 0) + 1
    keep = set(given)
    removed = {node for node in parent if node not in keep and children.get(node, 0) == 1}
    result: dict[str, str | None] = {}
    for node in parent:
        if node in removed:
            continue
        up = parent[node]
        while up is not None and up in removed:
            up = parent[up]
        result[node] = up
    return result


def _nearest_given_ancestors(given: list[str], parent: dict) -> dict[str, str | None]:
    """labels-only shape: each given synset's parent is its nearest given ancestor on its tree path."""
    keep = set(given)
    result: dict[str, str | None] = {}
    for wnid in given:
        ancestor = parent[wnid]
        while ancestor is not None and ancestor not in keep:
            ancestor = parent[ancestor]
        result[wnid] = ancestor
    return result


def _darknet_order(given: list[str], parent: dict) -> list[str]:
    """Nodes in darknet's group order (module doc); siblings by first appearance in the input."""
    first_seen: dict[str, int] = {}
    for position, wnid in enumerate(given):
        node = wnid
        while node is not None and node not in first_seen:
            first_seen[node] = position
            node = parent[node]
    children: dict[str | None, list[str]] = {}
    for node in sorted(first_seen, key=lambda w: (first_seen[w], w)):
        children.setdefault(parent[node], []).append(node)
    order = list(children[None])
    stack = list(reversed(order))
    while stack:
        kids = children.get(stack.pop(), [])
        order.extend(kids)
        stack.extend(reversed(kids))
    return order


def _root_wnid(root: str, wordnet) -> str:
    """The wnid of a root given as a synset name (physical_entity.n.01) or a wnid."""
    if is_wnid(root):
        return wnid_of(synset_of(root, wordnet))
    try:
        synset = wordnet.synset(root)
    except Exception:  # nltk raises WordNetError or ValueError for a name it does not know
        raise BuildError(f"root {root!r} is not a WordNet synset name like physical_entity.n.01") from None
    if synset.pos() != "n":
        raise BuildError(f"root {root!r} is not a noun synset")
    return wnid_of(synset)


class _PathFinder:
    """Every hypernym path from a synset up to the root, computed once per synset."""

    def __init__(self, root: str, graph: NounGraph):
        self.root = root
        self.graph = graph
        self._paths: dict[str, tuple[Path_, ...]] = {}

    def name(self, wnid: str) -> str:
        """The first lemma, `_` → space, as darknet's 9k.names."""
        return self.graph.names[wnid]

    def of(self, wnid: str) -> tuple[Path_, ...]:
        """All paths from below the root down to this synset; () when it does not descend from it."""
        if wnid in self._paths:
            return self._paths[wnid]
        self.graph.check(wnid)
        pending = [wnid]  # iterative post-order, so deep hierarchies never hit the recursion limit
        while pending:
            node = pending[-1]
            parents = self.graph.parents[node]
            todo = [p for p in parents if p not in self._paths and p != self.root]
            if todo:
                pending.extend(todo)
                continue
            pending.pop()
            paths: list[Path_] = []
            for p in parents:
                above = ((),) if p == self.root else self._paths[p]
                paths.extend(path + (node,) for path in above)
            self._paths[node] = tuple(dict.fromkeys(paths))
        return self._paths[wnid]
