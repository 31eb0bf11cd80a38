"""Raw head output → boxes, objectness, class or tree labels, letterbox undone, per-class NMS, COCO rows.

Image sizes are (height, width), as everywhere (geometry.py); the letterbox is undone by geometry.py.

Follows darknet HEAD's `get_region_detections`, `correct_region_boxes` and `validate_detector`
(darknet-notes.md, "get_region_detections" and "validate_detector"): thresh .005 for evaluation and
.5 for display, NMS .45, hier_thresh .5. Everything works on whole batches; the only Python loop is the
one that hands back one `Detections` per image.

    boxes, objectness, logits = decode_output(output, anchors)
    detections = postprocess(output, anchors, image_sizes, input_size=416)             # flat classes
    detections = postprocess(output, anchors, image_sizes, 416, tree=tree)             # top-down label
    detections = postprocess(output, anchors, image_sizes, 416, tree=tree, label_nodes=det200)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from yolo9000.geometry import centre_to_corners, corners_to_xywh, decode_boxes, size_hw, unletterbox_boxes
from yolo9000.hierarchy import (
    TreeArrays,
    absolute_log_probs,
    group_log_softmax,
    label_log_probs,
    top_down_decode_logits,
)


class PostprocessError(ValueError):
    """Head output, anchors or sizes whose shapes do not fit together; the message says which."""


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds and choices of the detection post-processing (defaults: darknet's evaluation settings)."""

    score_threshold: float = 0.005  # validate_detector; use .5 to display detections
    iou_threshold: float = 0.45  # do_nms_sort in darknet HEAD
    max_detections: int = 100  # per image, after NMS (COCO evaluates at most 100)
    hier_thresh: float = 0.5  # top-down decode: descend while P(node) > hier_thresh
    tree_score: str = "product"  # "product": objectness × P(label); "objectness": darknet HEAD's score
    darknet_product: bool = False  # top-down test on p·max like hierarchy_top_prediction (double counts)


EVALUATION = PostprocessConfig()  # validate_detector: thresh .005, NMS .45, hier .5
DISPLAY = PostprocessConfig(score_threshold=0.5)  # test_detector [HEAD]: thresh .5


@dataclass
class Detections:
    """The detections of one image: boxes in original-image pixels, their scores and labels."""

    boxes: Tensor  # (n, 4) x0 y0 x1 y1 pixels
    scores: Tensor  # (n,) descending
    labels: Tensor  # (n,) long: class index, tree node, or index into the requested label set


def head_view(output: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """(B, A, 5 + C, H, W) view of a (B, A·(5+C), H, W) head output, and the anchors as a tensor beside it."""
    anchors = torch.as_tensor(anchors, dtype=output.dtype, device=output.device)
    if output.dim() != 4 or anchors.dim() != 2 or anchors.shape[1] != 2:
        raise PostprocessError(f"expected output (B, A*(5+C), H, W) and anchors (A, 2); got {tuple(output.shape)} "
                               f"and {tuple(anchors.shape)}")
    batch, channels, height, width = output.shape
    num_anchors = anchors.shape[0]
    if channels % num_anchors or channels // num_anchors < 5:
        raise PostprocessError(f"{channels} output channels do not split into {num_anchors} anchors × (5 + classes)")
    return output.view(batch, num_anchors, channels // num_anchors, height, width), anchors


def boxes_and_objectness(raw: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Boxes (B, A·H·W, 4) normalised xyxy (geometry.decode_boxes) and objectness σ(to) (B, A·H·W) of a head view."""
    batch = raw.shape[0]
    head = raw[:, :, :4].permute(0, 1, 3, 4, 2)  # (B, A, H, W, 4)
    boxes = centre_to_corners(decode_boxes(head[..., :2].sigmoid(), head[..., 2:], anchors)).reshape(batch, -1, 4)
    return boxes, raw[:, :, 4].sigmoid().reshape(batch, -1)


def candidate_logits(raw: Tensor, image: Tensor, box: Tensor) -> Tensor:
    """(P, C) class logits of the boxes (image, flat box index) of a head view, copying only those rows."""
    _, _, _, height, width = raw.shape
    anchor, cell = box // (height * width), box % (height * width)
    return raw[image, anchor, 5:, cell // width, cell % width]


def decode_output(output: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, A·(5+C), H, W) → boxes (B, A·H·W, 4) normalised xyxy, objectness (B, A·H·W), class logits (B, A·H·W, C).

    Channel a·(5+C)+e (darknet-notes.md "Tensor layout and activations"); boxes through geometry.decode_boxes,
    objectness σ(to). Boxes come in darknet's order: anchor, then row, then column.
    """
    raw, anchors = head_view(output, anchors)
    boxes, objectness = boxes_and_objectness(raw, anchors)
    class_logits = raw[:, :, 5:].permute(0, 1, 3, 4, 2).reshape(raw.shape[0], -1, raw.shape[2] - 5)
    return boxes, objectness, class_logits


def flat_class_scores(objectness: Tensor, class_logits: Tensor) -> Tensor:
    """(B, M, C) objectness × softmax probability of each class (darknet's softmax path)."""
    return objectness[..., None] * class_logits.softmax(dim=-1)


def tree_absolute_probs(class_logits: Tensor, tree: TreeArrays) -> Tensor:
    """(B, M, C) absolute P(node): group softmax, then products down each path (darknet hierarchy_predictions)."""
    return absolute_log_probs(group_log_softmax(class_logits, tree), tree).exp()


def tree_top_down_scores(
    objectness: Tensor, class_logits: Tensor, tree: TreeArrays, config: PostprocessConfig = PostprocessConfig()
) -> tuple[Tensor, Tensor]:
    """(P,) score and (P,) tree node of each box's top-down label, from (P, C) class logits.

    `tree_score="product"` scores objectness × P(label); "objectness" scores objectness alone, as darknet
    HEAD's get_region_detections does (prob[j*] = scale), which ranks a vague "object" like a sure "dog".
    """
    if config.tree_score not in ("product", "objectness"):
        raise PostprocessError(f"tree_score must be 'product' or 'objectness', got {config.tree_score!r}")
    node, prob = top_down_decode_logits(class_logits, tree, config.hier_thresh, config.darknet_product)
    score = objectness * prob if config.tree_score == "product" else objectness
    return score, node


def label_set_scores(objectness: Tensor, class_logits: Tensor, tree: TreeArrays, label_nodes: Tensor) -> Tensor:
    """(P, L) objectness × absolute P(node) of (P, C) class logits for a fixed label set, e.g. the 80 COCO nodes
    (coco9k.map) or the 200 ImageNet-DET nodes (inet9k.map) of darknet's tree."""
    label_nodes = torch.as_tensor(label_nodes, dtype=torch.long, device=class_logits.device)
    return objectness[:, None] * label_log_probs(class_logits, tree, label_nodes).exp()


def to_image_pixels(boxes: Tensor, image_sizes: Tensor, input_size: int | Sequence[int]) -> Tensor:
    """Boxes (B, M, 4) normalised to the letterboxed input → pixels of each image (B, 2) (height, width), clipped."""
    if boxes.dim() != 3 or boxes.shape[0] != len(image_sizes):
        raise PostprocessError(f"boxes {tuple(boxes.shape)} must be (B, M, 4) with B = {len(image_sizes)} image sizes")
    net_h, net_w = size_hw(input_size)
    canvas = boxes * torch.tensor([net_w, net_h, net_w, net_h], dtype=boxes.dtype, device=boxes.device)
    return unletterbox_boxes(canvas, torch.as_tensor(image_sizes, device=boxes.device), input_size)


def select_detections(
    boxes: Tensor, scores: Tensor, labels: Tensor | None = None, config: PostprocessConfig = PostprocessConfig()
) -> list[Detections]:
    """Score threshold, per-class NMS (torchvision batched_nms) and at most max_detections per image.

    `scores` is (B, M, K) with one column per label (any box may be reported for several), or (B, M)
    with `labels` (B, M) when each box has a single label (the top-down tree label).
    """
    batch = boxes.shape[0]
    if labels is None:
        image, box, label = torch.nonzero(scores > config.score_threshold, as_tuple=True)
        score = scores[image, box, label]
    else:
        image, box = torch.nonzero(scores > config.score_threshold, as_tuple=True)
        score, label = scores[image, box], labels[image, box]
    candidates = boxes[image, box]  # (P, 4)
    groups = image * (int(label.max()) + 1 if label.numel() else 1) + label  # NMS never crosses images or labels
    keep = batched_nms(candidates.float(), score.float(), groups, config.iou_threshold)  # score-descending
    keep = keep[torch.argsort(image[keep], stable=True)]  # by image, score-descending within each
    counts = torch.bincount(image[keep], minlength=batch)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(keep.numel(), device=keep.device) - first[image[keep]]
    keep = keep[rank < config.max_detections]
    counts = counts.clamp(max=config.max_detections).tolist()
    return [
        Detections(b, s, l)
        for b, s, l in zip(candidates[keep].split(counts), score[keep].split(counts), label[keep].split(counts))
    ]


def postprocess(
    output: Tensor,
    anchors: Tensor,
    image_sizes: Tensor,
    input_size: int | Sequence[int],
    config: PostprocessConfig = PostprocessConfig(),
    tree: TreeArrays | None = None,
    label_nodes: Tensor | None = None,
) -> list[Detections]:
    """Raw head output of letterboxed images → `Detections` per image in its own pixels.

    `image_sizes` (B, 2) is each image's (height, width), as the loader's `orig_sizes`. Flat classes without
    `tree` (only the classes in `label_nodes` when given); with `tree`, the top-down label per box, or, with
    `label_nodes`, a score for every node of that label set. With `label_nodes`, labels index it.
    """
    raw, anchors = head_view(output, anchors)
    boxes, objectness = boxes_and_objectness(raw, anchors)
    pixels = to_image_pixels(boxes, image_sizes, input_size)
    if tree is None:
        scores = flat_class_scores(objectness, raw[:, :, 5:].permute(0, 1, 3, 4, 2).flatten(1, 3))
        if label_nodes is not None:
            scores = scores[..., torch.as_tensor(label_nodes, dtype=torch.long, device=scores.device)]
        return select_detections(pixels, scores, config=config)
    if raw.shape[2] - 5 != tree.num_nodes:
        raise PostprocessError(f"the head predicts {raw.shape[2] - 5} classes but the tree has {tree.num_nodes} nodes")
    # score = objectness × P(·) ≤ objectness: only boxes above the threshold need the tree (darknet zeroes the rest)
    image, box = torch.nonzero(objectness > config.score_threshold, as_tuple=True)
    rows = candidate_logits(raw, image, box)  # (P, C)
    if label_nodes is not None:
        kept = label_set_scores(objectness[image, box], rows, tree, label_nodes)  # (P, L)
        scores = kept.new_zeros(*objectness.shape, kept.shape[-1]).index_put_((image, box), kept)
        return select_detections(pixels, scores, config=config)
    kept_score, kept_node = tree_top_down_scores(objectness[image, box], rows, tree, config)
    score = objectness.new_zeros(objectness.shape).index_put_((image, box), kept_score)
    node = torch.zeros(objectness.shape, dtype=torch.long, device=objectness.device).index_put_((image, box), kept_node)
    return select_detections(pixels, score, node, config=config)


def to_coco_results(
    detections: Sequence[Detections], image_ids: Sequence[int], category_ids: Sequence[int]
) -> list[dict]:
    """COCO result rows {"image_id", "category_id", "bbox": [x, y, w, h], "score"}; category_ids[label] per label.

    With a tree, pass the COCO nodes (coco9k.map) as `label_nodes` to `postprocess`, so labels index the
    80 COCO classes and `category_ids` holds their 80 COCO ids.
    """
    if len(detections) != len(image_ids):
        raise PostprocessError(f"{len(detections)} images of detections but {len(image_ids)} image ids")
    category = torch.as_tensor(list(category_ids), dtype=torch.long)
    rows = []
    for det, image_id in zip(detections, image_ids):
        labels = det.labels.cpu()
        if labels.numel() and int(labels.max()) >= len(category):
            raise PostprocessError(f"label {int(labels.max())} has no COCO category id ({len(category)} given)")
        xywh = corners_to_xywh(det.boxes).cpu().tolist()
        rows += [
            {"image_id": int(image_id), "category_id": c, "bbox": b, "score": s}
            for c, b, s in zip(category[labels].tolist(), xywh, det.scores.cpu().tolist())
        ]
    return rows
