"""Builders of tiny real datasets in the COCO, VOC and ImageNet layouts (real JPEGs of drawn shapes).

Each builder writes the files and returns the ground truth it wrote, per image, in the shard
contract's terms (0-based x0 y0 x1 y1 pixels, wnids), computed here and not by the code under test.
Reusable by other tests: `from datasets import build_coco` from tests/data, or load this file by path.
"""

from __future__ import annotations

import io
import json
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
COCO_NAMES = ["person", "dog", "cat", "car", "bicycle"]
VOC_NAMES = ["person", "dog", "cat", "horse", "boat"]
IMAGENET_WNIDS = ["n01440764", "n01443537", "n02084071"]


def read_map(path: Path) -> dict[str, str]:
    """`name<TAB>wnid` lines (with # comments) as a dict; a test-side reader independent of wordtree."""
    pairs = [line.split("\t") for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {name.strip(): wnid.strip() for name, wnid in pairs}


COCO_MAP = read_map(REPO / "wordtree" / "data" / "coco.map")
VOC_MAP = read_map(REPO / "wordtree" / "data" / "voc.map")


@dataclass
class Truth:
    """What one image of a built dataset holds, as the shard record should hold it."""

    file: str
    width: int
    height: int
    data: bytes = field(repr=False)
    boxes: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    crowd: list[bool] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    image_label: str | None = None


def shapes_image(width: int, height: int, seed: int) -> Image.Image:
    """An RGB image of a few filled rectangles and ellipses on a coloured background."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width - 4)), int(rng.integers(0, height - 4))
        x1, y1 = int(rng.integers(x0 + 2, width)), int(rng.integers(y0 + 2, height))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=colour)
    return image


def image_bytes(image: Image.Image, fmt: str = "JPEG") -> bytes:
    """Encoded bytes of an image."""
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def random_boxes(rng: np.random.Generator, width: int, height: int, count: int) -> np.ndarray:
    """(count, 4) integer-valued boxes x0 y0 x1 y1 inside a width x height image, at least 2 px wide."""
    x0 = rng.integers(0, width - 2, count)
    y0 = rng.integers(0, height - 2, count)
    x1 = np.minimum(x0 + 2 + rng.integers(0, width, count), width)
    y1 = np.minimum(y0 + 2 + rng.integers(0, height, count), height)
    return np.stack([x0, y0, x1, y1], axis=1).astype(float)


def build_coco(root: Path, n_images: int = 24, seed: int = 0) -> tuple[Path, Path, dict[str, Truth]]:
    """(annotation json, image folder, truth per file name) of a COCO-layout dataset.

    Image 1 has no annotation; one annotation is a crowd one; image sizes vary.
    """
    rng = np.random.default_rng(seed)
    images_dir = root / "train2017"
    images_dir.mkdir(parents=True)
    categories = [{"id": 10 + i, "name": name, "supercategory": "x"} for i, name in enumerate(COCO_NAMES)]
    images, annotations, truths = [], [], {}
    for n in range(n_images):
        image_id = 1000 + 7 * n
        width, height = int(rng.integers(40, 130)), int(rng.integers(32, 110))
        file = f"{image_id:012d}.jpg"
        data = image_bytes(shapes_image(width, height, seed * 1000 + n))
        (images_dir / file).write_bytes(data)
        images.append({"id": image_id, "file_name": file, "width": width, "height": height})
        count = 0 if n == 1 else int(rng.integers(1, 4))
        boxes = random_boxes(rng, width, height, count)
        cats = rng.integers(0, len(COCO_NAMES), count)
        truth = Truth(file, width, height, data)
        for box, cat in zip(boxes, cats):
            crowd = len(annotations) == 3
            x0, y0, x1, y1 = box.tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 10 + int(cat),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": int(crowd), "area": 1.0})
            truth.boxes.append([x0, y0, x1, y1])
            truth.labels.append(COCO_MAP[COCO_NAMES[cat]])
            truth.crowd.append(crowd)
            truth.difficult.append(False)
        truths[file] = truth
    ann_path = root / "instances_train2017.json"
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann_path, images_dir, truths


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, list[float], bool]]) -> str:
    """A VOC annotation file; boxes given 0-based are written 1-based (xmin = x0 + 1)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for name, box, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = str(int(value + 1))
    return ET.tostring(root, encoding="unicode")


def build_voc(root: Path, n_images: int = 24, split: str = "trainval", seed: int = 1) -> dict[str, Truth]:
    """Truth per file (`JPEGImages/<id>.jpg`) of a VOC-layout dataset under root; every 4th box difficult."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    truths, ids, n_boxes = {}, [], 0
    for n in range(n_images):
        image_id = f"2008_{n:06d}"
        width, height = int(rng.integers(40, 130)), int(rng.integers(32, 110))
        data = image_bytes(shapes_image(width, height, seed * 1000 + n))
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(data)
        # VOC xmin >= 1, xmax <= width: 0-based x0 >= 0, x1 <= width - 1
        boxes = random_boxes(rng, width - 1, height - 1, int(rng.integers(1, 4)))
        names = [VOC_NAMES[i] for i in rng.integers(0, len(VOC_NAMES), len(boxes))]
        difficult = [(n_boxes + i) % 4 == 3 for i in range(len(boxes))]
        n_boxes += len(boxes)
        objects = list(zip(names, boxes.tolist(), difficult))
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", width, height, objects))
        truths[f"JPEGImages/{image_id}.jpg"] = Truth(
            f"JPEGImages/{image_id}.jpg", width, height, data, boxes=boxes.tolist(),
            labels=[VOC_MAP[name] for name in names], crowd=[False] * len(boxes), difficult=difficult)
        ids.append(image_id)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return truths


def imagenet_images(wnids: list[str], per_class: int, seed: int) -> list[tuple[str, str, Truth]]:
    """(wnid, file stem, truth with file left blank) for per_class shape images of each wnid."""
    rng = np.random.default_rng(seed)
    out = []
    for c, wnid in enumerate(wnids):
        for n in range(per_class):
            width, height = int(rng.integers(40, 130)), int(rng.integers(32, 110))
            data = image_bytes(shapes_image(width, height, seed * 1000 + c * 100 + n))
            stem = f"{wnid}_{100 + n}"
            out.append((wnid, stem, Truth("", width, height, data, image_label=wnid)))
    return out


def build_imagenet_folders(root: Path, wnids: list[str] = IMAGENET_WNIDS, per_class: int = 8,
                           seed: int = 2) -> dict[str, Truth]:
    """Truth per file (`<wnid>/<stem>.JPEG`) of the class-folder layout (root = the train folder)."""
    truths = {}
    for wnid, stem, truth in imagenet_images(wnids, per_class, seed):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        (root / wnid / f"{stem}.JPEG").write_bytes(truth.data)
        truth.file = f"{wnid}/{stem}.JPEG"
        truths[truth.file] = truth
    return truths


def build_imagenet_tars(root: Path, wnids: list[str] = IMAGENET_WNIDS, per_class: int = 8,
                        seed: int = 3) -> dict[str, Truth]:
    """Truth per file (`<wnid>.tar/<stem>.JPEG`) of ImageNet-21k's one-tar-per-synset layout."""
    root.mkdir(parents=True, exist_ok=True)
    truths, tars = {}, {}
    for wnid, stem, truth in imagenet_images(wnids, per_class, seed):
        tar = tars.get(wnid) or tars.setdefault(wnid, tarfile.open(root / f"{wnid}.tar", "w"))
        info = tarfile.TarInfo(f"{stem}.JPEG")
        info.size = len(truth.data)
        tar.addfile(info, io.BytesIO(truth.data))
        truth.file = f"{wnid}.tar/{stem}.JPEG"
        truths[truth.file] = truth
    for tar in tars.values():
        tar.close()
    return truths


def imagenet_box_xml(stem: str, width: int, height: int, objects: list[tuple[str, list[float]]]) -> str:
    """An ILSVRC bounding-box file: `<name>` holds the wnid; coordinates written as given."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = stem
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    for name, box in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, tag).text = str(int(value))
    return ET.tostring(root, encoding="unicode")


def read_shards(out_dir: Path, prefix: str) -> dict[str, tuple[str, object]]:
    """(shard file name, SampleRecord) per source file, read back with webdataset in shard order."""
    import webdataset as wds

    from yolo9000.data.schema import wds_to_record

    records = {}
    for shard in sorted(Path(out_dir).glob(f"{prefix}-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            record = wds_to_record(sample)
            records[record.file] = (shard.name, record)
    return records
