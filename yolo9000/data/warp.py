"""The device warp (`augment_on: device`): a batch's crop, rotation, edge clamp, flip, letterbox and the step's
multi-scale size applied together, one `affine_grid` + `grid_sample` for the images, one tensor op for the boxes.

Loader workers draw each sample's geometry from its seeded generator exactly as the worker path does
(transforms.py, `defer=True`) and ship it as numbers, `WarpParams`, with the decoded image on a padded
uint8 canvas (collate.collate_for_warp). Conventions:

- `affine` (B, 2, 3) maps normalised output coordinates (u, v) in [0, 1]² (the output's edges, whatever its
  size) to source pixel coordinates (x, y), pixel i spanning [i, i + 1]. So the same numbers serve every
  multi-scale size, and no second resize is needed.
- Source coordinates outside `clamp_box` (x0 y0 x1 y1, source pixels) take its nearest edge pixel
  (darknet's edge fill; a clamp to the edge pixels' centres, so bilinear taps never read padding or a
  neighbouring crop), or the grey of darknet's canvas where `fill` (rotation corners, letterbox bars).
- Boxes (source pixels), first clipped to `box_clip` (a crop's rectangle, as torchvision's crop clips them),
  map by the inverse, `box_map`; a rotated box becomes the bounds of its corners
  (as torchvision's F.rotate does); then they are clipped to the image, those thinner than `min_size` (a
  fraction of the output) dropped and the rest compacted and capped at `max_boxes`, as ClipAndDropSmall and
  collate do on the worker path. Boxes come out normalised, as BatchTargets wants.

Pixels differ from the worker path's only by interpolation: one bilinear sample here, against the worker's
bilinear resize (antialiased for the letterbox) plus nearest-neighbour rotation and its resize to the step's
size. Box coordinates agree to float rounding (tests/data/test_warp.py states and checks both bounds).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as nnf
from torch import Tensor

from yolo9000.batch import BatchTargets
from yolo9000.data.collate import WarpParams, to_network_input
from yolo9000.data.decode import decode_jpegs_on_device
from yolo9000.data.transforms import GREY, distort_hsv

TO_UNIT = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)  # [-1, 1] → [0, 1]


def warp_images(canvas: Tensor, params: WarpParams, size: int) -> Tensor:
    """uint8 canvas (B, 3, Hc, Wc) → float (B, 3, size, size) in [0, 1]: one grid, one bilinear sample."""
    batch, _, canvas_h, canvas_w = canvas.shape
    theta = (params.affine.double() @ TO_UNIT.to(canvas.device)).float()  # affine_grid's [-1, 1] → source pixels
    grid = nnf.affine_grid(theta, [batch, 3, size, size], align_corners=False)  # (B, S, S, 2) source x, y
    low, high = params.clamp_box[:, None, None, :2], params.clamp_box[:, None, None, 2:]
    inside = ((grid >= low) & (grid <= high)).all(-1) | ~params.fill[:, None, None]  # (B, S, S)
    clamped = torch.maximum(torch.minimum(grid, high - 0.5), low + 0.5)  # edge pixels' centres: no tap outside
    extent = torch.tensor([canvas_w, canvas_h], dtype=grid.dtype, device=grid.device)
    sampled = nnf.grid_sample(canvas.float(), clamped * (2 / extent) - 1, mode="bilinear", padding_mode="border",
                              align_corners=False).mul_(1 / 255)
    return torch.where(inside[:, None], sampled, torch.full((), GREY / 255, device=canvas.device))


def warp_boxes(targets: BatchTargets, params: WarpParams) -> tuple[BatchTargets, Tensor]:
    """Boxes (B, K, 4) in source pixels (labels −1 padding) → normalised (B, max_boxes, 4), clipped, thin ones
    dropped, compacted, capped; and the counts (2,) of boxes dropped as small and over max_boxes."""
    low, high = params.box_clip[:, None, :2].repeat(1, 1, 2), params.box_clip[:, None, 2:].repeat(1, 1, 2)  # (B, 1, 4)
    boxes, labels = torch.maximum(torch.minimum(targets.boxes, high), low), targets.labels
    x0, y0, x1, y1 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], -2)  # (B, K, 4, 2)
    matrix, offset = params.box_map[:, None, None, :, :2], params.box_map[:, None, None, :, 2]
    mapped = (matrix @ corners[..., None])[..., 0] + offset  # (B, K, 4, 2) normalised output
    clipped = torch.cat([mapped.amin(-2), mapped.amax(-2)], -1).clamp(0, 1)  # (B, K, 4)
    valid = labels >= 0
    keep = valid & ((clipped[..., 2:] - clipped[..., :2]) >= params.min_size[:, None, None]).all(-1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, : params.max_boxes]  # kept first, in order
    kept = keep.gather(1, order)
    out_boxes = clipped.gather(1, order[..., None].expand(-1, -1, 4)) * kept[..., None]
    out_labels = torch.where(kept, labels.gather(1, order), -1)
    if out_labels.shape[1] < params.max_boxes:  # fewer boxes in the whole batch than the cap
        missing = params.max_boxes - out_labels.shape[1]
        out_boxes, out_labels = nnf.pad(out_boxes, (0, 0, 0, missing)), nnf.pad(out_labels, (0, missing), value=-1)
    dropped = torch.stack([(valid & ~keep).sum(), keep.sum() - kept.sum()])
    return replace(targets, boxes=out_boxes, labels=out_labels), dropped


def device_batch(batch: dict, size: int, device: torch.device | str) -> tuple[Tensor, BatchTargets]:
    """A loader batch → (network input (B, 3, size, size) float on `device`, its BatchTargets there), for either
    path: a worker-augmented batch is only converted (and resized if the size differs); a deferred one
    (it carries `warp`) is warped here, its JPEGs first decoded on the device when it carries them."""
    if "warp" not in batch:
        images = to_network_input(batch["images"].to(device, non_blocking=True), size, batch["hsv"])
        return images, batch["targets"].to(device, non_blocking=True)
    params = batch["warp"].to(device, non_blocking=True)
    if "jpegs" in batch:
        canvas = decode_jpegs_on_device(batch["jpegs"], batch["orig_sizes"], batch["keys"], device)
    else:
        canvas = batch["images"].to(device, non_blocking=True)
    images = warp_images(canvas, params, size)
    images = distort_hsv(images, batch["hsv"].to(device))
    targets, _ = warp_boxes(batch["targets"].to(device, non_blocking=True), params)
    return images, targets
