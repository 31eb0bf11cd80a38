"""The joint YOLOv2 / YOLO9000 region loss, faithful to darknet's region layer.

    config = RegionLossConfig(darknet_version="final")           # or "paper"
    criterion = RegionLoss(anchors, num_classes, tree=TreeArrays.from_parent(wordtree.parent), config=config)
    result = criterion(output, targets)   # output (B, A·(5+C), H, W), the raw head output; targets: BatchTargets
    result.total.backward()               # result.terms: coord, objectness, noobject, prior, class
    print(result.stats)                   # avg_iou, class, obj, no_obj, avg_recall, count (darknet's line)

`anchors` (A, 2) are in grid-cell units. `targets` is a `yolo9000.batch.BatchTargets` (moved to the
output's device here):
    boxes (B, M, 4) float, x0 y0 x1 y1 normalised to [0, 1] of the network input;
    labels (B, M) long, class or tree node index, -1 for padding rows;
    is_classification (B,) bool: classification-only images (box rows ignored);
    image_label (B,) long, the tree node of a classification image (-1 for detection images).

Reduction is darknet's (darknet-notes.md, "Loss convention"): a sum over everything of
½·scale·(target − output)² for the L2 terms (scale, not scale²) and class_scale·cross-entropy for the
class terms, so ∂total/∂raw output = −(darknet's delta, through the logistic for x, y, objectness).
There is no division by the batch size. Without a tree the classes are one flat softmax (a tree whose
nodes are all roots); classification-only images then take the same path with a flat softmax.

`RegionLossResult`: total (scalar), terms {coord, objectness, noobject, prior, class} (scalars that sum to
total), stats {avg_iou, class, obj, no_obj, avg_recall, count} as darknet prints them (NaN where darknet
divides by a zero count). Where darknet's CPU and GPU paths differ, the GPU path is followed (the CPU tree
softmax is broken, darknet-notes.md "Tensor layout"). Box rows are not limited to darknet's 30.

`seen` (images seen) is a buffer, saved in the state dict. As darknet's train_network_datum does
`seen += batch` before the forward pass, a training-mode forward first adds B · replicas, then applies
the prior term while seen < prior_images; an eval-mode forward leaves it unchanged. `replicas` is the
number of data-parallel ranks that each run this forward on a batch of the same size, so `seen` counts
the images of the whole job and the prior term lasts the same 12,800 images on 1 rank or 64.

Two choices for classification-only images differ from darknet at small scale (DESIGN.md, platform facts):
`classification_noobject="off"` drops darknet's no-object push on every other anchor of such an image,
and `classification_anchor="objectness"` picks the anchor by σ(obj) alone instead of σ(obj)·P(label).
Both default to darknet's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from yolo9000.batch import BatchTargets
from yolo9000.geometry import decode_boxes
from yolo9000.hierarchy import TreeArrays, node_log_prob, path_log_probs
from yolo9000.targets import Assignment, RegionTargets, Truths, build_targets


@dataclass
class RegionLossConfig:
    """Region-layer constants; defaults are darknet's yolo-voc / yolo9000 cfg values."""

    object_scale: float = 5.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    coord_scale: float = 1.0
    thresh: float = 0.6  # ignore the no-object push where the prediction's IoU with a truth is > thresh
    rescore: bool = True  # objectness target = IoU of the prediction (else 1)
    bias_match: bool = True  # responsible anchor by the anchor's shape (else the predicted shape)
    prior_scale: float = 0.01
    prior_images: int = 12800
    darknet_version: str = "paper"  # "paper" (d2dece3d) or "final" (777b0982)
    classification_objectness: float = 0.3  # paper: classification images push σ(obj) up to this
    classification_noobject: str = "darknet"  # "darknet": push every other anchor of a classification image to 0; "off"
    classification_anchor: str = "darknet"  # "darknet": argmax σ(obj)·P(label); "objectness": argmax σ(obj)

    def __post_init__(self) -> None:
        choices = {"darknet_version": ("paper", "final"), "classification_noobject": ("darknet", "off"),
                   "classification_anchor": ("darknet", "objectness")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass
class RegionLossResult:
    total: Tensor
    terms: dict[str, Tensor]
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Predictions:
    """The head entries per anchor: σ(tx), σ(ty), raw tw, th, σ(to), and class logits at chosen slots."""

    xy: Tensor  # (B, A, H, W, 2) after the logistic
    twh: Tensor  # (B, A, H, W, 2) raw
    objectness: Tensor  # (B, A, H, W) after the logistic
    class_rows: Tensor  # (N, C) class logits at the requested slots


def region_view(output: Tensor, num_anchors: int, num_classes: int) -> Tensor:
    """(B, A, 5 + C, H, W) view of (B, A·(5+C), H, W) (darknet-notes.md, "Tensor layout")."""
    batch, channels, height, width = output.shape
    if channels != num_anchors * (5 + num_classes):
        raise ValueError(
            f"region output has {channels} channels; {num_anchors} anchors × (5 + {num_classes} classes) "
            f"= {num_anchors * (5 + num_classes)} expected: check the head's anchors and classes"
        )
    return output.view(batch, num_anchors, 5 + num_classes, height, width)


def gather_predictions(raw: Tensor, slots: Tensor) -> Predictions:
    """Box and objectness entries of every anchor plus the class logits at `slots`, in ONE gather.

    Every separate view or index of the (large, with 9k classes) output costs an output-sized gradient
    buffer in the backward pass; one flat gather costs one. Slots index the flattened (B, A, H, W) grid.
    """
    batch, num_anchors, entries, height, width = raw.shape
    locations = height * width
    anchor_start = torch.arange(batch * num_anchors, device=raw.device) * entries * locations  # (B·A,)
    entry = torch.arange(entries, device=raw.device) * locations
    location = torch.arange(locations, device=raw.device)
    head_index = anchor_start[:, None, None] + entry[None, :5, None] + location[None, None, :]  # (B·A, 5, HW)
    slot_start = anchor_start[slots // locations] + slots % locations  # (N,)
    row_index = slot_start[:, None] + entry[None, 5:]  # (N, C)
    values = raw.reshape(-1)[torch.cat([head_index.reshape(-1), row_index.reshape(-1)])]
    head = values[: head_index.numel()].view(batch, num_anchors, 5, height, width).permute(0, 1, 3, 4, 2)
    class_rows = values[head_index.numel() :].view(len(slots), entries - 5)
    return Predictions(head[..., :2].sigmoid(), head[..., 2:4], head[..., 4].sigmoid(), class_rows)


def decode_detached(raw: Tensor, anchors: Tensor) -> Tensor:
    """(B, A, H, W, 4) normalised boxes of the current predictions, without gradient."""
    head = raw.detach()[:, :, :4].permute(0, 1, 3, 4, 2)
    return decode_boxes(head[..., :2].sigmoid(), head[..., 2:], anchors)


def coord_loss(pred: Predictions, assignment: Assignment, truths: Truths, config: RegionLossConfig) -> Tensor:
    """½·s·Σ (target − output)² on σ(tx), σ(ty), tw, th at each slot's last truth; s per darknet version."""
    scale = torch.full_like(truths.box[:, 0], config.coord_scale)
    if config.darknet_version == "final":
        scale = config.coord_scale * (2 - truths.box[:, 2] * truths.box[:, 3])
    outputs = torch.cat([pred.xy, pred.twh], -1).reshape(-1, 4)[assignment.slot]  # (T, 4)
    squared = (assignment.box_target - outputs).pow(2).sum(1)
    return 0.5 * (scale * squared)[assignment.wins].sum()


def objectness_loss(pred: Predictions, assignment: Assignment, config: RegionLossConfig) -> Tensor:
    """½·object_scale·(target − σ(to))² at each slot's last truth; target = IoU (rescore) or 1."""
    target = assignment.iou if config.rescore else torch.ones_like(assignment.iou)
    sigma = pred.objectness.reshape(-1)[assignment.slot]
    return 0.5 * config.object_scale * (target - sigma).pow(2)[assignment.wins].sum()


def classification_objectness_loss(objectness: Tensor, config: RegionLossConfig) -> Tensor:
    """At a classification image's chosen anchor: paper → ½·object_scale·(.3 − σ)² if σ < .3; final → 0."""
    if config.darknet_version == "final":
        return objectness.sum() * 0.0
    shortfall = (config.classification_objectness - objectness).clamp(min=0)
    return 0.5 * config.object_scale * shortfall.pow(2).sum()


def noobject_loss(pred: Predictions, mask: Tensor, config: RegionLossConfig) -> Tensor:
    """½·noobject_scale·σ(to)² on the anchors in `mask`."""
    return 0.5 * config.noobject_scale * pred.objectness[mask].pow(2).sum()


def prior_loss(pred: Predictions, mask: Tensor, config: RegionLossConfig) -> Tensor:
    """½·prior_scale·Σ on `mask` of (.5 − σ(tx))² + (.5 − σ(ty))² + tw² + th²: pull boxes to the anchors."""
    xy, twh = pred.xy[mask], pred.twh[mask]
    return 0.5 * config.prior_scale * ((0.5 - xy).pow(2).sum() + twh.pow(2).sum())


def detection_class_loss(class_rows: Tensor, labels: Tensor, kept: Tensor, tree: TreeArrays, scale: float) -> Tensor:
    """class_scale · Σ over the kept (truth, path step) groups of the group cross-entropy (delta_region_class)."""
    return -scale * path_log_probs(class_rows, labels, tree)[kept].sum()


def classification_class_loss(chosen_rows: Tensor, labels: Tensor, tree: TreeArrays, scale: float) -> Tensor:
    """class_scale · −log P(label) at each classification image's chosen anchor: every group on its path."""
    return -scale * node_log_prob(chosen_rows, labels, tree).sum()


class RegionLoss(nn.Module):
    """darknet's region loss for a (B, A·(5+C), H, W) head output, flat softmax or WordTree classes."""

    def __init__(
        self,
        anchors: Tensor,
        num_classes: int,
        tree: TreeArrays | None = None,
        config: RegionLossConfig | None = None,
        replicas: int = 1,
    ):
        super().__init__()
        anchors = torch.as_tensor(anchors)
        anchors = anchors if anchors.is_floating_point() else anchors.float()
        if anchors.dim() != 2 or anchors.shape[1] != 2 or (anchors <= 0).any():
            raise ValueError(f"anchors must be (A, 2) positive widths and heights in grid cells, got {anchors.tolist()}")
        if tree is not None and tree.num_nodes != num_classes:
            raise ValueError(f"the tree has {tree.num_nodes} nodes but num_classes is {num_classes}")
        self.register_buffer("anchors", anchors)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.num_classes, self.replicas = num_classes, replicas
        self.tree = tree if tree is not None else TreeArrays.from_parent([-1] * num_classes)
        self.config = config or RegionLossConfig()

    def forward(self, output: Tensor, targets: BatchTargets, compute_stats: bool = True) -> RegionLossResult:
        """Total loss, named terms and (when asked: a device sync on a GPU) darknet's statistics for one batch."""
        if self.training:
            self.seen += output.shape[0] * self.replicas  # darknet: seen += batch before the forward pass
        tree, anchors = self._tree_on(output.device), self.anchors.to(output.dtype)
        raw = region_view(output, len(self.anchors), self.num_classes)
        targets = targets.to(output.device)
        targets.boxes = targets.boxes.to(output.dtype)
        matched = build_targets(decode_detached(raw, anchors), raw.detach()[:, :, 4], raw.detach()[:, :, 5:],
                                targets, anchors, tree, self.config.thresh, self.config.bias_match,
                                self.config.classification_anchor)
        slots = matched.assignment.slot
        pred = gather_predictions(raw, torch.cat([slots, matched.chosen_slot]))
        class_rows, chosen_rows = pred.class_rows[: len(slots)], pred.class_rows[len(slots) :]
        terms = self._terms(pred, matched, class_rows, chosen_rows, tree)
        stats = self._stats(pred, matched, class_rows, chosen_rows, tree) if compute_stats else {}
        return RegionLossResult(sum(terms.values()), terms, stats)

    def _terms(self, pred: Predictions, matched: RegionTargets, class_rows: Tensor, chosen_rows: Tensor,
               tree: TreeArrays) -> dict[str, Tensor]:
        """The five named terms; each anchor entry gets the delta darknet writes last into it."""
        config, m = self.config, matched
        prior_on = bool(self.seen < config.prior_images)
        chosen_objectness = pred.objectness.reshape(-1)[m.chosen_slot]
        pushed_down = m.detection & ~m.ignored & ~m.responsible
        if config.classification_noobject == "darknet":
            pushed_down = pushed_down | (~m.detection & ~m.chosen)
        return {
            "coord": coord_loss(pred, m.assignment, m.truths, config),
            "objectness": objectness_loss(pred, m.assignment, config)
            + classification_objectness_loss(chosen_objectness, config),
            "noobject": noobject_loss(pred, pushed_down, config),
            "prior": prior_loss(pred, m.detection & ~m.responsible & prior_on, config),
            "class": detection_class_loss(class_rows, m.truths.label, m.class_kept, tree, config.class_scale)
            + classification_class_loss(chosen_rows, m.chosen_label, tree, config.class_scale),
        }

    def _tree_on(self, device: torch.device) -> TreeArrays:
        if self.tree.parent.device != device:
            self.tree = self.tree.to(device)
        return self.tree

    @torch.no_grad()
    def _stats(self, pred: Predictions, matched: RegionTargets, class_rows: Tensor, chosen_rows: Tensor,
               tree: TreeArrays) -> dict[str, float]:
        """darknet's "Region Avg IOU, Class, Obj, No Obj, Avg Recall, count" line (NaN where it divides 0 by 0)."""
        assignment = matched.assignment
        count = len(assignment.slot)
        class_count = count + len(matched.chosen_label)
        class_prob = node_log_prob(class_rows, matched.truths.label, tree).exp().sum()
        class_prob = class_prob + node_log_prob(chosen_rows, matched.chosen_label, tree).exp().sum()
        any_obj = pred.objectness[matched.detection.expand_as(pred.objectness)].sum()
        return {
            "avg_iou": _ratio(assignment.iou.sum(), count),
            "class": _ratio(class_prob, class_count),
            "obj": _ratio(pred.objectness.reshape(-1)[assignment.slot].sum(), count),
            "no_obj": _ratio(any_obj, pred.objectness.numel()),
            "avg_recall": _ratio((assignment.iou > 0.5).sum(), count),
            "count": float(count),
        }


def _ratio(total: Tensor, count: int) -> float:
    return float(total) / count if count else float("nan")
