"""COCO `instances_*.json` + image folder → SourceItems (boxes x0 y0 x1 y1, category → wnid).

COCO boxes are [x, y, w, h] in pixels; they become [x, y, x + w, y + h]. Crowd annotations are
kept with crowd=True (the training transform drops them). Images with no annotation are kept as
detection samples with no boxes unless `keep_empty=False`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from yolo9000.data.schema import invalid_wnids
from yolo9000.data.shardwriter import PrepareError, SourceItem, file_size


def load_annotation_file(path: Path) -> dict:
    """The parsed COCO json, or a PrepareError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise PrepareError(f"{path}: cannot read COCO annotations: {error}") from error
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise PrepareError(f"{path}: not a COCO instances file, missing the lists {missing}")
    return data


def category_wnids(path: Path, categories: list, name_to_wnid: dict[str, str]) -> dict[int, str]:
    """COCO category id → wnid; an unknown name stops the run, listing every offender."""
    try:
        names = {int(c["id"]): str(c["name"]) for c in categories}
    except (KeyError, TypeError, ValueError) as error:
        raise PrepareError(f"{path}: every category needs an integer 'id' and a 'name' ({error})") from error
    unknown = sorted({name for name in names.values() if name not in name_to_wnid})
    if unknown:
        raise PrepareError(f"{path}: categories {unknown} are not in the label map; add them as "
                           "'name<TAB>wnid' lines to a map file and pass it with --label-map")
    bad = invalid_wnids(name_to_wnid[name] for name in names.values())
    if bad:
        raise PrepareError(f"the label map gives {bad} for categories of {path}, which are not WordNet ids "
                           "(n + 8 digits); fix those lines of the map")
    return {cid: name_to_wnid[name] for cid, name in names.items()}


def parse_annotation(path: Path, ann: dict, image_ids: set, wnids: dict[int, str]) -> tuple:
    """(image id, box x0 y0 x1 y1, wnid, crowd) of one annotation, or a PrepareError naming it."""
    where = f"{path}: annotation {ann.get('id', '?')} (image {ann.get('image_id', '?')})"
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise PrepareError(f"{where}: 'bbox' must be 4 numbers [x, y, width, height], got {bbox!r}") from None
    if ann.get("image_id") not in image_ids:
        raise PrepareError(f"{where}: image_id is not among the file's images")
    if ann.get("category_id") not in wnids:
        raise PrepareError(f"{where}: category_id {ann.get('category_id')!r} is not among the file's categories")
    return ann["image_id"], (x, y, x + w, y + h), wnids[ann["category_id"]], bool(ann.get("iscrowd", 0))


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
    try:
        files = {image["id"]: str(image["file_name"]) for image in data["images"]}
        sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]
                 if "width" in image and "height" in image}
    except (KeyError, TypeError) as error:
        raise PrepareError(f"{ann_path}: every image needs an 'id' and a 'file_name' ({error})") from error
    per_image = {image_id: [] for image_id in files}
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise PrepareError(f"{ann_path}: an annotation is not an object: {ann!r}")
        image_id, *rest = parse_annotation(ann_path, ann, per_image.keys(), wnids)
        per_image[image_id].append(rest)
    items = []
    for image_id, file in files.items():
        anns = per_image[image_id]
        if not anns and not keep_empty:
            continue
        items.append(SourceItem(
            key=image_key(source, image_id), source=source, file=file, path=str(images_dir / file),
            boxes=np.array([a[0] for a in anns], np.float32).reshape(-1, 4), labels=[a[1] for a in anns],
            crowd=[a[2] for a in anns], difficult=[False] * len(anns),
            size_estimate=file_size(images_dir / file), annotated_size=sizes.get(image_id),
        ))
    return sorted(items, key=lambda item: item.key)
