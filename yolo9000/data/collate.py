"""(image, target) pairs -> the batch; and the device-side step to network input.

A batch is a dict of what travels together from a loader worker, in one of two forms:

- `augment_on: worker` (`collate`): `images` (B, 3, S, S) uint8 stored channels-last, already cropped,
  flipped and resized; `targets`, a `BatchTargets` with boxes normalised to the image, `max_boxes` rows;
  `hsv` factors (B, 3); `orig_sizes` (B, 2) (H, W) of the decoded images; `keys`; `sources`.
- `augment_on: device` (`collate_for_warp`): `images` is a padded canvas (B, 3, Hc, Wc) uint8, stored
  channels-last, holding each decoded image unchanged at its top-left corner (Hc, Wc the batch's largest
  height and width; padding zeroed), `orig_sizes` its true (H, W); `warp`, a `warp.WarpParams` with
  each sample's geometry as numbers; `targets` a `BatchTargets` whose boxes are still in source pixels,
  every box kept (K = the batch's largest count, labels -1 padding); `hsv`, `keys`, `sources` as above.
  With `decode_on: device` the canvas is replaced by `jpegs`: the JPEG bytes end to end in one uint8
  tensor and their (B + 1) offsets. `warp.device_batch` turns either form into network input and
  normalised, capped targets on the device.

Both forms travel in shared memory (a worker's reused buffer, else fresh shared memory as torch's
default_collate does), so the DataLoader sends them without another copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.data import get_worker_info

from yolo9000.batch import BatchTargets
from yolo9000.data.buffers import new_shared_bytes
from yolo9000.data.transforms import distort_hsv

NO_DISTORTION = (0.0, 1.0, 1.0)  # dhue, dsat, dexp
UNBOUNDED = (-float("inf"), -float("inf"), float("inf"), float("inf"))


class CollateError(ValueError):
    """Samples that cannot form one batch; the message names the sample."""


class CanvasError(ValueError):
    """An image larger than the loader's canvas (`canvas_max_side`); the message names the sample and its shard."""


def check_canvas(image_size: tuple[int, int], max_side: int | None, where: str) -> None:
    """Refuse an image that would not fit the configured canvas, naming it (`where`: sample key and shard)."""
    if max_side is not None and max(image_size) > max_side:
        raise CanvasError(
            f"{where} is {image_size[0]}x{image_size[1]} (H x W), larger than the loader's canvas of {max_side} px "
            f"a side: raise data.canvas_max_side, or write the shards again with --max-side {max_side}"
        )


def new_bytes(numel: int) -> torch.Tensor:
    """A flat uint8 buffer: in fresh shared memory inside a loader worker (the DataLoader then sends it
    without a copy, as default_collate does), plain memory elsewhere."""
    return new_shared_bytes(numel) if get_worker_info() is not None else torch.empty(numel, dtype=torch.uint8)


def stack_channels_last(images: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """(3, S, S) uint8 images -> (B, 3, S, S) stored channels-last, in one copy.

    `out` is a flat uint8 buffer of B * 3 * S * S bytes to write into (a loader worker's reused
    shared buffer). Without it, inside a loader worker the batch goes straight into fresh shared
    memory (as torch's default_collate does), so the DataLoader sends it without another copy.
    """
    first = images[0]
    shape = (len(images), first.shape[1], first.shape[2], first.shape[0])  # (B, S, S, 3)
    if out is None and get_worker_info() is not None:
        out = new_bytes(len(images) * first.numel())
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
    _, height, width = shape
    boxes, labels, counts = padded_boxes(targets, max_boxes)
    boxes /= torch.tensor([width, height, width, height], dtype=torch.float32)  # padding rows stay 0
    kept = counts.clamp(max=max_boxes)
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


@dataclass
class WarpParams:
    """Per-sample geometry of a batch as numbers, applied on the device by warp.py (its docstring: the conventions)."""

    affine: Tensor  # (B, 2, 3) float32: normalised output (u, v, 1) → source pixels (x, y)
    box_map: Tensor  # (B, 2, 3) float32: source pixels (x, y, 1) → normalised output (u, v)
    clamp_box: Tensor  # (B, 4) float32 source pixels: outside it, its edge pixels (or grey where fill)
    fill: Tensor  # (B,) bool: grey outside clamp_box instead of its edge pixels
    min_size: Tensor  # (B,) float32: boxes thinner than this fraction of the output are dropped
    box_clip: Tensor  # (B, 4) float32 source pixels: boxes clipped to it before mapping (a crop's; else infinite)
    max_boxes: int = 30

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "WarpParams":
        """Every tensor on `device`."""
        move = {name: getattr(self, name).to(device, non_blocking=non_blocking)
                for name in ("affine", "box_map", "clamp_box", "fill", "min_size", "box_clip")}
        return replace(self, **move)


def warp_params(targets: list[dict], max_boxes: int) -> WarpParams:
    """The batch's WarpParams from the deferred targets (transforms.defer_step); a sample without a geometric
    step maps its whole image onto the output."""
    affine, clamp = [], []
    for target in targets:
        height, width = target["stage_size"] if "affine" in target else target["orig_size"]
        affine.append(target.get("affine", np.eye(3)) @ np.diag([width, height, 1.0]))  # normalised → source
        clamp.append(target.get("clamp_box", (0.0, 0.0, float(target["orig_size"][1]), float(target["orig_size"][0]))))
    forward = np.stack(affine)  # (B, 3, 3) float64: inverted before rounding to float32
    return WarpParams(
        affine=torch.from_numpy(forward[:, :2]).float(),
        box_map=torch.from_numpy(np.linalg.inv(forward)[:, :2]).float(),
        clamp_box=torch.tensor(clamp, dtype=torch.float32),
        fill=torch.tensor([bool(t.get("fill", False)) for t in targets]),
        min_size=torch.tensor([float(t.get("min_size", 0.0)) for t in targets]),
        box_clip=torch.tensor([t.get("box_clip", UNBOUNDED) for t in targets], dtype=torch.float32),
        max_boxes=max_boxes,
    )


def padded_boxes(targets: list[dict], rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each target's first `rows` boxes and labels in (B, rows, 4) float32 / (B, rows) int64 (-1 padding), and
    the counts (B,) of boxes each had."""
    counts = torch.tensor([len(t["boxes"]) for t in targets], dtype=torch.int64)
    kept = counts.clamp(max=rows)
    boxes = torch.zeros(len(targets), rows, 4, dtype=torch.float32)
    labels = torch.full((len(targets), rows), -1, dtype=torch.int64)
    if int(kept.sum()) > 0:
        filled = torch.arange(rows)[None] < kept[:, None]  # (B, rows), row-major like the cat below
        boxes[filled] = torch.cat([t["boxes"][:rows] for t in targets]).float()
        labels[filled] = torch.cat([t["labels"][:rows] for t in targets]).long()
    return boxes, labels, counts


def canvas_bytes(samples: list[tuple[torch.Tensor, dict]]) -> int:
    """Bytes the device path's batch needs: its padded canvas, or its JPEGs end to end (`decode_on: device`)."""
    if "jpeg" in samples[0][1]:
        return sum(len(target["jpeg"]) for _, target in samples)
    return len(samples) * 3 * max(i.shape[1] for i, _ in samples) * max(i.shape[2] for i, _ in samples)


def pad_onto_canvas(images: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """(3, H_i, W_i) uint8 images → (B, 3, Hc, Wc) stored channels-last, each at the top-left corner, the rest
    zero (so a batch is the same bytes whichever buffer it lands in); Hc, Wc the largest height and width."""
    shape = (len(images), max(i.shape[1] for i in images), max(i.shape[2] for i in images), 3)
    canvas = (out if out is not None else new_bytes(shape[0] * shape[1] * shape[2] * 3)).view(shape)
    # One copy per image and the padding around it zeroed, through numpy: a tenth of torch's per-call cost on
    # these slices.
    for slot, image in zip(canvas.numpy(), images):
        height, width = image.shape[1:]
        slot[:height, :width] = image.permute(1, 2, 0).numpy()
        slot[height:] = 0
        slot[:height, width:] = 0
    return canvas.permute(0, 3, 1, 2)


def jpegs_end_to_end(targets: list[dict], out: torch.Tensor | None = None) -> dict:
    """`decode_on: device`: the batch's JPEG bytes in one flat uint8 tensor and their (B + 1) offsets."""
    lengths = torch.tensor([len(t["jpeg"]) for t in targets], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    data = out if out is not None else new_bytes(int(offsets[-1]))
    for target, start, end in zip(targets, offsets[:-1].tolist(), offsets[1:].tolist()):
        data[start:end] = torch.frombuffer(bytearray(target["jpeg"]), dtype=torch.uint8)
    return {"data": data, "offsets": offsets}


def collate_for_warp(samples: list[tuple[torch.Tensor, dict]], max_boxes: int = 30, out: torch.Tensor | None = None) -> dict:
    """The device path's batch (the module docstring's second form): decoded images on a padded canvas (into `out`,
    a flat uint8 buffer of `canvas_bytes(samples)` bytes, if given) or their JPEGs, every box in source pixels,
    and the geometry as `WarpParams` for `warp.device_batch`."""
    targets = [target for _, target in samples]
    boxes, labels, counts = padded_boxes(targets, int(max((len(t["boxes"]) for t in targets), default=0)))
    keys = [t["key"] for t in targets]
    batch = {
        "targets": BatchTargets(
            boxes=boxes, labels=labels,
            is_classification=torch.tensor([bool(t["is_classification"]) for t in targets]),
            image_label=torch.tensor([int(t["image_label"]) for t in targets], dtype=torch.int64),
            keys=keys,
        ),
        "warp": warp_params(targets, max_boxes),
        "hsv": torch.stack([t.get("hsv", torch.tensor(NO_DISTORTION)) for t in targets]),
        "orig_sizes": torch.tensor([t["orig_size"] for t in targets], dtype=torch.int64),
        "keys": keys,
        "sources": [t["source"] for t in targets],
        "dropped": {"over_max_boxes": 0, "small": 0,  # counted on the device (warp.warp_boxes)
                    "crowd_or_difficult": sum(int(t.get("dropped_ignored", 0)) for t in targets)},
    }
    if "jpeg" in targets[0]:
        batch["jpegs"] = jpegs_end_to_end(targets, out)
    else:
        batch["images"] = pad_onto_canvas([image for image, _ in samples], out)
    return batch


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
