"""The sample record shared by the shard writer and the loader, the manifest columns, and the one
manifest reader (labels, anchors and the shard writer read manifests through `read_manifest`).

One record per image. Labels are WordNet ids (`n02084071`), never tree indices, so shards
outlive a tree (DESIGN.md, Contracts). Boxes are absolute pixels x0 y0 x1 y1 in the image as
stored in the shard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WNID_PATTERN = re.compile(r"n[0-9]{8}")  # ASCII digits only: \d also matches ٠١٢… and other scripts
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # source names and shard prefixes: no dots, no slashes

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("source", pa.string()),
        ("file", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("boxes", pa.list_(pa.list_(pa.float32()))),
        ("labels", pa.list_(pa.string())),
        ("crowd", pa.list_(pa.bool_())),
        ("difficult", pa.list_(pa.bool_())),
        ("image_label", pa.string()),
    ]
)


class SchemaError(ValueError):
    """A record or a manifest that breaks the shard contract; the message names the record or file and the field."""


def read_manifest(path: str | Path, columns: Sequence[str], optional: Sequence[str] = ()) -> pa.Table:
    """The `columns` (and those of `optional` the file has) of a manifest.parquet, in that order; a missing
    or damaged file, a missing column or one of the wrong type is a SchemaError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"manifest not found: {path} (write it with the shard writer, e.g. pipelines/prepare_coco.py)")
    try:
        names = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise SchemaError(f"{path}: not a readable Parquet manifest ({error})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"{path}: manifest lacks column(s) {missing}; it has {names}")
    wanted = list(columns) + [c for c in optional if c in names]
    try:
        table = pq.read_table(path, columns=wanted).select(wanted)
    except Exception as error:
        raise SchemaError(f"{path}: not a readable Parquet manifest ({error})") from None
    odd = [f"{c} is {table.schema.field(c).type}, not {MANIFEST_SCHEMA.field(c).type}" for c in wanted
           if c in MANIFEST_SCHEMA.names and not column_fits(table.schema.field(c).type, MANIFEST_SCHEMA.field(c).type)]
    if odd:
        raise SchemaError(f"{path}: manifest column(s) of the wrong type: {'; '.join(odd)}")
    return table


def column_fits(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `actual` reads as the manifest's `expected` type: any integer or float width,
    a nested list also given flat (boxes as 4·n numbers), and all-null columns."""
    def is_number(kind: pa.DataType) -> bool:
        return pa.types.is_integer(kind) or pa.types.is_floating(kind)

    if pa.types.is_null(actual):
        return True
    if is_number(expected):
        return is_number(actual)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_list(expected):
        if not (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
            return False
        inner = expected.value_type
        return column_fits(actual.value_type, inner) or (pa.types.is_list(inner)
                                                         and column_fits(actual.value_type, inner.value_type))
    return actual == expected


@dataclass
class SampleRecord:
    """One image with its annotations, exactly as stored in a shard."""

    key: str
    source: str
    file: str
    width: int
    height: int
    jpeg: bytes = field(repr=False)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (K, 4)
    labels: list[str] = field(default_factory=list)
    crowd: list[bool] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    image_label: str | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)

    def metadata(self) -> dict:
        """The `json` member of the sample: every field but the image bytes."""
        return {
            "source": self.source,
            "file": self.file,
            "width": int(self.width),
            "height": int(self.height),
            "boxes": self.boxes.tolist(),
            "labels": list(self.labels),
            "crowd": [bool(c) for c in self.crowd],
            "difficult": [bool(d) for d in self.difficult],
            "image_label": self.image_label,
        }

    def manifest_row(self, shard: str) -> dict:
        """One row of `manifest.parquet` (MANIFEST_SCHEMA)."""
        return {"key": self.key, "shard": shard, **self.metadata()}


def invalid_wnids(values) -> list[str]:
    """The values that are not WordNet noun ids (`n` and eight digits), sorted, without duplicates."""
    return sorted({str(v) for v in values if not WNID_PATTERN.fullmatch(str(v))})


def validate_record(record: SampleRecord) -> None:
    """Raise SchemaError unless the record follows the shard contract."""
    where = f"record {record.key!r} ({record.file})"
    if not record.key or "." in record.key:
        raise SchemaError(f"{where}: key must be non-empty and hold no dots (WebDataset splits at the first dot)")
    if record.width <= 0 or record.height <= 0:
        raise SchemaError(f"{where}: width and height must be positive, got {record.width}x{record.height}")
    k = len(record.boxes)
    for name in ("labels", "crowd", "difficult"):
        if len(getattr(record, name)) != k:
            raise SchemaError(f"{where}: {k} boxes but {len(getattr(record, name))} {name}; one per box")
    bad_wnids = invalid_wnids(record.labels)
    if bad_wnids:
        raise SchemaError(f"{where}: labels must be WordNet ids like n02084071, got {bad_wnids[:5]}")
    if k:
        x0, y0, x1, y1 = record.boxes.T
        outside = (x0 < 0) | (y0 < 0) | (x1 > record.width) | (y1 > record.height) | (x1 <= x0) | (y1 <= y0)
        if outside.any():
            raise SchemaError(
                f"{where}: boxes {record.boxes[outside].tolist()} are empty or outside the "
                f"{record.width}x{record.height} image; clip them first"
            )
    if record.image_label is not None:
        if k:
            raise SchemaError(f"{where}: a classification record (image_label set) must have no boxes")
        if not WNID_PATTERN.fullmatch(record.image_label):
            raise SchemaError(f"{where}: image_label must be a WordNet id like n01440764, got {record.image_label!r}")


def record_to_wds(record: SampleRecord) -> dict:
    """The WebDataset sample of a record: `__key__`, `jpg` bytes, `json` bytes."""
    return {
        "__key__": record.key,
        "jpg": record.jpeg,
        "json": json.dumps(record.metadata(), sort_keys=True).encode("utf-8"),
    }


def wds_to_record(sample: dict) -> SampleRecord:
    """The record of a raw WebDataset sample (bytes values, as read with no decoder)."""
    meta = sample["json"]
    if isinstance(meta, (bytes, bytearray)):
        meta = json.loads(meta)
    return SampleRecord(
        key=sample["__key__"],
        source=meta["source"],
        file=meta["file"],
        width=meta["width"],
        height=meta["height"],
        jpeg=bytes(sample["jpg"]),
        boxes=np.asarray(meta["boxes"], dtype=np.float32).reshape(-1, 4),
        labels=list(meta["labels"]),
        crowd=list(meta["crowd"]),
        difficult=list(meta["difficult"]),
        image_label=meta["image_label"],
    )
