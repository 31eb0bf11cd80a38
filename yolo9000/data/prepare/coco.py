"""COCO `instances_*.json` + image folder → SourceItems (boxes x0 y0 x1 y1, category → wnid).

COCO boxes are [x, y, w, h] in pixels; they become [x, y, x + w, y + h]. Crowd annotations are
kept with crowd=True (the training transform drops them). Images with no annotation are kept as
detection samples with no boxes unless `keep_empty=False`. The file is parsed once; a malformed
entry, or an image, category or annotation id given twice, is a PrepareError naming the entries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from yolo9000.data.prepare.items import PrepareError, SourceItem, checked_relative_file, file_size, json_number
from yolo9000.data.schema import invalid_wnids

LISTS = ("images", "annotations", "categories")


def load_annotation_file(path: Path) -> dict:
    """The parsed COCO json, or a PrepareError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PrepareError(f"{path}: cannot read COCO annotations: {error}") from error
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: not a COCO instances file: the top level is {json_type(data)}, not an object "
                           f"holding the lists {list(LISTS)}")
    missing = [k for k in LISTS if not isinstance(data.get(k), list)]
    if missing:
        raise PrepareError(f"{path}: not a COCO instances file, missing the lists {missing}")
    for key in LISTS:
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise PrepareError(f"{path}: {key}[{index}] is {json_type(entry)}, not an object: {entry!r:.80}")
    return data


def json_type(value) -> str:
    """How JSON names the type of a parsed value."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def is_id(value) -> bool:
    """COCO ids are integers (strings accepted); a boolean, float or null is not an id."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def is_positive_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_unique(path: Path, key: str, entries: list[dict], field: str) -> None:
    """Refuse two entries with the same value of `field`, naming both (entries without the field are left out)."""
    seen: dict = {}
    for index, entry in enumerate(entries):
        if field not in entry:
            continue
        value = entry[field]
        if value in seen:
            first = entries[seen[value]]
            raise PrepareError(f"{path}: {key}[{seen[value]}] and {key}[{index}] have the same {field} {value!r} "
                               f"({short(first)} and {short(entry)}); each needs its own")
        seen[value] = index


def short(entry: dict) -> str:
    """An entry in a few words, for messages."""
    return json.dumps({k: entry[k] for k in ("id", "file_name", "name", "image_id") if k in entry})


def category_wnids(path: Path, categories: list[dict], name_to_wnid: dict[str, str]) -> dict[int, str]:
    """COCO category id → wnid; an unknown name stops the run, listing every offender."""
    for index, category in enumerate(categories):
        if not is_id(category.get("id")) or not isinstance(category.get("name"), str):
            raise PrepareError(f"{path}: categories[{index}] needs an integer 'id' and a 'name', got {short(category)}")
    check_unique(path, "categories", categories, "id")
    names = {c["id"]: c["name"] for c in categories}
    unknown = sorted({name for name in names.values() if name not in name_to_wnid})
    if unknown:
        raise PrepareError(f"{path}: categories {unknown} are not in the label map; add them as "
                           "'name<TAB>wnid' lines to a map file and pass it with --label-map")
    bad = invalid_wnids(name_to_wnid[name] for name in names.values())
    if bad:
        raise PrepareError(f"the label map gives {bad} for categories of {path}, which are not WordNet ids "
                           "(n + 8 digits); fix those lines of the map")
    return {cid: name_to_wnid[name] for cid, name in names.items()}


def checked_images(path: Path, images: list[dict]) -> list[dict]:
    """The images, each with an id, a file name inside the image folder and, if given, a positive size."""
    for index, image in enumerate(images):
        where = f"{path}: images[{index}]"
        if not is_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise PrepareError(f"{where} needs an integer 'id' and a 'file_name', got {short(image)}")
        checked_relative_file(image["file_name"], where)
        for side in ("width", "height"):
            value = image.get(side)
            if value is not None and not is_positive_integer(value):
                raise PrepareError(f"{where} ({image['file_name']}): '{side}' must be a positive integer, got {value!r}")
    check_unique(path, "images", images, "id")
    check_unique(path, "images", images, "file_name")
    return images


def parse_annotation(path: Path, index: int, ann: dict, image_ids: set, wnids: dict) -> tuple:
    """(image id, box x0 y0 x1 y1, wnid, crowd) of one annotation, or a PrepareError naming it."""
    where = f"{path}: annotation {ann.get('id', '?')} (annotations[{index}], image {ann.get('image_id', '?')})"
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (json_number(v) for v in bbox)
    except (TypeError, ValueError):
        raise PrepareError(f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}") from None
    image_id, category_id, crowd = ann.get("image_id"), ann.get("category_id"), ann.get("iscrowd", 0)
    if "id" in ann and not is_id(ann["id"]):
        raise PrepareError(f"{where}: 'id' must be an integer, got {ann['id']!r}")
    if not is_id(image_id) or image_id not in image_ids:
        raise PrepareError(f"{where}: image_id is not among the file's images")
    if not is_id(category_id) or category_id not in wnids:
        raise PrepareError(f"{where}: category_id {category_id!r} is not among the file's categories")
    if not isinstance(crowd, int) or crowd not in (0, 1):
        raise PrepareError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
    return image_id, (x, y, x + w, y + h), wnids[category_id], bool(crowd)


def image_key(source: str, image_id) -> str:
    """`coco-000000391895` for integer ids; other ids with dots replaced."""
    if isinstance(image_id, int):
        return f"{source}-{image_id:012d}"
    return f"{source}-{str(image_id).replace('.', '_')}"


def read_coco(ann_path: str | Path, images_dir: str | Path, name_to_wnid: dict[str, str],
              source: str = "coco", keep_empty: bool = True) -> list[SourceItem]:
    """One SourceItem per image of a COCO instances file, sorted by key."""
    ann_path, images_dir = Path(ann_path), Path(images_dir)
    if not images_dir.is_dir():
        raise PrepareError(f"{images_dir} is not a folder: --images must be the folder of the split's images")
    data = load_annotation_file(ann_path)
    wnids = category_wnids(ann_path, data["categories"], name_to_wnid)
    images = checked_images(ann_path, data["images"])
    per_image = {image["id"]: [] for image in images}
    for index, ann in enumerate(data["annotations"]):
        image_id, *rest = parse_annotation(ann_path, index, ann, per_image.keys(), wnids)
        per_image[image_id].append(rest)
    check_unique(ann_path, "annotations", data["annotations"], "id")
    items = []
    for image in images:
        anns, file = per_image[image["id"]], image["file_name"]
        if not anns and not keep_empty:
            continue
        size = (image["width"], image["height"]) if "width" in image and "height" in image else None
        items.append(SourceItem(
            key=image_key(source, image["id"]), source=source, file=file, path=str(images_dir / file),
            boxes=np.array([a[0] for a in anns], np.float32).reshape(-1, 4), labels=[a[1] for a in anns],
            crowd=[a[2] for a in anns], difficult=[False] * len(anns),
            size_estimate=file_size(images_dir / file), annotated_size=size,
        ))
    return sorted(items, key=lambda item: item.key)
