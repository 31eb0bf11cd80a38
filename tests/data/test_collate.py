import pytest
import torch

from yolo9000.data.collate import CollateError, collate, to_network_input
from yolo9000.data.transforms import distort_hsv


def sample(key: str, boxes, labels, size: int = 32, image_label: int = -1):
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "image_label": image_label, "is_classification": image_label >= 0, "source": key.split("-")[0], "key": key,
    }
    return torch.full((3, size, size), len(labels), dtype=torch.uint8), target


def test_batch_has_the_contract_shapes_dtypes_and_padding():
    batch = collate([
        sample("coco-1", [[0, 0, 16, 8], [8, 8, 32, 32]], [5, 6]),
        sample("imagenet-2", [], [], image_label=9),
        sample("coco-3", [[4, 4, 8, 8]], [2]),
    ], max_boxes=4)
    assert batch["images"].shape == (3, 3, 32, 32) and batch["images"].dtype == torch.uint8
    assert batch["targets"].boxes.shape == (3, 4, 4) and batch["targets"].boxes.dtype == torch.float32
    assert batch["targets"].labels.dtype == torch.int64 and (batch["targets"].labels >= 0).sum(1).tolist() == [2, 0, 1]
    assert batch["targets"].boxes[0, :2].tolist() == [[0, 0, 0.5, 0.25], [0.25, 0.25, 1, 1]]
    assert batch["targets"].labels.tolist() == [[5, 6, -1, -1], [-1, -1, -1, -1], [2, -1, -1, -1]]
    assert (batch["targets"].boxes[0, 2:] == 0).all() and (batch["targets"].boxes[1] == 0).all()
    assert batch["targets"].is_classification.tolist() == [False, True, False]
    assert batch["targets"].image_label.tolist() == [-1, 9, -1]
    assert batch["keys"] == ["coco-1", "imagenet-2", "coco-3"] and batch["sources"] == ["coco", "imagenet", "coco"]
    assert batch["hsv"].tolist() == [[0, 1, 1]] * 3
    assert batch["orig_sizes"].tolist() == [[32, 32]] * 3


def test_boxes_beyond_max_boxes_are_dropped_and_counted():
    boxes = [[i, i, i + 4, i + 4] for i in range(7)]
    batch = collate([sample("coco-1", boxes, list(range(7))), sample("coco-2", boxes[:2], [0, 1])], max_boxes=3)
    assert (batch["targets"].labels >= 0).sum(1).tolist() == [3, 2] and batch["targets"].labels[0].tolist() == [0, 1, 2]
    assert batch["dropped"]["over_max_boxes"] == 4


def test_images_of_different_sizes_are_refused_naming_the_sample():
    with pytest.raises(CollateError, match="coco-2"):
        collate([sample("coco-1", [], []), sample("coco-2", [], [], size=16)])


def test_network_input_is_float_in_unit_range_at_the_asked_size():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    same = to_network_input(images, 32)
    assert same.dtype == torch.float32 and torch.allclose(same * 255, images.float())
    bigger = to_network_input(images, 48)
    assert bigger.shape == (2, 3, 48, 48) and bigger.min() >= 0 and bigger.max() <= 1
    flat = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    assert torch.allclose(to_network_input(flat, 64), torch.full((1, 3, 64, 64), 100 / 255))


def test_network_input_applies_each_samples_hsv_factors():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    factors = torch.tensor([[0.0, 1.0, 1.0], [0.05, 1.2, 0.7]])
    out = to_network_input(images, 8, factors)
    assert torch.allclose(out[0], images[0].float() / 255, atol=1e-6)
    assert torch.allclose(out[1], distort_hsv(images[1:].float() / 255, factors[1:])[0])


def test_images_can_be_stacked_into_a_given_buffer():
    samples = [sample("coco-1", [[0, 0, 16, 8]], [5]), sample("coco-2", [], [])]
    buffer = torch.zeros(2 * 3 * 32 * 32, dtype=torch.uint8)
    batch = collate(samples, max_boxes=2, out=buffer)
    assert batch["images"].data_ptr() == buffer.data_ptr()
    assert torch.equal(batch["images"], collate(samples, max_boxes=2)["images"])
