"""What every prepare reader produces, `SourceItem`s, and the checks of raw values the readers share.

A reader (coco, voc, imagenet) refuses malformed input with a PrepareError naming the file and
the entry; what can be repaired or skipped (a corrupt image, a box outside the image) is left to
the shard writer, which counts it in summary.json.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # ASCII only; no nan, no inf


class PrepareError(ValueError):
    """Input that cannot be prepared; the message names the file and item and how to fix it."""


@dataclass
class SourceItem:
    """One image of a raw dataset, with annotations in the pixels of the original image."""

    key: str
    source: str
    file: str  # path relative to the dataset root, as written in the record
    path: str  # where to read the bytes: an image file, or a tar file when `member` is set
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (K, 4) x0 y0 x1 y1
    labels: list[str] = field(default_factory=list)
    crowd: list[bool] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    image_label: str | None = None
    member: tuple[int, int] | None = None  # (offset, size) of the image inside the tar at `path`
    size_estimate: int = 0
    annotated_size: tuple[int, int] | None = None  # (width, height) the annotation file states, if any

    def describe(self) -> dict:
        """What identifies the item in the shard plan's fingerprint."""
        return {
            "key": self.key, "file": self.file, "size": self.size_estimate,
            "boxes": np.asarray(self.boxes, np.float32).round(3).tolist(), "labels": self.labels,
            "crowd": self.crowd, "difficult": self.difficult, "image_label": self.image_label,
        }


def file_size(path: str | os.PathLike) -> int:
    """Size of a file in bytes, 0 when it cannot be read (the writer then skips and counts it)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def text_number(text: str | None) -> float:
    """A finite number written in ASCII (`12`, `-3.5`, `1e2`) from XML text; ValueError otherwise."""
    if text is None or not NUMBER.fullmatch(text.strip()) or not math.isfinite(float(text)):
        raise ValueError(f"not a finite number in digits 0-9: {text!r}")
    return float(text)


def json_number(value) -> float:
    """A finite JSON number (not a bool, not a string); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def checked_relative_file(file: str, where: str) -> str:
    """`file` when it names a file inside the dataset folder (relative, no '..'), else a PrepareError."""
    path = PurePosixPath(file)
    if not file.strip() or path.is_absolute() or ".." in path.parts:
        raise PrepareError(f"{where}: file name {file!r} must be a path inside the dataset's image folder "
                           "(relative, no '..')")
    return file
