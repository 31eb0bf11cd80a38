"""Box-aware augmentation: callables on (image, target, generator) composed in a list.

`image` is a (3, H, W) uint8 tensor; `target["boxes"]` is (K, 4) float32 x0 y0 x1 y1 pixels with
per-box `labels`, `crowd`, `difficult`. Every geometric step moves the boxes with the image
(through `tv_tensors.BoundingBoxes` where torchvision's v2 functions fit). Randomness comes only
from the `torch.Generator` passed in, seeded per sample by the loader.

Deferred geometry (`augment_on: device`): a geometric step built with `defer=True` draws exactly
what it draws otherwise, in the same order, but leaves image and boxes alone and composes its
mapping into the target as numbers (`defer_step`): `affine` (3, 3) from the current stage's
output pixels to source pixels, `stage_size`, `clamp_box` / `fill` (what lies outside), `box_clip`
(a crop's rectangle, which torchvision's crop clips boxes to) and `min_size` from ClipAndDropSmall.
`data/warp.py` then applies a whole batch of them at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from yolo9000.geometry import letterbox_boxes, letterbox_offset, letterbox_size

PER_BOX = ("boxes", "labels", "crowd", "difficult")
GREY = 128  # darknet's 0.5 canvas


def uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    """One U(low, high) draw from the per-sample generator."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def rand_scale(generator: torch.Generator | None, s: float) -> float:
    """darknet's rand_scale: U(1, s), inverted with probability 1/2 (darknet-notes, random_distort_image)."""
    scale = uniform(generator, min(1.0, s), max(1.0, s))
    return scale if float(torch.rand((), generator=generator)) < 0.5 else 1.0 / scale


def stage_size(image: torch.Tensor, target: dict) -> tuple[int, int]:
    """(height, width) of the image as the steps so far made it: deferred steps change only this number."""
    return target.get("stage_size") or (int(image.shape[1]), int(image.shape[2]))


def defer_step(image: torch.Tensor, target: dict, matrix: np.ndarray, size: tuple[int, int], fill: bool = False,
               clips_boxes: bool = False) -> dict:
    """Compose one deferred geometric step: `matrix` (3, 3) maps its output pixels to its input pixels,
    `size` is its output (height, width). With `fill`, what falls outside its input is grey: that input's
    extent, in source pixels (axis-aligned: every step before a filling one is a crop or a scale), bounds
    `clamp_box`; without it, outside pixels take the nearest edge pixel of `clamp_box` (the image).
    `clips_boxes`: the step clips boxes to its output (torchvision's crop does), recorded as `box_clip`."""
    affine = target.get("affine", np.eye(3))
    _, height, width = image.shape
    clamp_box = target.get("clamp_box", (0.0, 0.0, float(width), float(height)))
    if fill:
        clamp_box = intersect(clamp_box, extent_in_source(affine, stage_size(image, target)))
    composed = affine @ matrix
    update = {"affine": composed, "stage_size": size, "clamp_box": clamp_box, "fill": target.get("fill", False) or fill}
    if clips_boxes:
        update["box_clip"] = intersect(target.get("box_clip", (-math.inf, -math.inf, math.inf, math.inf)),
                                       extent_in_source(composed, size))
    return {**target, **update}


def extent_in_source(affine: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Bounds, in source pixels, of a stage of `size` (height, width) whose pixels `affine` maps to the source."""
    h, w = size
    corners = affine[:2] @ np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], dtype=np.float64)
    return (*corners.min(1).tolist(), *corners.max(1).tolist())


def intersect(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    """The overlap of two x0 y0 x1 y1 rectangles."""
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def scale_matrix(sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """(3, 3) x -> sx x + dx, y -> sy y + dy."""
    return np.array([[sx, 0.0, dx], [0.0, sy, dy], [0.0, 0.0, 1.0]])


def keep_boxes(target: dict, keep: torch.Tensor) -> dict:
    """Target with only the boxes where `keep` is true (compacted: no holes left behind)."""
    return {**target, **{k: target[k][keep] for k in PER_BOX if k in target}}


def as_tv_boxes(target: dict, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """The target's boxes as BoundingBoxes on an H x W canvas."""
    return tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))


class Compose:
    """Apply transforms in order, all drawing from one per-sample generator."""

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, image: torch.Tensor, target: dict, generator: torch.Generator | None = None):
        for transform in self.transforms:
            image, target = transform(image, target, generator)
        return image, target


class DropNonTrainingBoxes:
    """Crowd and difficult boxes are not training boxes: drop them, count them in `dropped_ignored`."""

    def __call__(self, image, target, generator=None):
        ignored = target["crowd"] | target["difficult"]
        dropped = int(ignored.sum())
        if dropped:
            target = keep_boxes(target, ~ignored)
        return image, {**target, "dropped_ignored": target.get("dropped_ignored", 0) + dropped}


class ShuffleBoxes:
    """Random order of the boxes, so the ones kept under the max-boxes cap are a random subset (darknet's randomize_boxes)."""

    def __call__(self, image, target, generator=None):
        order = torch.randperm(len(target["boxes"]), generator=generator)
        return image, {**target, **{k: target[k][order] for k in PER_BOX if k in target}}


def resize_image(image: torch.Tensor, height: int, width: int, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of a (3, H, W) uint8 image, through torch's fast channels-last uint8 kernel.

    Images stay channels-last in memory (decode_jpeg already returns them so), which makes
    this several times faster than a resize of a planar image.
    """
    batch = image.permute(1, 2, 0)[None].permute(0, 3, 1, 2)  # (1, 3, H, W) with unambiguous channels-last strides
    return nnf.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)[0]


def crop_with_edge_clamp(image: torch.Tensor, left: int, top: int, width: int, height: int) -> torch.Tensor:
    """Crop a rectangle that may reach outside the image; outside pixels take the nearest edge pixel (slow reference path)."""
    _, h, w = image.shape
    rows = torch.arange(top, top + height).clamp_(0, h - 1)
    cols = torch.arange(left, left + width).clamp_(0, w - 1)
    return image.index_select(1, rows).index_select(2, cols)


def crop_resize_edge_clamped(image: torch.Tensor, left: int, top: int, width: int, height: int, size: int) -> torch.Tensor:
    """crop_with_edge_clamp then resize to size x size, fast: resize the part inside the image, then
    repeat its edge rows and columns over the part outside (equal up to the sub-pixel blend at the border)."""
    _, h, w = image.shape
    x0, x1, y0, y1 = max(left, 0), min(left + width, w), max(top, 0), min(top + height, h)
    ox0, ox1 = round((x0 - left) * size / width), round((x1 - left) * size / width)
    oy0, oy1 = round((y0 - top) * size / height), round((y1 - top) * size / height)
    ox1, oy1 = max(ox1, ox0 + 1), max(oy1, oy0 + 1)
    inner = resize_image(image[:, y0:y1, x0:x1], oy1 - oy0, ox1 - ox0)
    if (ox0, oy0, ox1, oy1) == (0, 0, size, size):
        return inner
    out = torch.empty(size, size, 3, dtype=image.dtype)  # (S, S, 3): copies below run over contiguous rows
    out[oy0:oy1, ox0:ox1] = inner.permute(1, 2, 0)
    out[oy0:oy1, :ox0] = out[oy0:oy1, ox0 : ox0 + 1]
    out[oy0:oy1, ox1:] = out[oy0:oy1, ox1 - 1 : ox1]
    out[:oy0] = out[oy0 : oy0 + 1]
    out[oy1:] = out[oy1 - 1 : oy1]
    return out.permute(2, 0, 1)


class JitterCropResize:
    """darknet v2-paper crop jitter then resize: each edge moves by int(U(-d, d)), d = int(jitter * side),
    pixels outside the image clamped to the edge, the crop resized to size x size; boxes follow.

    darknet-notes, [v2-paper] load_data_detection steps 1-4 and 6 (dx = pleft / ow / sx, scale 1 / sx).
    """

    def __init__(self, size: int, jitter: float = 0.2, defer: bool = False):
        self.size, self.jitter, self.defer = size, jitter, defer

    def __call__(self, image, target, generator=None):
        oh, ow = stage_size(image, target)
        dw, dh = int(ow * self.jitter), int(oh * self.jitter)
        pleft, pright = int(uniform(generator, -dw, dw)), int(uniform(generator, -dw, dw))
        ptop, pbot = int(uniform(generator, -dh, dh)), int(uniform(generator, -dh, dh))
        width, height = max(ow - pleft - pright, 1), max(oh - ptop - pbot, 1)
        if self.defer:
            matrix = scale_matrix(width / self.size, height / self.size, pleft, ptop)
            return image, defer_step(image, target, matrix, (self.size, self.size))
        image = crop_resize_edge_clamped(image, pleft, ptop, width, height, self.size)
        offset = np.array([pleft, ptop, pleft, ptop], dtype=np.float32)
        scale = np.array([self.size / width, self.size / height] * 2, dtype=np.float32)
        return image, {**target, "boxes": torch.from_numpy((target["boxes"].numpy() - offset) * scale)}


class Resize:
    """Resize to size x size (bilinear, aspect not kept), boxes scaled with it."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image, target, generator=None):
        _, h, w = image.shape
        boxes = F.resize(as_tv_boxes(target, h, w), [self.size, self.size])
        return resize_image(image, self.size, self.size), {**target, "boxes": boxes.as_subclass(torch.Tensor)}


class RandomHorizontalFlip:
    """Mirror left-right with probability p; boxes follow (left' = W - right)."""

    def __init__(self, p: float = 0.5, defer: bool = False):
        self.p, self.defer = p, defer

    def __call__(self, image, target, generator=None):
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, target
        h, w = stage_size(image, target)
        if self.defer:
            return image, defer_step(image, target, scale_matrix(-1.0, 1.0, w, 0.0), (h, w))
        boxes = F.horizontal_flip(as_tv_boxes(target, h, w))
        return F.horizontal_flip(image), {**target, "boxes": boxes.as_subclass(torch.Tensor)}


class ClipAndDropSmall:
    """Clip boxes to the image; drop boxes with w or h < min_size of the image, compacted (darknet-notes step 7, minus its bug)."""

    def __init__(self, min_size: float = 0.005, defer: bool = False):
        self.min_size, self.defer = min_size, defer

    def __call__(self, image, target, generator=None):
        if self.defer:  # boxes are clipped and filtered on the device, once mapped (warp.warp_boxes)
            return image, {**target, "min_size": self.min_size}
        _, h, w = image.shape
        boxes = target["boxes"].numpy()  # a few boxes: numpy's small-array ops cost far less than torch's
        clipped = np.clip(boxes, 0, np.array([w, h, w, h], dtype=boxes.dtype))
        keep = ((clipped[:, 2:] - clipped[:, :2]) >= self.min_size * np.array([w, h])).all(1)
        target = {**target, "boxes": torch.from_numpy(clipped)}
        dropped = len(keep) - int(keep.sum())
        if dropped:
            target = keep_boxes(target, torch.from_numpy(keep))
        return image, {**target, "dropped_small": target.get("dropped_small", 0) + dropped}


class RandomDistortHSV:
    """darknet's random_distort_image: hue += U(-hue, hue), S and V scaled by rand_scale.

    With `on_device=True` only the factors are drawn here and stored in `target["hsv"]`;
    `collate.to_network_input` applies them to the whole batch (cheap there, costly per
    image on a loader CPU). Otherwise the image is distorted here.
    """

    def __init__(self, hue: float = 0.1, saturation: float = 1.5, exposure: float = 1.5, on_device: bool = True):
        self.hue, self.saturation, self.exposure, self.on_device = hue, saturation, exposure, on_device

    def __call__(self, image, target, generator=None):
        dhue = uniform(generator, -self.hue, self.hue)
        dsat = rand_scale(generator, self.saturation)
        dexp = rand_scale(generator, self.exposure)
        factors = torch.tensor([dhue, dsat, dexp], dtype=torch.float32)
        if self.on_device:
            return image, {**target, "hsv": factors}
        distorted = distort_hsv(image[None].float() / 255, factors[None])[0]
        return (distorted * 255).round_().to(torch.uint8), target


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) RGB in [0, 1] -> h in [0, 1), s, v each (B, H, W)."""
    r, g, b = rgb.unbind(1)
    v, _ = rgb.max(1)
    delta = v - rgb.min(1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)).remainder(1.0)
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """h in [0, 1), s, v (B, H, W) -> (B, 3, H, W) RGB; c = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6."""
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype)[None, :, None, None]  # R, G, B
    k = (n + 6 * h[:, None]).remainder(6)
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    return v[:, None] - (v * s)[:, None] * ramp


def distort_hsv(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Batched darknet HSV distortion: images (B, 3, H, W) in [0, 1], factors (B, 3) = (dhue, dsat, dexp)."""
    h, s, v = rgb_to_hsv(images)
    dhue, dsat, dexp = (factors[:, i, None, None].to(images) for i in range(3))
    rgb = hsv_to_rgb((h + dhue).remainder(1.0), s * dsat, v * dexp)
    return rgb.clamp_(0, 1)


def letterbox_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 → (3, size, size): aspect kept, darknet's integer size and offset (geometry.py), grey bars.

    The one letterbox of an image: the evaluation transform and inference (predict.py) both call it.
    """
    _, h, w = image.shape
    new_h, new_w = letterbox_size((h, w), size).tolist()
    top, left = letterbox_offset((h, w), size).tolist()
    padding = [left, top, size - new_w - left, size - new_h - top]
    return F.pad(resize_image(image, new_h, new_w, antialias=True), padding, fill=GREY)


class Letterbox:
    """Evaluation resize: keep the aspect ratio, fit inside size x size, centre on grey; boxes follow."""

    def __init__(self, size: int, defer: bool = False):
        self.size, self.defer = size, defer

    def __call__(self, image, target, generator=None):
        _, h, w = image.shape
        if self.defer:  # the same integer size and offset as letterbox_image (geometry.py)
            new_h, new_w = letterbox_size((h, w), self.size).tolist()
            top, left = letterbox_offset((h, w), self.size).tolist()
            matrix = scale_matrix(w / new_w, h / new_h, -left * w / new_w, -top * h / new_h)
            return image, defer_step(image, target, matrix, (self.size, self.size), fill=True)
        boxes = letterbox_boxes(target["boxes"], (h, w), self.size)
        return letterbox_image(image, self.size), {**target, "boxes": boxes}


class RandomScaleCrop:
    """Classification crop (darknet classifier): random area in [min_area, 1] and aspect in [aspect, 1/aspect], resized to size x size."""

    def __init__(self, size: int, min_area: float = 0.25, aspect: float = 0.75, defer: bool = False):
        self.size, self.min_area, self.aspect, self.defer = size, min_area, aspect, defer

    def __call__(self, image, target, generator=None):
        h, w = stage_size(image, target)
        area = uniform(generator, self.min_area, 1.0) * h * w
        ratio = math.exp(uniform(generator, math.log(self.aspect), -math.log(self.aspect)))
        crop_w = min(w, max(1, round(math.sqrt(area * ratio))))
        crop_h = min(h, max(1, round(math.sqrt(area / ratio))))
        left = int(uniform(generator, 0, w - crop_w + 1 - 1e-6))
        top = int(uniform(generator, 0, h - crop_h + 1 - 1e-6))
        if self.defer:
            matrix = scale_matrix(crop_w / self.size, crop_h / self.size, left, top)
            return image, defer_step(image, target, matrix, (self.size, self.size), clips_boxes=True)
        boxes = F.resized_crop(as_tv_boxes(target, h, w), top, left, crop_h, crop_w, [self.size, self.size])
        image = resize_image(image[:, top : top + crop_h, left : left + crop_w], self.size, self.size)
        return image, {**target, "boxes": boxes.as_subclass(torch.Tensor)}


class RandomRotation:
    """Rotate by U(-degrees, degrees) about the centre, same size, grey fill; boxes become the rotated boxes' bounds."""

    def __init__(self, degrees: float = 7.0, defer: bool = False):
        self.degrees, self.defer = degrees, defer

    def __call__(self, image, target, generator=None):
        angle = uniform(generator, -self.degrees, self.degrees)
        h, w = stage_size(image, target)
        if self.defer:
            return image, defer_step(image, target, rotation_matrix(angle, h, w), (h, w), fill=True)
        boxes = F.rotate(as_tv_boxes(target, h, w), angle)
        image = F.rotate(image, angle, fill=GREY)
        return image, {**target, "boxes": boxes.as_subclass(torch.Tensor)}


def rotation_matrix(angle: float, height: int, width: int) -> np.ndarray:
    """(3, 3) from pixels of an image rotated by `angle` degrees counter-clockwise about its centre (F.rotate's
    convention) back to pixels of the unrotated image."""
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    cx, cy = width / 2, height / 2
    rotate = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return scale_matrix(1.0, 1.0, cx, cy) @ rotate @ scale_matrix(1.0, 1.0, -cx, -cy)


def detection_train(size: int, jitter: float = 0.2, hue: float = 0.1, saturation: float = 1.5,
                    exposure: float = 1.5, hsv_on_device: bool = True, defer: bool = False) -> Compose:
    """darknet v2-paper load_data_detection: boxes shuffled, jitter crop, resize, flip, HSV distortion; boxes clipped,
    tiny ones dropped. `defer`: the geometry as numbers for the device warp, the same draws in the same order."""
    return Compose([
        DropNonTrainingBoxes(),
        ShuffleBoxes(),
        JitterCropResize(size, jitter, defer=defer),
        RandomHorizontalFlip(0.5, defer=defer),
        RandomDistortHSV(hue, saturation, exposure, on_device=hsv_on_device),
        ClipAndDropSmall(0.005, defer=defer),
    ])


def classification_train(size: int, hue: float = 0.1, saturation: float = 0.75, exposure: float = 0.75,
                         hsv_on_device: bool = True, defer: bool = False) -> Compose:
    """Darknet-19 classifier recipe: random crop/scale, rotation +-7 degrees, flip, hue/saturation/exposure."""
    return Compose([
        RandomScaleCrop(size, defer=defer),
        RandomRotation(7.0, defer=defer),
        RandomHorizontalFlip(0.5, defer=defer),
        RandomDistortHSV(hue, saturation, exposure, on_device=hsv_on_device),
    ])


def evaluation(size: int, defer: bool = False) -> Compose:
    """Letterbox to size x size on grey; crowd/difficult boxes dropped (counted), boxes clipped."""
    return Compose([DropNonTrainingBoxes(), Letterbox(size, defer=defer), ClipAndDropSmall(0.0, defer=defer)])
