"""ImageNet class folders (`<root>/n01440764/*.JPEG`) or one tar per synset (`<root>/n01440764.tar`,
ImageNet-21k) → SourceItems with `image_label` = the folder's wnid.

With a folder of ILSVRC / ImageNet-DET bounding-box XML files (`<name>` holds the wnid, found by
image file stem anywhere under the folder), an image that has boxes becomes a detection sample:
its boxes and their wnids, no image label. ILSVRC coordinates are used as given (pixels, no shift).
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from yolo9000.data.schema import WNID_PATTERN
from yolo9000.data.shardwriter import PrepareError, SourceItem, file_size

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def list_synsets(root: Path) -> tuple[list[Path], list[Path]]:
    """(class folders, synset tar files) under root; a name that is not a wnid stops the run."""
    if not root.is_dir():
        raise PrepareError(f"{root} is not a folder: --root must be ImageNet's train folder or a folder of "
                           "<wnid>.tar files")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in entries if p.is_dir()]
    tars = [p for p in entries if p.is_file() and p.suffix == ".tar"]
    offenders = sorted(p.name for p in folders if not WNID_PATTERN.fullmatch(p.name))
    offenders += sorted(p.name for p in tars if not WNID_PATTERN.fullmatch(p.stem))
    if offenders:
        raise PrepareError(f"{root}: {offenders} are not WordNet ids (n + 8 digits); every class folder or "
                           "tar must be named by its synset's wnid, e.g. n01440764/ or n01440764.tar")
    if not folders and not tars:
        raise PrepareError(f"{root}: no class folders (n01440764/) and no synset tars (n01440764.tar) found")
    return folders, tars


def tar_images(tar_path: Path) -> list[tuple[str, int, int]]:
    """(member name, data offset, size) of each file in a synset tar, read from the headers only."""
    try:
        with tarfile.open(tar_path) as tar:
            return [(m.name, m.offset_data, m.size) for m in tar.getmembers()
                    if m.isfile() and not Path(m.name).name.startswith(".")]
    except (OSError, tarfile.TarError) as error:
        raise PrepareError(f"{tar_path}: cannot read synset tar: {error}") from error


def parse_box_file(path: Path) -> list[tuple[str, list[float]]]:
    """(wnid, box x0 y0 x1 y1) per `<object>` of one ILSVRC XML file, or a PrepareError naming it."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise PrepareError(f"{path}: cannot read bounding-box XML: {error}") from error
    objects = []
    for index, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            box = [float(obj.find("bndbox").findtext(tag)) for tag in BOX_TAGS]
        except (AttributeError, TypeError, ValueError):
            raise PrepareError(f"{path}: object {index} ({name}): <bndbox> needs numeric "
                               f"{', '.join(BOX_TAGS)}") from None
        objects.append((name, box))
    return objects


def read_box_folder(boxes_dir: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Objects per image stem of every `*.xml` under boxes_dir; non-wnid names stop the run."""
    boxes = {path.stem: parse_box_file(path) for path in sorted(Path(boxes_dir).rglob("*.xml"))}
    offenders = sorted({name for objects in boxes.values() for name, _ in objects
                        if not WNID_PATTERN.fullmatch(name)})
    if offenders:
        raise PrepareError(f"{boxes_dir}: object names {offenders[:20]} are not WordNet ids; ILSVRC box files "
                           "name each object by its wnid")
    return {stem: objects for stem, objects in boxes.items() if objects}


def make_item(source: str, file: str, path: Path, label: str, objects: list | None,
              member: tuple[int, int] | None, size: int) -> SourceItem:
    """A classification item, or a detection item when the image has box objects."""
    stem = Path(file).stem
    item = SourceItem(key=f"{source}-{stem.replace('.', '_')}", source=source, file=file, path=str(path),
                      member=member, size_estimate=size)
    if objects:
        item.boxes = np.array([box for _, box in objects], np.float32).reshape(-1, 4)
        item.labels = [name for name, _ in objects]
        item.crowd, item.difficult = [False] * len(objects), [False] * len(objects)
    else:
        item.image_label = label
    return item


def read_imagenet(root: str | Path, boxes_dir: str | Path | None = None, source: str = "imagenet",
                  allowed_wnids: set[str] | None = None) -> list[SourceItem]:
    """One SourceItem per image of the class folders and synset tars under root, sorted by key."""
    root = Path(root)
    folders, tars = list_synsets(root)
    boxes = read_box_folder(Path(boxes_dir)) if boxes_dir is not None else {}
    if allowed_wnids is not None:
        used = {p.name for p in folders} | {p.stem for p in tars} | {n for o in boxes.values() for n, _ in o}
        unknown = sorted(used - set(allowed_wnids))
        if unknown:
            raise PrepareError(f"{root}: wnids {unknown[:20]} ({len(unknown)} in all) are not in the allowed "
                               "synset list; remove those folders or add the wnids to the list")
    items = []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            items.append(make_item(source, f"{folder.name}/{path.name}", path, folder.name,
                                   boxes.get(path.stem), None, file_size(path)))
    for tar_path in tars:
        for name, offset, size in tar_images(tar_path):
            items.append(make_item(source, f"{tar_path.name}/{name}", tar_path, tar_path.stem,
                                   boxes.get(Path(name).stem), (offset, size), size))
    return sorted(items, key=lambda item: item.key)
