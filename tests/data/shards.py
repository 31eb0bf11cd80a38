"""Small real WebDataset shards for the loader tests: real JPEGs (PIL) with boxes drawn as filled rectangles."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image, ImageDraw

# real WordNet ids (COCO person, dog, car; ImageNet tench, goldfish)
DETECTION_WNIDS = ["n00007846", "n02084071", "n02958343"]
CLASSIFICATION_WNIDS = ["n01440764", "n01443537"]
ALL_WNIDS = DETECTION_WNIDS + CLASSIFICATION_WNIDS
BACKGROUND = (40, 40, 40)
FILL = (230, 230, 230)


def jpeg_bytes(width: int, height: int, boxes: list[list[float]] = (), quality: int = 95, mode: str = "RGB") -> bytes:
    """A real JPEG: dark background with each box drawn as a light filled rectangle."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=FILL)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def detection_record(source: str, index: int, rng: random.Random, width: int = 96, height: int = 80,
                     max_boxes: int = 3) -> dict:
    """A detection sample: 1..max_boxes random boxes with labels; json follows the shard contract."""
    boxes, labels = [], []
    for _ in range(rng.randint(1, max_boxes)):
        w, h = rng.randint(12, width // 2), rng.randint(12, height // 2)
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - h)
        boxes.append([float(x0), float(y0), float(x0 + w), float(y0 + h)])
        labels.append(rng.choice(DETECTION_WNIDS))
    meta = {"source": source, "file": f"images/{index:06d}.jpg", "width": width, "height": height,
            "boxes": boxes, "labels": labels, "crowd": [False] * len(boxes),
            "difficult": [False] * len(boxes), "image_label": None}
    return {"__key__": f"{source}-{index:06d}", "meta": meta, "jpg": jpeg_bytes(width, height, boxes)}


def classification_record(source: str, index: int, rng: random.Random, width: int = 64, height: int = 64) -> dict:
    """A classification sample: no boxes, an image label."""
    meta = {"source": source, "file": f"train/{index:06d}.JPEG", "width": width, "height": height,
            "boxes": [], "labels": [], "crowd": [], "difficult": [],
            "image_label": rng.choice(CLASSIFICATION_WNIDS)}
    return {"__key__": f"{source}-{index:06d}", "meta": meta, "jpg": jpeg_bytes(width, height)}


def write_shards(directory: Path, prefix: str, records: list[dict], per_shard: int) -> list[Path]:
    """Write records into DIR/<prefix>-000000.tar, ... with TarWriter; returns the shard paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, len(records), per_shard):
        path = directory / f"{prefix}-{start // per_shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for record in records[start : start + per_shard]:
                json_bytes = record.get("json_bytes") or json.dumps(record["meta"]).encode()
                writer.write({"__key__": record["__key__"], "jpg": record["jpg"], "json": json_bytes})
        paths.append(path)
    return paths


def write_manifest(path: Path, records: list[dict], shard: str = "x-000000.tar") -> Path:
    """A manifest.parquet with the contract's columns for these records."""
    rows = [{"key": r["__key__"], "shard": shard, **r["meta"]} for r in records]
    table = pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "shard": pa.array([r["shard"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "file": pa.array([r["file"] for r in rows], pa.string()),
        "width": pa.array([r["width"] for r in rows], pa.int32()),
        "height": pa.array([r["height"] for r in rows], pa.int32()),
        "boxes": pa.array([r["boxes"] for r in rows], pa.list_(pa.list_(pa.float32()))),
        "labels": pa.array([r["labels"] for r in rows], pa.list_(pa.string())),
        "crowd": pa.array([r["crowd"] for r in rows], pa.list_(pa.bool_())),
        "difficult": pa.array([r["difficult"] for r in rows], pa.list_(pa.bool_())),
        "image_label": pa.array([r["image_label"] for r in rows], pa.string()),
    })
    pq.write_table(table, path)
    return path


def detection_shards(directory: Path, count: int = 24, per_shard: int = 6, source: str = "coco",
                     seed: int = 0) -> tuple[list[Path], list[dict]]:
    """Shards of `count` detection samples, and the records written."""
    rng = random.Random(seed)
    records = [detection_record(source, i, rng) for i in range(count)]
    return write_shards(directory, source, records, per_shard), records


def classification_shards(directory: Path, count: int = 24, per_shard: int = 6, source: str = "imagenet",
                          seed: int = 1) -> tuple[list[Path], list[dict]]:
    """Shards of `count` classification samples, and the records written."""
    rng = random.Random(seed)
    records = [classification_record(source, i, rng) for i in range(count)]
    return write_shards(directory, source, records, per_shard), records
