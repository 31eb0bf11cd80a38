import json
import math
from pathlib import Path

import pytest
import torch

from wordtree.darknet_files import load_tree
from yolo9000.hierarchy import TreeArrays, top_down_decode
from yolo9000.postprocess import (
    Detections,
    PostprocessConfig,
    PostprocessError,
    decode_output,
    postprocess,
    select_detections,
    to_coco_results,
    tree_absolute_probs,
    to_image_pixels,
)

ANCHORS = torch.tensor([[1.08, 1.19], [3.42, 4.41], [6.63, 11.38]])


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def slow_decode(output, anchors):
    """Darknet's get_region_box, one anchor and cell at a time, in entry_index order."""
    batch, channels, height, width = output.shape
    num_anchors = len(anchors)
    classes = channels // num_anchors - 5
    boxes, objectness, logits = [], [], []
    for b in range(batch):
        for a in range(num_anchors):
            for row in range(height):
                for col in range(width):
                    entry = [float(output[b, a * (5 + classes) + e, row, col]) for e in range(5 + classes)]
                    x = (col + sigmoid(entry[0])) / width
                    y = (row + sigmoid(entry[1])) / height
                    w = math.exp(entry[2]) * float(anchors[a, 0]) / width
                    h = math.exp(entry[3]) * float(anchors[a, 1]) / height
                    boxes.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2])
                    objectness.append(sigmoid(entry[4]))
                    logits.append(entry[5:])
    n = num_anchors * height * width
    return (torch.tensor(boxes).view(batch, n, 4), torch.tensor(objectness).view(batch, n),
            torch.tensor(logits).view(batch, n, classes))


def test_decode_matches_a_slow_loop_reference():
    torch.manual_seed(0)
    output = torch.randn(2, 3 * (5 + 4), 5, 7, dtype=torch.float64)
    boxes, objectness, logits = decode_output(output, ANCHORS)
    ref_boxes, ref_objectness, ref_logits = slow_decode(output, ANCHORS)
    torch.testing.assert_close(boxes, ref_boxes.double())
    torch.testing.assert_close(objectness, ref_objectness.double())
    torch.testing.assert_close(logits, ref_logits.double())


def one_confident_anchor_output(classes: int = 3) -> torch.Tensor:
    """13×13 output where only anchor 1 at row 4, column 6 sees an object of class 2, twice the anchor's size."""
    output = torch.zeros(1, 3 * (5 + classes), 13, 13)
    output[:, 4 :: 5 + classes] = -20.0  # every anchor: objectness σ(-20) ≈ 0
    channel = 1 * (5 + classes)
    output[0, channel + 0, 4, 6] = 0.0  # σ = .5: centre of the cell
    output[0, channel + 1, 4, 6] = 0.0
    output[0, channel + 2, 4, 6] = math.log(2.0)  # w = 2 · 3.42 cells
    output[0, channel + 3, 4, 6] = 0.0  # h = 4.41 cells
    output[0, channel + 4, 4, 6] = 20.0
    output[0, channel + 5 + 2, 4, 6] = 20.0
    return output


def test_one_confident_anchor_decodes_to_the_expected_box_in_pixels():
    detections = postprocess(one_confident_anchor_output(), ANCHORS, torch.tensor([[416, 416]]), input_size=416)
    assert len(detections) == 1 and len(detections[0].scores) == 1
    cell = 32.0
    cx, cy, w, h = 6.5 * cell, 4.5 * cell, 2 * 3.42 * cell, 4.41 * cell
    torch.testing.assert_close(detections[0].boxes, torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]]))
    assert detections[0].labels.tolist() == [2]
    assert detections[0].scores.item() == pytest.approx(1.0, abs=1e-6)


def test_nms_suppresses_overlapping_boxes_of_one_class_and_keeps_other_classes():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]]], dtype=torch.float)
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]]])  # (B, M, K)
    (det,) = select_detections(boxes, scores, config=PostprocessConfig(iou_threshold=0.45))
    assert det.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert det.labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(det.boxes, boxes[0, [0, 2, 3]])


def test_nms_never_crosses_images_and_caps_detections_per_image():
    one_box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.cat([one_box + 20 * i for i in range(5)]).expand(2, 5, 4)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.004], [0.1, 0.2, 0.3, 0.4, 0.5]])[..., None]
    first, second = select_detections(boxes, scores, config=PostprocessConfig(max_detections=3))
    assert first.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert second.scores.tolist() == pytest.approx([0.5, 0.4, 0.3])
    (shown,) = select_detections(boxes[:1], scores[:1], config=PostprocessConfig(score_threshold=0.5))
    assert shown.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_images_without_detections_give_empty_results():
    boxes = torch.rand(2, 4, 4)
    detections = select_detections(boxes, torch.zeros(2, 4, 3))
    assert [len(d.scores) for d in detections] == [0, 0]
    assert detections[0].boxes.shape == (0, 4)


def test_coco_rows_have_xywh_boxes_and_mapped_category_ids():
    detections = [
        Detections(torch.tensor([[10.0, 20.0, 40.0, 60.0]]), torch.tensor([0.75]), torch.tensor([1])),
        Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)),
    ]
    rows = to_coco_results(detections, image_ids=[139, 285], category_ids=[1, 90])
    assert rows == [{"image_id": 139, "category_id": 90, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.75}]
    json.dumps(rows)  # plain Python numbers only
    with pytest.raises(PostprocessError, match="no COCO category id"):
        to_coco_results(detections[:1], [139], category_ids=[1])


# A tiny tree in darknet order: roots animal(0), thing(1); animal → dog(2), cat(3); dog → terrier(4), poodle(5).
TINY_PARENT = [-1, -1, 0, 0, 2, 2]


def tiny_tree_output(objectness_logit: float = 2.0) -> tuple[torch.Tensor, dict]:
    """One anchor on a 1×1 grid with conditional P(animal)=.9, P(dog|animal)=.8, P(terrier|dog)=.55."""
    conditional = {0: 0.9, 1: 0.1, 2: 0.8, 3: 0.2, 4: 0.55, 5: 0.45}
    output = torch.zeros(1, 5 + 6, 1, 1, dtype=torch.float64)
    output[0, 4] = objectness_logit
    for node, p in conditional.items():
        output[0, 5 + node] = math.log(p)  # a softmax of log-probs within a group returns the probs
    absolute = {0: 0.9, 1: 0.1, 2: 0.72, 3: 0.18, 4: 0.396, 5: 0.324}
    return output, absolute


def test_tree_top_down_label_scores_objectness_times_its_absolute_probability():
    output, absolute = tiny_tree_output()
    tree = TreeArrays.from_parent(TINY_PARENT)
    config = PostprocessConfig(hier_thresh=0.5)
    (det,) = postprocess(output, torch.tensor([[1.0, 1.0]]), torch.tensor([[100, 100]]), 32, config, tree=tree)
    assert det.labels.tolist() == [2]  # dog: .72 > .5, but terrier .396 is not
    assert det.scores.item() == pytest.approx(sigmoid(2.0) * absolute[2])
    darknet = PostprocessConfig(hier_thresh=0.5, tree_score="objectness")
    (det,) = postprocess(output, torch.tensor([[1.0, 1.0]]), torch.tensor([[100, 100]]), 32, darknet, tree=tree)
    assert det.labels.tolist() == [2] and det.scores.item() == pytest.approx(sigmoid(2.0))
    low = PostprocessConfig(hier_thresh=0.3)
    (det,) = postprocess(output, torch.tensor([[1.0, 1.0]]), torch.tensor([[100, 100]]), 32, low, tree=tree)
    assert det.labels.tolist() == [4]


def test_tree_label_set_scores_are_objectness_times_absolute_probabilities():
    output, absolute = tiny_tree_output()
    tree = TreeArrays.from_parent(TINY_PARENT)
    label_nodes = torch.tensor([5, 3, 1])  # poodle, cat, thing: labels index this list (like inet9k.map)
    (det,) = postprocess(output, torch.tensor([[1.0, 1.0]]), torch.tensor([[100, 100]]), 32,
                         tree=tree, label_nodes=label_nodes)
    assert det.labels.tolist() == [0, 1, 2]
    expected = [sigmoid(2.0) * absolute[n] for n in (5, 3, 1)]
    assert det.scores.tolist() == pytest.approx(expected)


def test_mismatched_shapes_raise_errors_that_say_what_does_not_fit():
    with pytest.raises(PostprocessError, match="do not split into 3 anchors"):
        decode_output(torch.zeros(1, 20, 2, 2), ANCHORS)
    with pytest.raises(PostprocessError, match="tree has 6 nodes"):
        postprocess(torch.zeros(1, 5 + 4, 1, 1), torch.ones(1, 2), torch.tensor([[10, 10]]), 32,
                    tree=TreeArrays.from_parent(TINY_PARENT))


def test_tree_detections_skipping_low_objectness_boxes_equal_scoring_every_box():
    torch.manual_seed(3)
    tree = TreeArrays.from_parent(TINY_PARENT)
    output = torch.randn(2, 3 * (5 + 6), 4, 4, dtype=torch.float64) * 2
    sizes = torch.tensor([[480, 640], [500, 300]])  # (height, width)
    config = PostprocessConfig(score_threshold=0.3, hier_thresh=0.4)
    boxes, objectness, logits = decode_output(output, ANCHORS)
    pixels = to_image_pixels(boxes, sizes, 128)
    absolute = tree_absolute_probs(logits, tree)  # every box, no objectness filter, every group softmaxed
    assert ((objectness > 0.3).sum() < objectness.numel()) and (objectness > 0.3).any()
    node, prob = top_down_decode(absolute, tree, config.hier_thresh)
    expected = select_detections(pixels, objectness * prob, node, config=config)
    got = postprocess(output, ANCHORS, sizes, 128, config, tree=tree)
    label_nodes = torch.tensor([4, 3])
    expected_set = select_detections(pixels, objectness[..., None] * absolute[..., label_nodes], config=config)
    got_set = postprocess(output, ANCHORS, sizes, 128, config, tree=tree, label_nodes=label_nodes)
    for want, have in [*zip(expected, got), *zip(expected_set, got_set)]:
        assert len(have.scores) > 0
        torch.testing.assert_close(have.boxes, want.boxes)
        torch.testing.assert_close(have.scores, want.scores)
        assert have.labels.tolist() == want.labels.tolist()


DARKNET = Path(__file__).resolve().parents[1] / "wordtree" / "data" / "darknet"
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # 80, darknet order


def test_9k_tree_box_confident_along_the_dog_path_reports_dog_top_down_and_as_coco_dog():
    tree9k = load_tree(DARKNET / "9k.tree", DARKNET / "9k.names")
    tree = TreeArrays.from_parent(tree9k.parent)
    coco_nodes = torch.tensor([int(line) for line in (DARKNET / "coco9k.map").read_text().split()])
    coco_names = (DARKNET / "coco.names").read_text().split("\n")
    dog = int(coco_nodes[coco_names.index("dog")])
    output = torch.zeros(1, 5 + len(tree9k), 1, 1)
    output[0, 4] = 3.0
    output[0, 5 + torch.tensor(tree9k.path_to_root(dog))] = 12.0  # every group on the path picks it
    config = PostprocessConfig(score_threshold=0.5)
    (det,) = postprocess(output, torch.ones(1, 2), torch.tensor([[640, 480]]), 32, config, tree=tree)
    assert [tree9k.names[n] for n in det.labels.tolist()] == ["dog"]
    (coco,) = postprocess(output, torch.ones(1, 2), torch.tensor([[640, 480]]), 32, config, tree=tree,
                          label_nodes=coco_nodes)
    rows = to_coco_results([coco], image_ids=[42], category_ids=COCO_CATEGORY_IDS)
    assert [r["category_id"] for r in rows] == [18]  # COCO's id for dog
    assert rows[0]["score"] == pytest.approx(det.scores.item(), rel=1e-5)
