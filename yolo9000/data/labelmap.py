"""wnid -> node index, from a WordTree or a flat class list; refuses unknown wnids, listing them.

Shards hold WordNet ids, never indices (DESIGN.md, Contracts): the trainer builds a LabelMap
at start-up and checks every manifest before the first step.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wordtree.tree import WordTree
from yolo9000.data.schema import read_manifest


class UnknownLabelError(ValueError):
    """Labels in the data that the tree does not know; the message lists every one and where."""


class LabelMap:
    """Maps wnids to node (or class) indices."""

    def __init__(self, wnids: list[str], what: str = "class list"):
        self.wnids = list(wnids)
        self.what = what
        self.index_of = {wnid: i for i, wnid in enumerate(self.wnids)}

    @classmethod
    def from_tree(cls, tree: WordTree) -> "LabelMap":
        """Node indices of a WordTree."""
        return cls(list(tree.wnids), what=f"WordTree of {len(tree)} nodes")

    @classmethod
    def from_classes(cls, wnids: list[str]) -> "LabelMap":
        """Indices of a flat class list (position in the list)."""
        return cls(wnids, what=f"class list of {len(wnids)} wnids")

    def __len__(self) -> int:
        return len(self.wnids)

    def unknown(self, wnids: Iterable[str]) -> list[str]:
        """The distinct wnids not in this map, sorted."""
        return sorted({w for w in wnids if w not in self.index_of})

    def check(self, wnids: Iterable[str], where: str = "labels") -> None:
        """Raise UnknownLabelError listing every wnid of `wnids` not in the map."""
        missing = self.unknown(wnids)
        if missing:
            raise UnknownLabelError(
                f"{len(missing)} wnid(s) in {where} are not in the {self.what}: {', '.join(missing)}. "
                "Build the tree with these synsets (wordtree build --synsets ...) or drop them from the data"
            )

    def check_manifests(self, paths: Iterable[str | Path]) -> None:
        """Check the box labels and image labels of every manifest; one error lists all offenders per manifest."""
        problems = []
        for path in paths:
            missing = self.unknown(manifest_wnids(path))
            if missing:
                problems.append(f"{path}: {', '.join(missing)}")
        if problems:
            raise UnknownLabelError(
                f"wnids not in the {self.what}:\n  " + "\n  ".join(problems)
                + "\nBuild the tree with these synsets (wordtree build --synsets ...) or drop them from the data"
            )

    def indices(self, wnids: list[str], where: str = "labels") -> np.ndarray:
        """Indices of wnids (int64); unknown wnids raise, listing them."""
        try:
            return np.array([self.index_of[w] for w in wnids], dtype=np.int64)
        except KeyError:
            self.check(wnids, where)
            raise


def manifest_wnids(path: str | Path) -> set[str]:
    """Every wnid used in a manifest.parquet: box labels and image labels."""
    table = read_manifest(path, ["labels", "image_label"])
    box_labels = table.column("labels").combine_chunks().flatten().to_pylist()
    image_labels = [w for w in table.column("image_label").to_pylist() if w is not None]
    return set(box_labels) | set(image_labels)
