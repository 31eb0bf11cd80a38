"""RegionLoss: autograd gradients equal −(darknet's deltas) from the slow loop replica, plus loss properties."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from darknet_reference import region_reference
from wordtree.darknet_files import load_tree
from yolo9000.batch import BatchTargets
from yolo9000.geometry import decode_boxes
from yolo9000.hierarchy import TreeArrays
from yolo9000.loss import RegionLoss, RegionLossConfig
from yolo9000.targets import TargetError, ignore_mask

NINE_K_TREE = Path(__file__).resolve().parents[1] / "wordtree" / "data" / "darknet" / "9k.tree"
ANCHORS = [[0.8, 1.2], [1.5, 1.5], [2.5, 1.4]]
SMALL_TREE = [-1, -1, -1, 0, 0, 1, 1, 1, 3, 3, 3, 6, 6, 8, 8]  # three roots, depth 3


def make_batch(seed, num_classes, labels, is_classification=(False, False, True), grid=4, anchors=ANCHORS):
    """Random raw output and truths: per detection image 4 random boxes, a second truth in the same
    (cell, anchor) as the first, and a truth copied from a prediction (so that the ignore test fires)."""
    rng = np.random.default_rng(seed)
    batch, num_anchors = len(is_classification), len(anchors)
    output = rng.normal(size=(batch, num_anchors, 5 + num_classes, grid, grid))
    output[:, :, 2:4] *= 0.3
    output = output.reshape(batch, -1, grid, grid)
    rows = 7
    boxes = np.zeros((batch, rows, 4))
    label = np.full((batch, rows), -1)
    for b in range(batch):
        centre = rng.uniform(0.15, 0.85, size=(4, 2))
        size = rng.uniform(0.08, 0.5, size=(4, 2))
        boxes[b, :4] = np.concatenate([centre - size / 2, centre + size / 2], 1)
        boxes[b, 4] = boxes[b, 0] + 0.001  # same cell and shape as row 0: the same slot, later truth
        label[b, :5] = rng.choice(labels, size=5)
        pred = decode_boxes(
            torch.sigmoid(torch.tensor(output[b : b + 1]).view(1, num_anchors, -1, grid, grid)[:, :, :2].permute(0, 1, 3, 4, 2)),
            torch.tensor(output[b : b + 1]).view(1, num_anchors, -1, grid, grid)[:, :, 2:4].permute(0, 1, 3, 4, 2),
            torch.tensor(anchors, dtype=torch.float64),
        )[0, 1, 1, min(2, grid - 1)].numpy()
        boxes[b, 6] = np.clip(np.r_[pred[:2] - pred[2:] / 2, pred[:2] + pred[2:] / 2], 0.01, 0.99)
        label[b, 6] = rng.choice(labels)
    image_label = np.where(is_classification, rng.choice(labels, size=batch), -1)
    targets = BatchTargets(torch.tensor(boxes), torch.tensor(label), torch.tensor(is_classification),
                           torch.tensor(image_label))
    return torch.tensor(output, requires_grad=True), targets


def run_both(output, targets, num_classes, parent, seen, anchors=ANCHORS, **config):
    """(autograd gradient, stats, result) of RegionLoss and (gradient, stats) of the darknet replica."""
    tree = TreeArrays.from_parent(parent) if parent is not None else None
    criterion = RegionLoss(torch.tensor(anchors, dtype=torch.float64), num_classes, tree, RegionLossConfig(**config)).train()
    criterion.seen.fill_(seen)
    result = criterion(output, targets)
    (gradient,) = torch.autograd.grad(result.total, output)
    reference_config = {k: v for k, v in config.items() if k != "darknet_version"}
    expected, expected_stats = region_reference(
        output.detach().numpy(), targets.boxes.numpy(), targets.labels.numpy(),
        targets.is_classification.numpy(), targets.image_label.numpy(), anchors, num_classes, parent,
        seen=seen + output.shape[0], version=config.get("darknet_version", "paper"), **reference_config,
    )
    return gradient.numpy(), result, expected, expected_stats


def assert_stats_equal(stats, expected):
    assert stats.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(stats[key], expected[key], rtol=1e-9, err_msg=key)


@pytest.mark.parametrize("version", ["paper", "final"])
@pytest.mark.parametrize("seen", [0, 12800])
def test_gradient_equals_darknet_deltas_with_flat_softmax(version, seen):
    output, targets = make_batch(0, 6, labels=range(6), is_classification=(False, False, True))
    gradient, result, expected, expected_stats = run_both(output, targets, 6, None, seen, darknet_version=version)
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)
    assert (result.terms["prior"] > 0) == (seen == 0)


@pytest.mark.parametrize("version", ["paper", "final"])
@pytest.mark.parametrize("seed", [1, 2])
def test_gradient_equals_darknet_deltas_with_a_small_tree(version, seed):
    output, targets = make_batch(seed, len(SMALL_TREE), labels=range(len(SMALL_TREE)), is_classification=(False, True, False))
    gradient, result, expected, expected_stats = run_both(output, targets, len(SMALL_TREE), SMALL_TREE, 0, darknet_version=version)
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)


def test_later_truth_in_the_same_slot_overwrites_only_its_own_path_groups():
    # node 13 (path 13 → 8 → 3 → 0) then node 6 (path 6 → 1) in the same slot: 13's groups below the roots
    # keep their deltas, the root group goes to 6. Then 8 after 13: 13's own group {13, 14} is kept.
    for labels in ([13, 6], [13, 8], [8, 13], [5, 6]):
        output, targets = make_batch(3, len(SMALL_TREE), labels=[0], is_classification=(False,))
        targets.labels[0, :] = -1
        targets.labels[0, 0], targets.labels[0, 4] = labels
        gradient, result, expected, _ = run_both(output, targets, len(SMALL_TREE), SMALL_TREE, 20000)
        np.testing.assert_allclose(gradient, expected, atol=1e-12)


@pytest.mark.parametrize("version", ["paper", "final"])
def test_gradient_equals_darknet_deltas_on_the_9k_tree(version):
    parent = load_tree(NINE_K_TREE).parent.tolist()
    labels = [5177, 8490, 8545, 2, 42, 7343, 9417, 1000]  # person, two persons, object, apple, zebra, ...
    output, targets = make_batch(4, 9418, labels=labels, is_classification=(False, True), grid=2, anchors=ANCHORS[:2])
    gradient, result, expected, expected_stats = run_both(output, targets, 9418, parent, 0, anchors=ANCHORS[:2], darknet_version=version)
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)


@pytest.mark.parametrize("version", ["paper", "final"])
def test_gradient_equals_darknet_deltas_for_classification_only_images(version):
    output, targets = make_batch(5, len(SMALL_TREE), labels=range(len(SMALL_TREE)), is_classification=(True, True))
    with torch.no_grad():  # image 0: every σ(obj) < .3, image 1: mostly > .3; both branches of the .3 rule
        output[0, 4::5 + len(SMALL_TREE)] -= 3.0
        output[1, 4::5 + len(SMALL_TREE)] += 1.0
    gradient, result, expected, expected_stats = run_both(output, targets, len(SMALL_TREE), SMALL_TREE, 0, darknet_version=version)
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)
    assert result.terms["coord"] == 0 and result.terms["prior"] == 0
    assert (result.terms["objectness"] > 0) == (version == "paper")


def test_gradient_equals_darknet_deltas_without_bias_match_or_rescore():
    output, targets = make_batch(6, 5, labels=range(5), is_classification=(False, False))
    gradient, result, expected, expected_stats = run_both(
        output, targets, 5, None, 100, bias_match=False, rescore=False, object_scale=3.0, coord_scale=2.0,
        noobject_scale=0.5, class_scale=1.5, thresh=0.5,
    )
    np.testing.assert_allclose(gradient, expected, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)


def test_noobject_loss_ignores_predictions_overlapping_a_truth():
    output, targets = make_batch(7, 4, labels=range(4), is_classification=(False,))
    criterion = RegionLoss(torch.tensor(ANCHORS), 4, config=RegionLossConfig(prior_images=0))
    criterion(output, targets).terms["noobject"].backward()
    objectness_grad = output.grad.view(1, 3, 9, 4, 4)[:, :, 4]
    pred = decode_boxes(torch.sigmoid(output.detach().view(1, 3, 9, 4, 4)[:, :, :2].permute(0, 1, 3, 4, 2)),
                        output.detach().view(1, 3, 9, 4, 4)[:, :, 2:4].permute(0, 1, 3, 4, 2), torch.tensor(ANCHORS).double())
    ignored = ignore_mask(pred, targets.boxes, targets.labels >= 0, 0.6)
    assert ignored[0, 1, 1, 2]  # the fixture's truth copied from this prediction
    assert torch.all(objectness_grad[ignored] == 0)


def test_image_without_boxes_gives_exactly_zero_box_class_and_objectness_terms():
    output, targets = make_batch(8, 6, labels=range(6), is_classification=(False,))
    targets.labels[:] = -1
    result = RegionLoss(torch.tensor(ANCHORS), 6)(output, targets)
    for term in ("coord", "class", "objectness"):
        assert result.terms[term].item() == 0.0
    assert result.terms["noobject"] > 0 and result.stats["count"] == 0


@pytest.mark.parametrize("parent", [None, SMALL_TREE])
def test_batch_loss_equals_sum_of_single_image_losses(parent):
    num_classes = len(SMALL_TREE) if parent else 6
    output, targets = make_batch(9, num_classes, labels=range(num_classes), is_classification=(False, True, False))
    tree = TreeArrays.from_parent(parent) if parent else None
    criterion = RegionLoss(torch.tensor(ANCHORS), num_classes, tree).eval()
    batch = criterion(output, targets)
    singles = [criterion(output[b : b + 1], targets.select(slice(b, b + 1))) for b in range(3)]
    for term, value in batch.terms.items():
        torch.testing.assert_close(value, sum(s.terms[term] for s in singles))


def test_seen_is_a_buffer_counting_training_images_and_ending_the_prior_term():
    output, targets = make_batch(10, 4, labels=range(4), is_classification=(False, False))
    criterion = RegionLoss(torch.tensor(ANCHORS), 4, config=RegionLossConfig(prior_images=5))
    assert "seen" in criterion.state_dict()
    assert criterion(output, targets).terms["prior"] > 0  # seen 2 < 5
    criterion(output, targets)  # seen 4
    assert criterion(output, targets).terms["prior"] == 0  # seen 6: darknet adds the batch before the check
    criterion.eval()
    criterion(output, targets)
    assert int(criterion.seen) == 6
    restored = RegionLoss(torch.tensor(ANCHORS), 4)
    restored.load_state_dict(criterion.state_dict())
    assert int(restored.seen) == 6


def test_bad_targets_and_output_shapes_are_refused_with_the_place():
    output, targets = make_batch(11, 4, labels=range(4), is_classification=(False, True))
    criterion = RegionLoss(torch.tensor(ANCHORS), 4)
    bad = replace(targets, labels=targets.labels.clone())
    bad.labels[0, 2] = 4
    with pytest.raises(TargetError, match=r"\[0, 2\] = 4"):
        criterion(output, bad)
    bad = replace(targets, image_label=torch.tensor([-1, -1]))
    with pytest.raises(TargetError, match=r"image_label\[1\]"):
        criterion(output, bad)
    with pytest.raises(ValueError, match="channels"):
        RegionLoss(torch.tensor(ANCHORS), 5)(output, targets)


def test_more_than_darknets_30_truths_per_image_all_count():
    gen = torch.Generator().manual_seed(12)
    centre = torch.rand(1, 40, 2, generator=gen) * 0.6 + 0.2
    boxes = torch.cat([centre - 0.1, centre + 0.1], -1)
    targets = BatchTargets.detection(boxes, torch.arange(40)[None] % 4)
    output = torch.randn(1, 3 * 9, 13, 13)
    assert RegionLoss(torch.tensor(ANCHORS), 4)(output, targets).stats["count"] == 40


@pytest.mark.parametrize("noobject,anchor", [("off", "darknet"), ("darknet", "objectness"), ("off", "objectness")])
def test_classification_image_options_equal_the_reference_with_the_same_choice(noobject, anchor):
    output, targets = make_batch(13, len(SMALL_TREE), labels=range(len(SMALL_TREE)), is_classification=(True, False, True))
    gradient, result, expected, expected_stats = run_both(
        output, targets, len(SMALL_TREE), SMALL_TREE, 0, classification_noobject=noobject, classification_anchor=anchor)
    np.testing.assert_allclose(gradient, expected, rtol=1e-9, atol=1e-12)
    assert_stats_equal(result.stats, expected_stats)


def test_without_the_classification_noobject_push_other_anchors_of_a_classification_image_get_no_gradient():
    output, targets = make_batch(14, 6, labels=range(6), is_classification=(True,))
    criterion = RegionLoss(torch.tensor(ANCHORS, dtype=torch.float64), 6, config=RegionLossConfig(
        classification_noobject="off", darknet_version="final"))  # final: the chosen anchor's objectness gets 0 too
    (gradient,) = torch.autograd.grad(criterion(output, targets).total, output)
    objectness_gradient = gradient.view(1, len(ANCHORS), 11, 4, 4)[:, :, 4]
    assert objectness_gradient.abs().sum() == 0
    assert gradient.abs().sum() > 0


def test_objectness_choice_of_the_classification_anchor_ignores_the_class_scores():
    output, targets = make_batch(15, 6, labels=range(6), is_classification=(True,))
    raw = output.detach().view(1, len(ANCHORS), 11, 4, 4)
    best = int(raw[:, :, 4].reshape(-1).argmax())
    criterion = RegionLoss(torch.tensor(ANCHORS, dtype=torch.float64), 6, config=RegionLossConfig(classification_anchor="objectness"))
    (gradient,) = torch.autograd.grad(criterion(output, targets).terms["class"], output)
    class_gradient = gradient.view(1, len(ANCHORS), 11, 16)[0, :, 5:].abs().sum(1).reshape(-1)  # (A·H·W,)
    assert class_gradient.nonzero().reshape(-1).tolist() == [best]


def test_seen_counts_the_images_of_every_replica():
    output, targets = make_batch(16, 4, labels=range(4), is_classification=(False, False))
    criterion = RegionLoss(torch.tensor(ANCHORS), 4, replicas=3).train()
    criterion(output, targets)
    assert int(criterion.seen) == 6


def test_statistics_are_computed_only_when_asked():
    output, targets = make_batch(17, 4, labels=range(4), is_classification=(False,))
    criterion = RegionLoss(torch.tensor(ANCHORS), 4)
    quiet, full = criterion(output, targets, compute_stats=False), criterion(output, targets)
    assert quiet.stats == {} and full.stats["count"] > 0
    torch.testing.assert_close(quiet.total, full.total)
