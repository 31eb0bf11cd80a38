"""Which anchor answers for which truth, and what it should regress to (no gradient) — the region matcher.

Follows darknet's region layer (darknet-notes.md, "Region layer (train)" and "Classification-only
path"), vectorised over the whole batch:

- `select_truths`: the valid boxes of detection images, flattened in darknet's truth order.
- `assign_truths`: responsible cell and anchor (centred shape IoU, ties to the lower anchor), the
  regression targets tx ty tw th, the IoU of the current prediction, and which truth wins a
  (cell, anchor) slot that several truths share (the later one, as darknet's loop overwrites).
- `kept_class_steps`: with a tree, which (truth, path step) class groups survive those overwrites.
- `ignore_mask`: anchors whose decoded prediction overlaps some truth by more than `thresh`.
- `classification_anchor`: for classification-only images, the anchor maximising σ(obj)·P(label)
  (darknet), or σ(obj) alone (`by="objectness"`: no anchor can claim a class whatever the image shows).
- `build_targets`: all of the above for one batch, as a `RegionTargets` (what loss.py consumes).

Boxes are normalised (cx, cy, w, h); anchors are in grid-cell units; slots index the flattened
(B, A, H, W) anchor grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from yolo9000.batch import BatchTargets
from yolo9000.geometry import corners_to_centre
from yolo9000.hierarchy import TreeArrays, node_log_prob


class TargetError(ValueError):
    """Targets that the region loss cannot use (a bad box, label or image label)."""


@dataclass(frozen=True)
class Truths:
    """Valid truth boxes of detection images, flattened (T,) in darknet's order (image, then row)."""

    image: Tensor  # (T,) batch index
    row: Tensor  # (T,) row in the (B, M) targets
    box: Tensor  # (T, 4) cx, cy, w, h normalised
    label: Tensor  # (T,) class or tree node


@dataclass(frozen=True)
class Assignment:
    """Responsible anchors and regression targets of each truth; `wins` marks the last truth of a slot."""

    slot: Tensor  # (T,) index into the flattened (B, A, H, W) grid
    anchor: Tensor  # (T,)
    box_target: Tensor  # (T, 4) tx, ty (targets of σ), tw, th (targets of the raw outputs)
    iou: Tensor  # (T,) IoU of the current prediction at the slot with the truth
    wins: Tensor  # (T,) bool: no later truth of the same image takes the same slot


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise IoU of broadcastable (..., 4) cx cy w h boxes (darknet's box_iou)."""
    overlap_w = (torch.minimum(a[..., 0] + a[..., 2] / 2, b[..., 0] + b[..., 2] / 2)
                 - torch.maximum(a[..., 0] - a[..., 2] / 2, b[..., 0] - b[..., 2] / 2)).clamp(min=0)
    overlap_h = (torch.minimum(a[..., 1] + a[..., 3] / 2, b[..., 1] + b[..., 3] / 2)
                 - torch.maximum(a[..., 1] - a[..., 3] / 2, b[..., 1] - b[..., 3] / 2)).clamp(min=0)
    intersection = overlap_w * overlap_h
    return intersection / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - intersection)


def centred_iou(a_wh: Tensor, b_wh: Tensor) -> Tensor:
    """IoU of broadcastable (..., 2) sizes with both boxes centred at the same point."""
    intersection = torch.minimum(a_wh[..., 0], b_wh[..., 0]) * torch.minimum(a_wh[..., 1], b_wh[..., 1])
    return intersection / (a_wh.prod(-1) + b_wh.prod(-1) - intersection)


def select_truths(targets: BatchTargets, num_classes: int) -> Truths:
    """The boxes with a label ≥ 0 of images that are not classification-only, checked."""
    labels = targets.labels
    valid = (labels >= 0) & ~targets.is_classification[:, None]
    image, row = torch.nonzero(valid, as_tuple=True)  # row-major: image, then row (darknet's order)
    box = corners_to_centre(targets.boxes[image, row])
    label = labels[image, row]
    if label.numel():
        bad_label = (label >= num_classes).nonzero()
        if bad_label.numel():
            k = int(bad_label[0])
            raise TargetError(
                f"targets.labels[{int(image[k])}, {int(row[k])}] = {int(label[k])} is not below the "
                f"{num_classes} classes: map dataset labels to class / tree node indices first"
            )
        bad_box = ((box[:, 2] <= 0) | (box[:, 3] <= 0)).nonzero()
        if bad_box.numel():
            k = int(bad_box[0])
            raise TargetError(
                f"targets.boxes[{int(image[k])}, {int(row[k])}] has no area "
                f"({targets.boxes[image[k], row[k]].tolist()}): drop empty boxes or mark the row label -1"
            )
    return Truths(image, row, box, label)


@torch.no_grad()
def assign_truths(truths: Truths, pred_boxes: Tensor, anchors: Tensor, bias_match: bool = True) -> Assignment:
    """Responsible (cell, anchor) and darknet's targets for every truth.

    Cell i = int(x·W), j = int(y·H) (clamped into the grid for x or y = 1). Anchor: argmax of the centred
    IoU between the truth's size and the anchor's (bias_match) or the current predicted size; argmax
    takes the first maximum, like darknet's strict '>' (ties go to the lower anchor).
    """
    batch, num_anchors, height, width, _ = pred_boxes.shape
    grid = torch.tensor([width, height], device=pred_boxes.device, dtype=truths.box.dtype)
    cell = (truths.box[:, :2] * grid).long()
    cell = torch.minimum(cell.clamp(min=0), grid.long() - 1)
    col, row = cell.unbind(1)
    if bias_match:
        shapes = (anchors / grid)[None].expand(len(col), -1, -1)  # (T, A, 2)
    else:
        shapes = pred_boxes[truths.image, :, row, col, 2:]  # (T, A, 2)
    anchor = centred_iou(shapes, truths.box[:, None, 2:]).argmax(1)
    slot = ((truths.image * num_anchors + anchor) * height + row) * width + col
    txy = truths.box[:, :2] * grid - cell
    twh = torch.log(truths.box[:, 2:] * grid / anchors[anchor])
    iou = box_iou(pred_boxes.reshape(-1, 4)[slot], truths.box)
    order = torch.arange(len(slot), device=slot.device)
    return Assignment(slot, anchor, torch.cat([txy, twh], 1), iou, _is_latest(slot, order))


def _is_latest(keys: Tensor, order: Tensor) -> Tensor:
    """True where `order` is the largest among the entries sharing the same key (later truth wins)."""
    if keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    unique, inverse = torch.unique(keys, return_inverse=True)
    latest = torch.full_like(unique, -1).scatter_reduce(0, inverse, order, reduce="amax")
    return latest[inverse] == order


@torch.no_grad()
def kept_class_steps(slot: Tensor, label: Tensor, tree: TreeArrays) -> Tensor:
    """(T, D) bool: the path steps whose sibling group no later truth of the same slot overwrites.

    darknet-notes.md, "Two truths at the same (cell, anchor)": a later truth rewrites the class deltas of
    the groups on its own path only, so an earlier truth keeps the groups that are not on the later path.
    With a flat softmax (one group) this reduces to "the later truth wins".
    """
    path = tree.paths[label]  # (T, D)
    on_path = path >= 0
    groups = tree.group[path.clamp(min=0)]
    keys = slot[:, None] * tree.num_groups + groups
    order = torch.arange(len(slot), device=slot.device)[:, None].expand_as(keys)
    kept = torch.zeros_like(on_path)
    kept[on_path] = _is_latest(keys[on_path], order[on_path])
    return kept


@torch.no_grad()
def ignore_mask(pred_boxes: Tensor, boxes: Tensor, valid: Tensor, thresh: float) -> Tensor:
    """(B, A, H, W) bool: the decoded prediction's best IoU with a valid truth of its image is > thresh."""
    batch = pred_boxes.shape[0]
    truth = corners_to_centre(boxes.to(pred_boxes.dtype))  # (B, M, 4)
    iou = box_iou(pred_boxes.reshape(batch, -1, 1, 4), truth[:, None])  # (B, AHW, M)
    iou = torch.where(valid[:, None], iou.nan_to_num(0.0), 0.0)
    if iou.shape[-1] == 0:
        return torch.zeros(pred_boxes.shape[:-1], dtype=torch.bool, device=pred_boxes.device)
    return (iou.amax(-1) > thresh).reshape(pred_boxes.shape[:-1])


@torch.no_grad()
def classification_anchor(objectness_logits: Tensor, class_logits: Tensor, label: Tensor, tree: TreeArrays,
                          by: str = "darknet") -> Tensor:
    """(B,) flat (A, H, W) index of the anchor maximising σ(obj)·P(label) (by="darknet") or σ(obj) (by="objectness").

    objectness_logits (B, A, H, W); class_logits (B, A, C, H, W), a view of the head output (not copied);
    label (B,) tree nodes (any valid node for images that are not classification-only; ignore those).
    P(label) comes from the label's path groups only; ties go to the lower index in darknet's
    anchor-major order (darknet-notes.md, "Classification-only path").
    """
    if by == "objectness":
        return objectness_logits.reshape(objectness_logits.shape[0], -1).argmax(1)
    images, num_anchors, num_classes, height, width = class_logits.shape
    per_location = class_logits.reshape(images * num_anchors, num_classes, height * width)
    log_p = node_log_prob(per_location, label.repeat_interleave(num_anchors), tree)  # (B·A, HW)
    score = torch.nn.functional.logsigmoid(objectness_logits).reshape(images, -1) + log_p.reshape(images, -1)
    return score.argmax(1)


@dataclass(frozen=True)
class RegionTargets:
    """Everything the loss terms need to know about one batch, all without gradient."""

    truths: Truths
    assignment: Assignment
    class_kept: Tensor  # (T, D) bool, see kept_class_steps
    responsible: Tensor  # (B, A, H, W) bool: some truth's slot
    ignored: Tensor  # (B, A, H, W) bool: see ignore_mask
    detection: Tensor  # (B, 1, 1, 1) bool: not a classification-only image
    chosen_slot: Tensor  # (Bc,) slot of each classification image's best anchor
    chosen_label: Tensor  # (Bc,) its tree node
    chosen: Tensor  # (B, A, H, W) bool


@torch.no_grad()
def build_targets(
    pred_boxes: Tensor,
    objectness_logits: Tensor,
    class_logits: Tensor,
    targets: BatchTargets,
    anchors: Tensor,
    tree: TreeArrays,
    thresh: float,
    bias_match: bool = True,
    classification_anchor_by: str = "darknet",
) -> RegionTargets:
    """Match a batch's truths to anchors (darknet-notes.md, "Per-image control flow"), vectorised.

    pred_boxes (B, A, H, W, 4) decoded predictions; objectness_logits (B, A, H, W); class_logits
    (B, A, C, H, W); targets on the same device.
    """
    shape, device = objectness_logits.shape, objectness_logits.device
    is_classification = targets.is_classification.bool()
    truths = select_truths(targets, tree.num_nodes)
    assignment = assign_truths(truths, pred_boxes, anchors, bias_match)
    valid_truth = (targets.labels >= 0) & ~is_classification[:, None]
    image_label = classification_labels(targets.image_label, is_classification, tree.num_nodes)
    images = torch.nonzero(is_classification).reshape(-1)
    chosen_slot = images
    if images.numel():
        index = classification_anchor(objectness_logits, class_logits, image_label, tree, classification_anchor_by)
        chosen_slot = images * shape[1:].numel() + index[images]
    return RegionTargets(
        truths=truths,
        assignment=assignment,
        class_kept=kept_class_steps(assignment.slot, truths.label, tree),
        responsible=_scatter_mask(assignment.slot, shape, device),
        ignored=ignore_mask(pred_boxes, targets.boxes, valid_truth, thresh),
        detection=~is_classification[:, None, None, None],
        chosen_slot=chosen_slot,
        chosen_label=image_label[images],
        chosen=_scatter_mask(chosen_slot, shape, device),
    )


def classification_labels(image_label: Tensor, is_classification: Tensor, num_nodes: int) -> Tensor:
    """(B,) image labels, 0 where the image is not classification-only; a bad label is refused."""
    bad = is_classification & ((image_label < 0) | (image_label >= num_nodes))
    if bad.any():
        b = int(bad.nonzero()[0])
        raise TargetError(
            f"targets.image_label[{b}] = {int(image_label[b])} for a classification image: give a tree "
            f"node in [0, {num_nodes})"
        )
    return torch.where(is_classification, image_label, 0)


def _scatter_mask(slots: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
    mask = torch.zeros(shape.numel(), dtype=torch.bool, device=device)
    mask[slots] = True
    return mask.view(shape)
