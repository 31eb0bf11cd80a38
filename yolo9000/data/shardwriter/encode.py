"""One SourceItem → one SampleRecord: read the bytes, check that the image decodes, keep the original JPEG
bytes where they verify (re-encode otherwise, or when downsizing), clip boxes to the image.

What this step repairs or skips comes back as events `(reason, count, file)`, which the summary
counts: nothing is changed or dropped silently.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from yolo9000.data.prepare.items import SourceItem
from yolo9000.data.schema import SampleRecord, validate_record

JPEG_FORMATS = {"JPEG", "MPO"}  # PIL names a JPEG with a multi-picture (camera) extension "MPO"

Event = tuple[str, int, str]  # (reason, count, example: the file, with details where useful)


def read_item_bytes(item: SourceItem) -> bytes:
    """The raw bytes of the item's image (from a file, or from a member of a tar file)."""
    with open(item.path, "rb") as f:
        if item.member is None:
            return f.read()
        offset, size = item.member
        f.seek(offset)
        return f.read(size)


def decoded_format_and_size(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(format, (width, height)) when the whole image decodes, else None.

    JPEGs decode in draft mode at 1/8 scale: the decoder still reads all the entropy-coded data,
    so truncated or broken files fail the same way, at a fraction of the cost of a full decode.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt, size = image.format, image.size
        if fmt in JPEG_FORMATS:
            image.draft(image.mode, (1, 1))
        image.load()
    except Exception:
        return None
    return fmt, size


def verifies_as_jpeg(data: bytes) -> bool:
    """Whether PIL identifies the bytes as a JPEG and its `verify()` accepts them."""
    try:
        probe = Image.open(io.BytesIO(data))
        probe.verify()
        return probe.format in JPEG_FORMATS
    except Exception:
        return False


def decode(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The decoded image, at least `size` large (a JPEG meant for a smaller size decodes at a reduced
    DCT scale first, as PIL's thumbnail does), for re-encoding or resizing."""
    image = Image.open(io.BytesIO(data))
    if image.format in JPEG_FORMATS:
        image.draft("RGB", size)
    image.load()
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of an image, converted to RGB."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clipped boxes (K, 4), keep mask (K,): not degenerate after clipping, changed mask (K,))."""
    clipped = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (clipped != boxes).any(axis=1)
    return clipped, keep, changed


def materialise(item: SourceItem, max_side: int | None = None, jpeg_quality: int = 95
                ) -> tuple[SampleRecord | None, list[Event]]:
    """The record of an item and the events on the way: (reason, count, file); None when skipped."""
    try:
        data = read_item_bytes(item)
    except OSError as error:
        return None, [("unreadable_image", 1, f"{item.file}: {error.strerror or error}")]
    decoded = decoded_format_and_size(data)
    if decoded is None:
        return None, [("corrupt_image", 1, item.file)]
    (fmt, (width, height)), verified_jpeg = decoded, verifies_as_jpeg(data)
    events = []
    if item.annotated_size is not None and tuple(item.annotated_size) != (width, height):
        events.append(("size_differs_from_annotation", 1,
                       f"{item.file}: annotation says {item.annotated_size[0]}x{item.annotated_size[1]}, "
                       f"image is {width}x{height}"))
    if not verified_jpeg:
        reason = "reencoded_unverifiable_jpeg" if fmt in JPEG_FORMATS else "reencoded_non_jpeg"
        events.append((reason, 1, item.file))
    boxes = np.asarray(item.boxes, np.float32).reshape(-1, 4)
    boxes, keep, changed = clip_boxes(boxes, width, height)
    if (changed & keep).any():
        events.append(("boxes_clipped", int((changed & keep).sum()), item.file))
    if (~keep).any():
        events.append(("degenerate_boxes_dropped", int((~keep).sum()), item.file))
    if item.image_label is None and not keep.any():  # kept: a negative (background-only) detection sample
        events.append(("no_boxes", 1, item.file))
    jpeg = data if verified_jpeg else None
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        boxes = boxes * np.array([new_size[0] / width, new_size[1] / height] * 2, np.float32)
        boxes = np.minimum(boxes, np.array([*new_size, *new_size], np.float32))
        width, height = new_size
        jpeg = None
        events.append(("resized", 1, item.file))
    if jpeg is None:
        try:
            jpeg = encode_jpeg(decode(data, (width, height)).convert("RGB").resize((width, height), Image.Resampling.BILINEAR),
                               jpeg_quality)
        except (OSError, SyntaxError, ValueError):  # decodes in draft mode only: count it as corrupt
            return None, [("corrupt_image", 1, item.file)]
    record = SampleRecord(
        key=item.key, source=item.source, file=item.file, width=width, height=height, jpeg=jpeg,
        boxes=boxes[keep], labels=np.asarray(item.labels, dtype=object)[keep].tolist(),
        crowd=np.asarray(item.crowd, dtype=bool)[keep].tolist(),
        difficult=np.asarray(item.difficult, dtype=bool)[keep].tolist(), image_label=item.image_label,
    )
    validate_record(record)
    return record, events
