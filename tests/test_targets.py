"""targets.py: the region matcher on hand-made cases and against a brute-force search."""

import math

import torch

from yolo9000.batch import BatchTargets
from yolo9000.hierarchy import TreeArrays, absolute_log_probs, group_log_softmax
from yolo9000.targets import (
    Truths,
    assign_truths,
    box_iou,
    classification_anchor,
    ignore_mask,
    kept_class_steps,
    select_truths,
)


def truths_of(boxes_cxcywh, labels=None, image=None):
    box = torch.tensor(boxes_cxcywh, dtype=torch.float64)
    count = len(box)
    return Truths(
        image=torch.zeros(count, dtype=torch.long) if image is None else torch.tensor(image),
        row=torch.arange(count),
        box=box,
        label=torch.zeros(count, dtype=torch.long) if labels is None else torch.tensor(labels),
    )


def still_predictions(batch=1, anchors=2, grid=4):
    """Decoded predictions (B, A, H, W, 4) that are tiny boxes, so IoUs with truths are near zero."""
    return torch.full((batch, anchors, grid, grid, 4), 0.01, dtype=torch.float64)


def test_responsible_anchor_is_best_centred_shape_iou_with_ties_to_lower_index():
    anchors = torch.tensor([[1.0, 1.0], [2.0, 4.0], [2.0, 4.0]], dtype=torch.float64)
    truths = truths_of([[0.3, 0.3, 0.5, 1.0], [0.6, 0.6, 0.25, 0.25]])  # 2×4 cells, then 1×1 cell
    assignment = assign_truths(truths, still_predictions(anchors=3), anchors)
    assert assignment.anchor.tolist() == [1, 0]


def test_regression_targets_are_darknets_cell_offsets_and_log_size_ratios():
    anchors = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    truths = truths_of([[0.3, 0.6, 0.5, 0.25], [1.0, 1.0, 0.2, 0.2]])
    assignment = assign_truths(truths, still_predictions(anchors=1), anchors)
    tx, ty, tw, th = assignment.box_target[0].tolist()
    assert math.isclose(tx, 0.3 * 4 - 1) and math.isclose(ty, 0.6 * 4 - 2)
    assert math.isclose(tw, math.log(0.5 * 4 / 1.0)) and math.isclose(th, math.log(0.25 * 4 / 2.0))
    # col 1, row 2 of a 4×4 grid; a centre on the far edge is clamped into the last cell
    assert assignment.slot.tolist() == [2 * 4 + 1, 3 * 4 + 3]


def test_later_truth_wins_a_shared_slot_and_other_images_do_not_compete():
    anchors = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    truths = truths_of([[0.3, 0.3, 0.2, 0.2], [0.31, 0.32, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]], image=[0, 0, 1])
    assignment = assign_truths(truths, still_predictions(batch=2, anchors=1), anchors)
    assert assignment.wins.tolist() == [False, True, True]


def test_iou_is_measured_with_the_current_prediction_at_the_slot():
    anchors = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    pred = still_predictions(anchors=1)
    pred[0, 0, 1, 1] = torch.tensor([0.375, 0.375, 0.25, 0.25])
    assignment = assign_truths(truths_of([[0.375, 0.375, 0.25, 0.125]]), pred, anchors)
    assert assignment.iou.item() == 0.5


def test_bias_match_off_picks_the_anchor_whose_predicted_shape_fits():
    anchors = torch.tensor([[1.0, 1.0], [3.0, 3.0]], dtype=torch.float64)
    pred = still_predictions(anchors=2)
    pred[0, 0, 1, 1, 2:] = 0.6  # anchor 0 currently predicts a big box
    truth = truths_of([[0.375, 0.375, 0.6, 0.6]])
    assert assign_truths(truth, pred, anchors, bias_match=False).anchor.item() == 0
    truth = truths_of([[0.375, 0.375, 0.7, 0.7]])
    assert assign_truths(truth, pred, anchors, bias_match=True).anchor.item() == 1


def test_kept_class_steps_drop_only_the_groups_a_later_truth_rewrites():
    tree = TreeArrays.from_parent([-1, -1, 0, 0, 1, 2, 2])  # paths: 5→2→0, 4→1, 3→0
    slot = torch.tensor([7, 7, 7])
    kept = kept_class_steps(slot, torch.tensor([5, 4, 3]), tree)
    # 5 keeps its group {5, 6}; {2, 3} is rewritten by 3; the root group by 4, then by 3. 4 keeps {4}.
    assert kept.tolist() == [[True, False, False], [True, False, False], [True, True, False]]
    kept = kept_class_steps(torch.tensor([7, 8]), torch.tensor([5, 4]), tree)
    assert kept.tolist() == [[True, True, True], [True, True, False]]


def test_ignore_mask_uses_a_strict_threshold_and_only_valid_truths():
    pred = still_predictions(anchors=1, grid=1)
    pred[0, 0, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5])
    boxes = torch.tensor([[[0.25, 0.375, 0.75, 0.625], [0.25, 0.25, 0.75, 0.75]]], dtype=torch.float64)
    assert box_iou(pred[0, 0, 0, 0], torch.tensor([0.5, 0.5, 0.5, 0.25], dtype=torch.float64)) == 0.5
    only_first = torch.tensor([[True, False]])
    assert not ignore_mask(pred, boxes, only_first, 0.5).any()
    assert ignore_mask(pred, boxes, only_first, 0.49).all()
    assert ignore_mask(pred, boxes, torch.tensor([[True, True]]), 0.5).all()


def test_select_truths_skips_padding_and_classification_images():
    targets = BatchTargets(
        boxes=torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.3]], [[0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0]]]),
        labels=torch.tensor([[-1, 3], [2, -1]]),
        is_classification=torch.tensor([False, True]),
        image_label=torch.tensor([-1, 1]),
    )
    truths = select_truths(targets, num_classes=4)
    assert truths.image.tolist() == [0] and truths.label.tolist() == [3]
    torch.testing.assert_close(truths.box, torch.tensor([[0.15, 0.2, 0.1, 0.2]]))


def test_classification_anchor_maximises_objectness_times_label_probability():
    tree = TreeArrays.from_parent([-1, -1, 0, 0, 0, 1, 1, 4, 4])
    gen = torch.Generator().manual_seed(0)
    objectness = torch.randn(3, 2, 3, 4, generator=gen, dtype=torch.float64)
    logits = torch.randn(3, 2, 9, 3, 4, generator=gen, dtype=torch.float64) * 2
    labels = torch.tensor([7, 5, 0])
    chosen = classification_anchor(objectness, logits, labels, tree)
    absolute = absolute_log_probs(group_log_softmax(logits.movedim(2, -1), tree), tree).exp()  # (B, A, H, W, C)
    for b in range(3):
        best, best_index = 0.0, 0
        for index, (a, j, i) in enumerate((a, j, i) for a in range(2) for j in range(3) for i in range(4)):
            p = torch.sigmoid(objectness[b, a, j, i]) * absolute[b, a, j, i, labels[b]]
            if p > best:
                best, best_index = p, index
        assert chosen[b].item() == best_index


def test_classification_anchor_ties_go_to_the_first_anchor():
    tree = TreeArrays.from_parent([-1, -1])
    chosen = classification_anchor(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2, 2), torch.tensor([1]), tree)
    assert chosen.tolist() == [0]
