"""ImageNet class folders (`<root>/n01440764/*.JPEG`) or one tar per synset (`<root>/n01440764.tar`,
ImageNet-21k) → SourceItems with `image_label` = the folder's wnid.

With a folder of ILSVRC / ImageNet-DET bounding-box XML files (`<name>` holds the wnid, found by
image file stem anywhere under the folder), an image that has boxes becomes a detection sample:
its boxes and their wnids, no image label. ILSVRC coordinates are used as given (pixels, no shift).

Refused, naming the offenders: a folder, tar or box name that is not a wnid, an empty class folder
or tar, a folder inside a class folder, and a file beside the class folders that is not a tar.
"""

from __future__ import annotations


import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from yolo9000.data.prepare.items import PrepareError, SourceItem, file_size, text_number
from yolo9000.data.schema import WNID_PATTERN

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
    others = sorted(p.name for p in entries if p not in folders and p not in tars)
    if others:
        raise PrepareError(f"{root}: {others[:10]} are neither class folders nor synset tars; move them out of "
                           "--root (files whose names start with '.' are ignored)")
    if not folders and not tars:
        raise PrepareError(f"{root}: no class folders (n01440764/) and no synset tars (n01440764.tar) found")
    return folders, tars


def folder_images(folder: Path) -> list[Path]:
    """The image files of a class folder (names starting with '.' ignored); a sub-folder is an error."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    inner = [p.name for p in entries if p.is_dir()]
    if inner:
        raise PrepareError(f"{folder}: holds folders {inner[:10]}; a class folder holds its images only")
    return entries


def tar_images(tar_path: Path) -> list[tuple[str, int, int]]:
    """(member name, data offset, size) of each file in a synset tar, read from the headers only."""
    try:
        with tarfile.open(tar_path, "r:") as tar:
            return [(m.name, m.offset_data, m.size) for m in tar.getmembers()
                    if m.isfile() and not Path(m.name).name.startswith(".")]
    except (OSError, tarfile.TarError) as error:
        raise PrepareError(f"{tar_path}: cannot read synset tar ({error}); is it an uncompressed tar?") from None


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
            box = [text_number(obj.find("bndbox").findtext(tag)) for tag in BOX_TAGS]
        except (AttributeError, ValueError):
            raise PrepareError(f"{path}: object {index} ({name}): <bndbox> needs {', '.join(BOX_TAGS)} as finite "
                               "numbers in digits 0-9") from None
        objects.append((name, box))
    return objects


def read_box_folder(boxes_dir: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Objects per image stem of every `*.xml` under boxes_dir; non-wnid names stop the run."""
    if not Path(boxes_dir).is_dir():
        raise PrepareError(f"{boxes_dir} is not a folder: --boxes must be a folder of ILSVRC bounding-box XML files")
    boxes = {path.stem: parse_box_file(path) for path in sorted(Path(boxes_dir).rglob("*.xml"))}
    if not boxes:
        raise PrepareError(f"{boxes_dir}: no *.xml bounding-box files found (searched recursively)")
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
    """One SourceItem per image of the class folders and synset tars under root."""
    root = Path(root)
    folders, tars = list_synsets(root)
    boxes = read_box_folder(Path(boxes_dir)) if boxes_dir is not None else {}
    if allowed_wnids is not None:
        used = {p.name for p in folders} | {p.stem for p in tars} | {n for o in boxes.values() for n, _ in o}
        unknown = sorted(used - set(allowed_wnids))
        if unknown:
            raise PrepareError(f"{root}: wnids {unknown[:20]} ({len(unknown)} in all) are not in the allowed "
                               "synset list; remove those folders or add the wnids to the list")
    items, empty = [], []
    for folder in folders:
        images = folder_images(folder)
        empty += [] if images else [f"{folder.name}/"]
        for path in images:
            items.append(make_item(source, f"{folder.name}/{path.name}", path, folder.name,
                                   boxes.get(path.stem), None, file_size(path)))
    for tar_path in tars:
        members = tar_images(tar_path)
        empty += [] if members else [tar_path.name]
        for name, offset, size in members:
            items.append(make_item(source, f"{tar_path.name}/{name}", tar_path, tar_path.stem,
                                   boxes.get(Path(name).stem), (offset, size), size))
    if empty:
        raise PrepareError(f"{root}: {empty[:10]} ({len(empty)} in all) hold no images: a class without images "
                           "would be missing from the data unnoticed; remove them or add their images")
    return items

