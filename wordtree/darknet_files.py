"""Darknet's tree files, read and written byte for byte.

`.tree`: one `wnid parent_index` line per node (-1 for a root); `.names`: one human name per
line; `.labels`: one wnid per line, in node order. darknet's own 9k.tree round-trips exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

from atomicio import write_files
from wordtree.labelsets import is_wnid
from wordtree.tree import TreeError, WordTree

_INDEX = re.compile(r"-?[0-9]+")  # ASCII digits only: int() would also read ٣ or ³


def read_tree_file(path: str | Path) -> tuple[list[str], list[int]]:
    """(wnids, parent indices) from a `.tree` file; a malformed line is named in the error."""
    wnids, parents = [], []
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split()
        if len(fields) != 2 or not _INDEX.fullmatch(fields[1]):
            raise TreeError(f"{path}:{number}: expected 'wnid parent_index', got {line!r}")
        if not is_wnid(fields[0]):
            raise TreeError(f"{path}:{number}: {fields[0]!r} is not a WordNet id like n02084071 (line {line!r})")
        wnids.append(fields[0])
        parents.append(int(fields[1]))
    return wnids, parents


def read_lines_file(path: str | Path) -> list[str]:
    """The lines of a `.names` or `.labels` file, without their newline."""
    return _lines(path)


def load_tree(tree_path: str | Path, names_path: str | Path | None = None) -> WordTree:
    """A WordTree from a darknet `.tree`, with human names from a `.names` file when given.

    Without `names_path`, a `.names` file beside the tree (same stem) is used if present.
    """
    tree_path = Path(tree_path)
    wnids, parents = read_tree_file(tree_path)
    if names_path is None and tree_path.with_suffix(".names").exists():
        names_path = tree_path.with_suffix(".names")
    names = read_lines_file(names_path) if names_path is not None else None
    if names is not None and len(names) != len(wnids):
        raise TreeError(f"{names_path} has {len(names)} lines but {tree_path} has {len(wnids)} nodes")
    try:
        return WordTree.from_parents(wnids, parents, names)
    except TreeError as error:
        raise TreeError(f"{tree_path}: {error}") from None


def save_tree(tree: WordTree, out_dir: str | Path, stem: str = "wordtree") -> dict[str, Path]:
    """Write `stem.tree`, `stem.names` and `stem.labels` into out_dir, all three or none; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {
        "tree": "".join(f"{w} {p}\n" for w, p in zip(tree.wnids, tree.parent.tolist())),
        "names": "".join(f"{n}\n" for n in tree.names),
        "labels": "".join(f"{w}\n" for w in tree.wnids),
    }
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in texts}
    write_files({paths[kind]: _writer(text) for kind, text in texts.items()})
    return paths


def _lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
    except OSError as error:
        raise TreeError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise TreeError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return text.splitlines()


def _writer(text: str):
    """Writes `text` as UTF-8 to the path it is given (atomicio's temporary file)."""
    return lambda path: path.write_text(text, encoding="utf-8")
