"""PASCAL VOC folder (`Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/<split>.txt`) → SourceItems.

VOC pixel coordinates are 1-based: pixel (1, 1) is the top-left one. They become 0-based by
subtracting 1 from all four (x0 = xmin − 1, y0 = ymin − 1, x1 = xmax − 1, y1 = ymax − 1), as
darknet's `voc_label.py` does (x = (xmin + xmax) / 2 − 1, w = xmax − xmin) and as its VOC
results writer undoes (darknet-notes: eval=voc adds +1). `difficult` is kept as a flag. An
annotation with no `<object>` is kept as a detection sample with no boxes (a negative), and
counted by the writer; a malformed value or an id listed twice in the split is a PrepareError.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from yolo9000.data.prepare.items import PrepareError, SourceItem, checked_relative_file, file_size, text_number
from yolo9000.data.schema import invalid_wnids

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in `ImageSets/Main/<split>.txt`; an id listed twice is an error naming both lines."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise PrepareError(f"{path} not found: --root must be a VOC folder (e.g. VOC2012) holding "
                           f"ImageSets/Main/{split}.txt; check --root and --split")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PrepareError(f"{path}: cannot read the split's image list: {error}") from None
    line_of: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        image_id = checked_relative_file(line.split()[0], f"{path}:{number}")
        if image_id in line_of:
            raise PrepareError(f"{path}: image {image_id} is listed twice, on lines {line_of[image_id]} and {number}")
        line_of[image_id] = number
    return list(line_of)


def parse_object(path: Path, index: int, obj: ET.Element) -> tuple[str, list[float], bool]:
    """(class name, 0-based box, difficult) of one `<object>`, or a PrepareError naming it."""
    name = (obj.findtext("name") or "").strip()
    where = f"{path}: object {index} ({name or 'no name'})"
    if not name:
        raise PrepareError(f"{where}: missing <name>")
    bndbox = obj.find("bndbox")
    try:
        box = [text_number(bndbox.findtext(tag)) - 1.0 for tag in BOX_TAGS]
    except (AttributeError, ValueError):
        raise PrepareError(f"{where}: <bndbox> needs {', '.join(BOX_TAGS)} as finite numbers in digits 0-9") from None
    difficult = (obj.findtext("difficult") or "0").strip()
    if difficult not in ("0", "1"):
        raise PrepareError(f"{where}: <difficult> must be 0 or 1, got {difficult!r}")
    return name, box, difficult == "1"


def parse_size(path: Path, root: ET.Element) -> tuple[int, int] | None:
    """(width, height) of `<size>`, None when the file has none (it only serves to notice a mismatch)."""
    if root.find("size") is None:
        return None
    texts = [(root.findtext(f"size/{side}") or "").strip() for side in ("width", "height")]
    if not all(text.isascii() and text.isdigit() and int(text) > 0 for text in texts):
        raise PrepareError(f"{path}: <size> needs a positive <width> and <height> in digits 0-9, got {texts}")
    return int(texts[0]), int(texts[1])


def parse_annotation(path: Path) -> tuple[str | None, tuple[int, int] | None, list[tuple[str, list[float], bool]]]:
    """(image file name or None, (width, height) or None, objects) of one VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise PrepareError(f"{path}: cannot read VOC annotation: {error}") from error
    objects = [parse_object(path, i, obj) for i, obj in enumerate(root.findall("object"))]
    filename = (root.findtext("filename") or "").strip() or None
    if filename is not None:
        checked_relative_file(filename, f"{path}: <filename>")
    return filename, parse_size(path, root), objects


def read_voc(root: str | Path, name_to_wnid: dict[str, str], split: str = "trainval",
             source: str = "voc") -> list[SourceItem]:
    """One SourceItem per image id of the split, sorted by key; unknown class names stop the run."""
    root = Path(root)
    parsed = {image_id: parse_annotation(root / "Annotations" / f"{image_id}.xml")
              for image_id in read_split(root, split)}
    unknown = sorted({name for _, _, objects in parsed.values() for name, _, _ in objects} - set(name_to_wnid))
    if unknown:
        raise PrepareError(f"{root / 'Annotations'}: class names {unknown} are not in the label map; add them "
                           "as 'name<TAB>wnid' lines to a map file and pass it with --label-map")
    bad = invalid_wnids(name_to_wnid[name] for _, _, objects in parsed.values() for name, _, _ in objects)
    if bad:
        raise PrepareError(f"the label map gives {bad} for classes of {root / 'Annotations'}, which are not "
                           "WordNet ids (n + 8 digits); fix those lines of the map")
    items = []
    for image_id, (filename, size, objects) in parsed.items():
        file = f"JPEGImages/{filename or image_id + '.jpg'}"
        items.append(SourceItem(
            key=f"{source}-{image_id.replace('.', '_')}", source=source, file=file, path=str(root / file),
            boxes=np.array([box for _, box, _ in objects], np.float32).reshape(-1, 4),
            labels=[name_to_wnid[name] for name, _, _ in objects], crowd=[False] * len(objects),
            difficult=[difficult for _, _, difficult in objects], size_estimate=file_size(root / file),
            annotated_size=size,
        ))
    return sorted(items, key=lambda item: item.key)
