"""The device warp against the worker path: the same boxes, pixels that differ only by interpolation, and boxes
that sit exactly around the pixels they were drawn as, on both paths and at any multi-scale size."""

import numpy as np
import pytest
import torch

from yolo9000.data import transforms as T
from yolo9000.data.collate import collate, collate_for_warp, pad_onto_canvas
from yolo9000.data.warp import device_batch, warp_boxes, warp_images
from yolo9000.geometry import letterbox_boxes

SIZE = 96
RECIPES = {
    "detection": lambda defer: T.detection_train(SIZE, defer=defer),
    "classification": lambda defer: T.classification_train(SIZE, defer=defer),
    "evaluation": lambda defer: T.evaluation(SIZE, defer=defer),
}
# Stated bounds, in grey levels of 255, on a smooth image (1.5 levels per source pixel): the worker resizes the
# in-image part to whole output pixels (up to half an output pixel off), rounds to uint8, rotates by nearest
# neighbour (classification) and antialiases the letterbox; the warp samples once, bilinearly.
PIXEL_BOUND = {"detection": (3.0, 1.2), "classification": (3.0, 0.8), "evaluation": (1.0, 0.3)}  # (max, mean)


def target_for(boxes, height: int, width: int, classification: bool = False) -> dict:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    count = len(boxes)
    return {"boxes": boxes, "labels": torch.arange(count), "crowd": torch.zeros(count, dtype=torch.bool),
            "difficult": torch.zeros(count, dtype=torch.bool), "image_label": 3 if classification else -1,
            "is_classification": classification, "source": "test", "key": "k", "orig_size": (height, width)}


def smooth_image(height: int, width: int) -> torch.Tensor:
    """(3, H, W) uint8 ramps, channels-last like a decoded JPEG."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    image = torch.stack([xs * 1.5, ys * 1.5, (xs + ys) * 0.7]).clamp(0, 255).round().to(torch.uint8)
    return image.permute(1, 2, 0).contiguous().permute(2, 0, 1)


def rectangle_image(height: int, width: int, box: list[int]) -> torch.Tensor:
    image = torch.full((height, width, 3), 40, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 230
    return image.permute(2, 0, 1)


def worker_path(recipe: str, image, target, seed: int, max_boxes: int = 30) -> dict:
    transformed = RECIPES[recipe](False)(image, target, torch.Generator().manual_seed(seed))
    return collate([transformed], max_boxes)


def device_path(recipe: str, image, target, seed: int, size: int = SIZE, max_boxes: int = 30):
    deferred = RECIPES[recipe](True)(image, target, torch.Generator().manual_seed(seed))
    batch = collate_for_warp([deferred], max_boxes)
    targets, dropped = warp_boxes(batch["targets"], batch["warp"])
    return warp_images(batch["images"], batch["warp"], size), targets, dropped, batch


@pytest.mark.parametrize("recipe", ["detection", "classification", "evaluation"])
def test_both_paths_give_the_same_boxes_and_the_same_cap_after_dropping(recipe):
    height, width = 120, 160
    image = smooth_image(height, width)
    boxes = [[10, 10, 60, 50], [100, 70, 159, 119], [0, 0, 2, 100], [50, 20, 70, 110], [-5, 30, 40, 60]]
    for seed in range(25):
        target = target_for(boxes, height, width, classification=recipe == "classification")
        expected = worker_path(recipe, image, target, seed, max_boxes=3)
        _, got, _, _ = device_path(recipe, image, target, seed, max_boxes=3)
        assert torch.equal(got.labels, expected["targets"].labels), seed
        assert (got.boxes - expected["targets"].boxes).abs().max() <= 1e-4, seed


@pytest.mark.parametrize("recipe", ["detection", "classification", "evaluation"])
def test_pixels_differ_from_the_worker_path_only_by_interpolation(recipe):
    image = smooth_image(120, 160)
    worst, mean = PIXEL_BOUND[recipe]
    for seed in range(12):
        expected = worker_path(recipe, image, target_for([], 120, 160), seed)["images"].float()
        warped = device_path(recipe, image, target_for([], 120, 160), seed)[0] * 255
        difference = (warped - expected).abs()
        assert difference.max() <= worst and difference.mean() <= mean, (seed, difference.max(), difference.mean())


def test_the_evaluation_letterbox_maps_boxes_as_geometry_does_and_keeps_its_bars_grey():
    image = smooth_image(70, 150)
    boxes = torch.tensor([[3.0, 4.0, 50.5, 60.0], [100.0, 0.0, 150.0, 70.0]])
    warped, targets, _, _ = device_path("evaluation", image, target_for(boxes, 70, 150), seed=0)
    expected = letterbox_boxes(boxes, (70, 150), SIZE) / SIZE
    assert torch.allclose(targets.boxes[0, :2], expected, atol=1e-6, rtol=0)
    letterboxed = T.letterbox_image(image, SIZE)
    bars = (letterboxed == T.GREY).all(0)  # rows above and below the 96 x 44 image
    assert bars.sum() == SIZE * (SIZE - 44) and torch.equal(warped[0][:, bars], torch.full_like(warped[0][:, bars], T.GREY / 255))


def bright_bounds(image: torch.Tensor) -> list[int]:
    """x0 y0 x1 y1 (pixel edges) of the pixels nearer the rectangle's grey level than the background's."""
    rows, cols = torch.nonzero(image.float().mean(0) > 135, as_tuple=True)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


@pytest.mark.parametrize("seed", range(16))
def test_a_drawn_rectangles_box_is_found_around_its_pixels_on_both_paths_and_every_size(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    x0, y0 = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))  # inside: no edge-clamp smear
    x1, y1 = int(rng.integers(x0 + 12, width - 8)), int(rng.integers(y0 + 12, height - 8))
    image, target = rectangle_image(height, width, [x0, y0, x1, y1]), target_for([[x0, y0, x1, y1]], height, width)
    worker = worker_path("detection", image, target, seed)
    box = (worker["targets"].boxes[0, 0] * SIZE).tolist()
    assert np.abs(np.array(bright_bounds(worker["images"][0])) - box).max() <= 1, (box, bright_bounds(worker["images"][0]))
    for size in (SIZE, 64, 160):  # the step's multi-scale size, folded into the one warp
        warped, targets, _, _ = device_path("detection", image, target, seed, size=size)
        box = (targets.boxes[0, 0] * size).tolist()
        assert np.abs(np.array(bright_bounds(warped[0] * 255)) - box).max() <= 1, (size, box, bright_bounds(warped[0] * 255))


def test_boxes_dropped_as_small_and_over_the_cap_are_counted():
    image = smooth_image(100, 100)
    boxes = [[10, 10, 40, 40], [50, 50, 50.2, 90], [20, 20, 60, 60], [30, 30, 90, 90]]
    _, targets, dropped, _ = device_path("evaluation", image, target_for(boxes, 100, 100), seed=0, max_boxes=2)
    assert targets.labels[0].tolist() == [0, 1] and dropped.tolist() == [0, 2]  # evaluation keeps thin boxes
    _, targets, dropped, _ = device_path("detection", image, target_for(boxes, 100, 100), seed=3, max_boxes=5)
    assert dropped[0] >= 1 and targets.labels.shape == (1, 5) and 1 not in targets.labels[0].tolist()


def test_the_canvas_holds_each_image_at_its_corner_with_its_true_size_and_zero_padding():
    images = [smooth_image(30, 50), smooth_image(45, 20)]
    canvas = pad_onto_canvas(images, torch.full((2 * 45 * 50 * 3,), 7, dtype=torch.uint8))
    assert canvas.shape == (2, 3, 45, 50) and canvas.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(canvas[0, :, :30, :50], images[0]) and torch.equal(canvas[1, :, :45, :20], images[1])
    assert (canvas[0, :, 30:] == 0).all() and (canvas[1, :, :, 20:] == 0).all()


def test_device_batch_takes_both_batch_forms_to_the_same_network_input_size_and_targets():
    image, target = smooth_image(80, 96), target_for([[10, 10, 50, 40]], 80, 96)
    worker = collate([T.detection_train(SIZE)(image, target, torch.Generator().manual_seed(5))], max_boxes=4)
    device = collate_for_warp([T.detection_train(SIZE, defer=True)(image, target, torch.Generator().manual_seed(5))],
                              max_boxes=4)
    (x_worker, t_worker), (x_device, t_device) = device_batch(worker, 64, "cpu"), device_batch(device, 64, "cpu")
    assert x_worker.shape == x_device.shape == (1, 3, 64, 64) and x_device.dtype == torch.float32
    assert (x_worker - x_device).abs().mean() < 0.02  # HSV applied alike on both; pixels differ by interpolation
    assert torch.allclose(t_worker.boxes, t_device.boxes, atol=1e-4) and torch.equal(t_worker.labels, t_device.labels)
