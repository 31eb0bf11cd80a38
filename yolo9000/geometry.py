"""Letterbox geometry, box decoding and box conversions: the one copy that transforms, targets, loss and inference call.

Sizes are (height, width) everywhere, as torchvision's `canvas_size`: image sizes, network input sizes.
Boxes are x0 y0 x1 y1 unless a name says otherwise.

Letterbox (darknet letterbox_image, darknet-notes.md "Test-time input" and "correct_region_boxes"): an
h x w image is scaled to integer new_w = net_w, new_h = h·net_w // w when net_w / w < net_h / h (else
new_h = net_h, new_w = w·net_h // h) and placed at the integer offset ((net_h − new_h) // 2,
(net_w − new_w) // 2) on grey. darknet's correct_region_boxes undoes it with the fractional offset
(net − new) / 2, half a network pixel away from where its letterbox_image put the image when net − new is
odd; here both directions use the integer offset, so a box maps back to where it was drawn.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert


class GeometryError(ValueError):
    """Sizes or boxes whose shapes or values do not fit together; the message says which."""


def size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a network input given as one side or as (height, width)."""
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def image_sizes_tensor(image_sizes) -> Tensor:
    """(..., 2) long (height, width), checked positive."""
    sizes = torch.as_tensor(image_sizes, dtype=torch.long)
    if sizes.shape[-1:] != (2,):
        raise GeometryError(f"image sizes must be (..., 2) (height, width); got shape {tuple(sizes.shape)}")
    if (sizes <= 0).any():
        raise GeometryError(f"image sizes must be positive (height, width); got {sizes.reshape(-1, 2).tolist()[:4]}")
    return sizes


def letterbox_size(image_sizes, input_size: int | Sequence[int]) -> Tensor:
    """(..., 2) integer (new_h, new_w) of each image aspect-fitted into the network input, darknet's rule."""
    sizes = image_sizes_tensor(image_sizes)
    net_h, net_w = size_hw(input_size)
    height, width = sizes[..., 0], sizes[..., 1]
    width_limited = net_w * height < net_h * width  # net_w / w < net_h / h, in integers
    new_h = torch.where(width_limited, torch.div(height * net_w, width, rounding_mode="floor"), net_h)
    new_w = torch.where(width_limited, net_w, torch.div(width * net_h, height, rounding_mode="floor"))
    return torch.stack([new_h, new_w], dim=-1)


def letterbox_offset(image_sizes, input_size: int | Sequence[int]) -> Tensor:
    """(..., 2) integer (top, left) padding before the letterboxed image (darknet's embed_image offset)."""
    net = torch.tensor(size_hw(input_size))
    return torch.div(net - letterbox_size(image_sizes, input_size), 2, rounding_mode="floor")


def _scale_and_offset(image_sizes, input_size, like: Tensor) -> tuple[Tensor, Tensor]:
    """(..., 1, 1, 2) x, y scale and left, top offset of the letterbox, shaped for a (..., M, 2, 2) corner view."""
    sizes = image_sizes_tensor(image_sizes)
    scale = (letterbox_size(sizes, input_size).to(like) / sizes.to(like)).flip(-1)  # (..., 2) x, y
    offset = letterbox_offset(sizes, input_size).to(like).flip(-1)  # (..., 2) left, top
    return scale[..., None, None, :], offset[..., None, None, :]


def _corners(boxes: Tensor) -> Tensor:
    if boxes.shape[-1:] != (4,):
        raise GeometryError(f"boxes must be (..., 4) x0 y0 x1 y1; got shape {tuple(boxes.shape)}")
    return boxes.reshape(*boxes.shape[:-1], 2, 2)  # (..., M, corner, xy)


def letterbox_boxes(boxes: Tensor, image_sizes, input_size: int | Sequence[int]) -> Tensor:
    """Boxes (..., M, 4) in original-image pixels → pixels of the letterboxed network input.

    `image_sizes` (..., 2) (height, width), one per image of the leading dimensions.
    """
    scale, offset = _scale_and_offset(image_sizes, input_size, boxes)
    return (_corners(boxes) * scale + offset).reshape(boxes.shape)


def unletterbox_boxes(boxes: Tensor, image_sizes, input_size: int | Sequence[int]) -> Tensor:
    """Boxes (..., M, 4) in pixels of the letterboxed network input → original-image pixels, clipped to the image."""
    scale, offset = _scale_and_offset(image_sizes, input_size, boxes)
    pixels = (_corners(boxes) - offset) / scale
    return clip_boxes(pixels.reshape(boxes.shape), image_sizes)


def clip_boxes(boxes: Tensor, image_sizes) -> Tensor:
    """Boxes (..., M, 4) clipped to [0, w] x [0, h] of their image (torchvision's clip_boxes_to_image, batched)."""
    extent = image_sizes_tensor(image_sizes).to(boxes).flip(-1)[..., None, :]  # (..., 1, 2) w, h
    corners = _corners(boxes)
    return torch.minimum(corners.clamp(min=0), extent[..., None, :]).reshape(boxes.shape)


def decode_boxes(xy: Tensor, twh: Tensor, anchors: Tensor) -> Tensor:
    """(B, A, H, W, 4) normalised cx cy w h from σ(tx), σ(ty) (B, A, H, W, 2), raw tw, th and anchors (A, 2).

    darknet-notes.md "Tensor layout and activations": x = (col + σ(tx)) / W, y = (row + σ(ty)) / H,
    w = exp(tw)·anchor_w / W, h = exp(th)·anchor_h / H, anchors in grid cells.
    """
    _, _, height, width, _ = xy.shape
    col = torch.arange(width, device=xy.device, dtype=xy.dtype)
    row = torch.arange(height, device=xy.device, dtype=xy.dtype)
    cx = (col + xy[..., 0]) / width
    cy = (row[:, None] + xy[..., 1]) / height
    w = twh[..., 0].exp() * anchors[:, 0, None, None] / width
    h = twh[..., 1].exp() * anchors[:, 1, None, None] / height
    return torch.stack([cx, cy, w, h], dim=-1)


def centre_to_corners(boxes: Tensor) -> Tensor:
    """(..., 4) cx cy w h → x0 y0 x1 y1."""
    return box_convert(boxes, "cxcywh", "xyxy")


def corners_to_centre(boxes: Tensor) -> Tensor:
    """(..., 4) x0 y0 x1 y1 → cx cy w h."""
    return box_convert(boxes, "xyxy", "cxcywh")


def corners_to_xywh(boxes: Tensor) -> Tensor:
    """(..., 4) x0 y0 x1 y1 → x y w h (COCO's bbox)."""
    return box_convert(boxes, "xyxy", "xywh")


def xywh_to_corners(boxes: Tensor) -> Tensor:
    """(..., 4) x y w h (COCO's bbox) → x0 y0 x1 y1."""
    return box_convert(boxes, "xywh", "xyxy")


def paired_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of broadcastable (..., 4) x0 y0 x1 y1 boxes (torchvision's box_iou gives the N x M matrix)."""
    overlap = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return overlap / (area_a + area_b - overlap).clamp(min=torch.finfo(overlap.dtype).tiny)
