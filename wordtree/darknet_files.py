"""Darknet's tree files, read and written byte for byte.

`.tree`: one `wnid parent_index` line per node (-1 for a root); `.names`: one human name per
line; `.labels`: one wnid per line, in node order. darknet's own 9k.tree round-trips exactly.
"""

from __future__ import annotations

from pathlib import Path

from wordtree.tree import TreeError, WordTree


def read_tree_file(path: str | Path) -> tuple[list[str], list[int]]:
    """(wnids, parent indices) from a `.tree` file; a malformed line is named in the error."""
    wnids, parents = [], []
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split()
        if len(fields) != 2 or not _is_int(fields[1]):
            raise TreeError(f"{path}:{number}: expected 'wnid parent_index', got {line!r}")
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


def write_tree_file(tree: WordTree, path: str | Path) -> None:
    _write(path, "".join(f"{w} {p}\n" for w, p in zip(tree.wnids, tree.parent.tolist())))


def write_names_file(tree: WordTree, path: str | Path) -> None:
    _write(path, "".join(f"{n}\n" for n in tree.names))


def write_labels_file(tree: WordTree, path: str | Path) -> None:
    _write(path, "".join(f"{w}\n" for w in tree.wnids))


def save_tree(tree: WordTree, out_dir: str | Path, stem: str = "wordtree") -> dict[str, Path]:
    """Write `stem.tree`, `stem.names` and `stem.labels` into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("tree", "names", "labels")}
    write_tree_file(tree, paths["tree"])
    write_names_file(tree, paths["names"])
    write_labels_file(tree, paths["labels"])
    return paths


def _lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TreeError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise TreeError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return text.splitlines()


def _write(path: str | Path, text: str) -> None:
    """Write to a temporary name, then rename, so a failed write never leaves half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()
