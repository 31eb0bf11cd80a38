"""(image, target) pairs -> the batch; and the device-side step to network input.

A batch is a dict of what travels together from a loader worker: `images` (uint8, channels-last),
`targets` (a `BatchTargets`, moved as one with `.to(device)`), `hsv` factors, `orig_sizes`, `keys`,
`sources`, and the loader's counters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch.utils.data import get_worker_info

from yolo9000.batch import BatchTargets
from yolo9000.data.transforms import distort_hsv

NO_DISTORTION = (0.0, 1.0, 1.0)  # dhue, dsat, dexp


class CollateError(ValueError):
    """Samples that cannot form one batch; the message names the sample."""


def stack_channels_last(images: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """(3, S, S) uint8 images -> (B, 3, S, S) stored channels-last, in one copy.

    `out` is a flat uint8 buffer of B * 3 * S * S bytes to write into (a loader worker's reused
    shared buffer). Without it, inside a loader worker the batch goes straight into fresh shared
    memory (as torch's default_collate does), so the DataLoader sends it without another copy.
    """
    first = images[0]
    shape = (len(images), first.shape[1], first.shape[2], first.shape[0])  # (B, S, S, 3)
    if out is None and get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(len(images) * first.numel(), device=first.device)
        out = first.new(storage)
    if out is not None:
        out = out.view(shape)
    return torch.cat([image.permute(1, 2, 0)[None] for image in images], out=out).permute(0, 3, 1, 2)


def collate(samples: list[tuple[torch.Tensor, dict]], max_boxes: int = 30, out: torch.Tensor | None = None) -> dict:
    """Stack S x S uint8 images (into `out`, a flat uint8 buffer, if given) and pad targets to `max_boxes`
    (darknet's 30; extra boxes dropped, counted).

    Returns images (B, 3, S, S) uint8; targets (BatchTargets: boxes (B, M, 4) float32 normalised x0 y0 x1
    y1, labels (B, M) int64 (-1 padding), is_classification, image_label, keys); hsv (B, 3); orig_sizes
    (B, 2) (H, W of the stored image, to map letterboxed predictions back); keys; sources; and counts of
    dropped boxes.
    """
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]
    shape = images[0].shape
    for image, target in zip(images, targets):
        if image.shape != shape or image.dtype != torch.uint8:
            raise CollateError(
                f"sample {target.get('key')} is {tuple(image.shape)} {image.dtype}, batch needs {tuple(shape)} uint8; "
                "end the transforms with a resize or letterbox to the loader's image size"
            )
    batch_size, (_, height, width) = len(samples), shape
    counts = torch.tensor([len(t["boxes"]) for t in targets])
    kept = counts.clamp(max=max_boxes)
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = torch.zeros(batch_size, max_boxes, 4, dtype=torch.float32)
    labels = torch.full((batch_size, max_boxes), -1, dtype=torch.int64)
    if int(kept.sum()) > 0:
        filled = torch.arange(max_boxes)[None] < kept[:, None]  # (B, M), row-major like the cat below
        boxes[filled] = torch.cat([t["boxes"][:max_boxes] for t in targets]).float() / scale
        labels[filled] = torch.cat([t["labels"][:max_boxes] for t in targets]).long()
    keys = [t["key"] for t in targets]
    return {
        "images": stack_channels_last(images, out),
        "targets": BatchTargets(
            boxes=boxes,
            labels=labels,
            is_classification=torch.tensor([bool(t["is_classification"]) for t in targets]),
            image_label=torch.tensor([int(t["image_label"]) for t in targets], dtype=torch.int64),
            keys=keys,
        ),
        "hsv": torch.stack([t.get("hsv", torch.tensor(NO_DISTORTION)) for t in targets]),
        "orig_sizes": torch.tensor([t.get("orig_size", (height, width)) for t in targets], dtype=torch.int64),
        "keys": keys,
        "sources": [t["source"] for t in targets],
        "dropped": {
            "over_max_boxes": int((counts - kept).sum()),
            "crowd_or_difficult": sum(int(t.get("dropped_ignored", 0)) for t in targets),
            "small": sum(int(t.get("dropped_small", 0)) for t in targets),
        },
    }


def to_network_input(images: torch.Tensor, size: int, hsv: torch.Tensor | None = None) -> torch.Tensor:
    """Device step: uint8 (B, 3, S, S) -> float (B, 3, size, size) in [0, 1], HSV-distorted if factors given, bilinear.

    Boxes need nothing: they are normalised to the image.
    """
    x = images.float().div_(255)
    if hsv is not None:
        x = distort_hsv(x, hsv.to(x.device))
    if x.shape[-2:] != (size, size):
        x = nnf.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x
