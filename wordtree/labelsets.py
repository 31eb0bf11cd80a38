"""Dataset label names → WordNet ids, and the label sets shipped in `wordtree/data/`.

A label map file holds `name<TAB>wnid` lines (or bare `wnid` lines, then the name is the wnid);
a label set file holds `wnid` or `name<TAB>wnid` lines. `#` comments and blank lines are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
LABEL_MAPS = {"coco": DATA / "coco.map", "voc": DATA / "voc.map", "shapes": DATA / "shapes.map"}  # shapes: the demo
SYNSET_LISTS = {
    "imagenet1k": DATA / "imagenet1k.txt",  # ILSVRC-2012's 1,000 classes (timm's imagenet_synsets.txt)
    "imagenet21k": DATA / "imagenet21k.txt",  # ImageNet fall 2011, 21,843 (timm's imagenet21k_goog_synsets.txt)
    "imagenet_det200": DATA / "imagenet_det200.txt",
}
_WNID = re.compile(r"n[0-9]{8}")  # ASCII digits only: \d also matches ٠١٢… and other scripts


class LabelSetError(ValueError):
    """A label map or label set file that cannot be read, naming the file and line."""


def is_wnid(text: str) -> bool:
    """True for an ImageNet-style noun synset id: `n` and eight digits."""
    return _WNID.fullmatch(text) is not None


def read_label_map(path: str | Path) -> dict[str, str]:
    """{name: wnid} from `name<TAB>wnid` (or bare `wnid`) lines; a name given two wnids is an error."""
    mapping: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, name, wnid in _entries(path):
        if mapping.setdefault(name, wnid) != wnid:
            raise LabelSetError(
                f"{path}:{number}: {name!r} maps to {wnid} here but to {mapping[name]} on line {first_line[name]}"
            )
        first_line.setdefault(name, number)
    return mapping


def label_map(dataset: str) -> dict[str, str]:
    """The shipped name → wnid map of a dataset ("coco", "voc", "shapes")."""
    if dataset not in LABEL_MAPS:
        raise LabelSetError(f"no label map for {dataset!r}; known maps: {', '.join(sorted(LABEL_MAPS))}")
    return read_label_map(LABEL_MAPS[dataset])


def read_synsets(path: str | Path) -> list[str]:
    """The wnids of a label set file in order, duplicates removed (the first kept)."""
    return list(dict.fromkeys(wnid for _, _, wnid in _entries(path)))


def synset_lines(name_or_path: str | Path) -> tuple[Path, list[tuple[int, str]]]:
    """(file, [(line number, wnid)]) of a shipped set or a file, for errors that name the line."""
    key = str(name_or_path)
    path = SYNSET_LISTS.get(key) or LABEL_MAPS.get(key) or Path(key)
    if key not in SYNSET_LISTS and key not in LABEL_MAPS and not path.exists():
        raise LabelSetError(f"{key!r} is neither a file nor a shipped set ({', '.join(known_sets())})")
    return path, [(number, wnid) for number, _, wnid in _entries(path)]


def known_sets() -> list[str]:
    """Names accepted by `synset_set`: the shipped synset lists and label maps."""
    return sorted([*SYNSET_LISTS, *LABEL_MAPS])


def synset_set(name_or_path: str | Path) -> list[str]:
    """The wnids of a shipped set (imagenet1k, imagenet21k, imagenet_det200, coco, voc) or a file."""
    key = str(name_or_path)
    if key in SYNSET_LISTS:
        return read_synsets(SYNSET_LISTS[key])
    if key in LABEL_MAPS:
        return read_synsets(LABEL_MAPS[key])
    if not Path(key).exists():
        raise LabelSetError(f"{key!r} is neither a file nor a shipped set ({', '.join(known_sets())})")
    return read_synsets(key)


def _entries(path: str | Path) -> list[tuple[int, str, str]]:
    """(line number, name, wnid) for each entry line of a map or set file."""
    entries = []
    for number, line in enumerate(_read_lines(path), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        if len(fields) == 1:
            name = wnid = fields[0]
        elif len(fields) == 2 and fields[0]:
            name, wnid = fields
        else:
            raise LabelSetError(f"{path}:{number}: expected 'name<TAB>wnid' or 'wnid', got {line!r}")
        if not is_wnid(wnid):
            raise LabelSetError(
                f"{path}:{number}: {wnid!r} is not a WordNet noun id shaped like n02084071 (line {line!r})"
            )
        entries.append((number, name, wnid))
    return entries


def _read_lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
    except OSError as error:
        raise LabelSetError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise LabelSetError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return text.splitlines()
