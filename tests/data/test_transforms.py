import colorsys

import numpy as np
import pytest
import torch

from yolo9000.data import transforms as T


def rectangle_image(height: int, width: int, box: list[int]) -> torch.Tensor:
    """Dark uint8 image with one light filled rectangle at box (x0, y0, x1, y1)."""
    image = torch.full((3, height, width), 40, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 230
    return image


def target_for(boxes, labels=None, crowd=None, difficult=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    count = len(boxes)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels if labels is not None else list(range(count)), dtype=torch.int64),
        "crowd": torch.tensor(crowd or [False] * count),
        "difficult": torch.tensor(difficult or [False] * count),
        "image_label": -1, "is_classification": False, "source": "test", "key": "k",
    }


def assert_box_sits_on_the_rectangle(image: torch.Tensor, box: torch.Tensor, margin: int = 2):
    """Pixels inside the box (shrunk by margin) are light; a band just outside it is dark."""
    x0, y0, x1, y1 = box.tolist()
    gray = image.float().mean(0)
    inner = gray[round(y0) + margin : round(y1) - margin, round(x0) + margin : round(x1) - margin]
    assert inner.numel() > 0 and inner.min() > 180, (box, inner.min())
    h, w = gray.shape
    outside = torch.ones(h, w, dtype=torch.bool)
    outside[max(0, round(y0) - margin) : round(y1) + margin, max(0, round(x0) - margin) : round(x1) + margin] = False
    band = torch.zeros(h, w, dtype=torch.bool)
    band[max(0, round(y0) - 3 * margin) : round(y1) + 3 * margin, max(0, round(x0) - 3 * margin) : round(x1) + 3 * margin] = True
    assert (gray[outside & band] < 80).all(), box


def test_flip_moves_the_box_with_the_rectangle():
    image, target = rectangle_image(60, 100, [10, 20, 40, 50]), target_for([[10, 20, 40, 50]])
    flipped, out = T.RandomHorizontalFlip(p=1.0)(image, target)
    assert out["boxes"].tolist() == [[60, 20, 90, 50]]
    assert_box_sits_on_the_rectangle(flipped, out["boxes"][0])


@pytest.mark.parametrize("seed", range(6))
def test_jitter_crop_and_resize_keep_the_box_on_the_rectangle(seed):
    image, target = rectangle_image(120, 160, [50, 40, 110, 90]), target_for([[50, 40, 110, 90]])
    transform = T.Compose([T.JitterCropResize(96, 0.2), T.RandomHorizontalFlip(), T.ClipAndDropSmall()])
    out_image, out = transform(image, target, torch.Generator().manual_seed(seed))
    assert out_image.shape == (3, 96, 96) and len(out["boxes"]) == 1
    assert_box_sits_on_the_rectangle(out_image, out["boxes"][0])


def test_edge_clamped_crop_matches_numpy_edge_padding():
    image = torch.randint(0, 255, (3, 7, 9), dtype=torch.uint8)
    padded = np.pad(image.numpy(), ((0, 0), (5, 5), (5, 5)), mode="edge")
    for left, top, width, height in [(-3, -2, 12, 9), (2, 1, 4, 5), (4, -5, 9, 14), (-5, 3, 6, 6)]:
        expected = padded[:, top + 5 : top + 5 + height, left + 5 : left + 5 + width]
        assert np.array_equal(T.crop_with_edge_clamp(image, left, top, width, height).numpy(), expected)


@pytest.mark.parametrize("left, top, width, height", [(-30, -20, 150, 110), (10, 5, 90, 80), (20, -25, 130, 90)])
def test_fast_edge_clamped_crop_resize_matches_clamp_then_resize(left, top, width, height):
    ys, xs = torch.meshgrid(torch.arange(100.0), torch.arange(120.0), indexing="ij")
    smooth = torch.stack([xs * 2, ys * 2, (xs + ys)]).clamp(0, 255).to(torch.uint8)  # (3, 100, 120)
    reference = torch.nn.functional.interpolate(
        T.crop_with_edge_clamp(smooth, left, top, width, height)[None].float(), size=(64, 64),
        mode="bilinear", align_corners=False)[0]
    fast = T.crop_resize_edge_clamped(smooth, left, top, width, height, 64)
    assert fast.shape == (3, 64, 64) and (fast.float() - reference).abs().max() <= 6


def test_letterbox_keeps_aspect_pads_grey_and_moves_the_box():
    image, target = rectangle_image(100, 200, [40, 30, 120, 80]), target_for([[40, 30, 120, 80]])
    out_image, out = T.Letterbox(100)(image, target)
    assert out_image.shape == (3, 100, 100)
    assert torch.allclose(out["boxes"][0], torch.tensor([20.0, 40.0, 60.0, 65.0]))  # scale .5, 25 px bars top
    assert (out_image[:, :24] == T.GREY).all() and (out_image[:, 76:] == T.GREY).all()
    assert_box_sits_on_the_rectangle(out_image, out["boxes"][0], margin=2)


def test_small_boxes_are_dropped_and_the_rest_compacted():
    target = target_for([[0, 0, 50, 50], [10, 10, 10.2, 30], [-20, 60, 30, 120]], labels=[7, 8, 9])
    _, out = T.ClipAndDropSmall(0.005)(torch.zeros(3, 100, 100, dtype=torch.uint8), target)
    assert out["labels"].tolist() == [7, 9] and out["dropped_small"] == 1
    assert out["boxes"].tolist() == [[0, 0, 50, 50], [0, 60, 30, 100]]


def test_shuffled_boxes_keep_their_labels_and_repeat_with_the_seed():
    boxes = [[i, i, i + 10, i + 10] for i in range(8)]
    target = target_for(boxes, labels=list(range(100, 108)))
    _, a = T.ShuffleBoxes()(None, target, torch.Generator().manual_seed(3))
    _, b = T.ShuffleBoxes()(None, target, torch.Generator().manual_seed(3))
    assert (a["boxes"][:, 0] + 100).long().tolist() == a["labels"].tolist()
    assert a["labels"].tolist() != list(range(100, 108)) and torch.equal(a["labels"], b["labels"])
    assert sorted(a["labels"].tolist()) == list(range(100, 108))


def test_crowd_and_difficult_boxes_are_not_training_boxes():
    target = target_for([[0, 0, 5, 5]] * 4, labels=[1, 2, 3, 4], crowd=[False, True, False, False],
                        difficult=[False, False, True, False])
    _, out = T.DropNonTrainingBoxes()(torch.zeros(3, 8, 8, dtype=torch.uint8), target)
    assert out["labels"].tolist() == [1, 4] and out["dropped_ignored"] == 2


def test_detection_recipe_repeats_with_the_generator_seed_and_varies_across_seeds():
    image, target = rectangle_image(120, 160, [50, 40, 110, 90]), target_for([[50, 40, 110, 90]])
    recipe = T.detection_train(64)
    a = recipe(image, target, torch.Generator().manual_seed(1))
    b = recipe(image, target, torch.Generator().manual_seed(1))
    c = recipe(image, target, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"]) and torch.equal(a[1]["hsv"], b[1]["hsv"])
    assert not torch.equal(a[1]["hsv"], c[1]["hsv"])


def test_hsv_factors_stay_in_darknet_ranges():
    distort = T.RandomDistortHSV(hue=0.1, saturation=1.5, exposure=1.5)
    generator = torch.Generator().manual_seed(0)
    factors = torch.stack([distort(None, {}, generator)[1]["hsv"] for _ in range(500)])
    assert factors[:, 0].abs().max() <= 0.1 and factors[:, 0].min() < -0.08 and factors[:, 0].max() > 0.08
    for column in (1, 2):
        assert factors[:, column].min() >= 1 / 1.5 - 1e-6 and factors[:, column].max() <= 1.5 + 1e-6
        assert (factors[:, column] < 1).float().mean() == pytest.approx(0.5, abs=0.1)


def test_hsv_distortion_matches_a_per_pixel_colorsys_reference():
    images = torch.rand(2, 3, 5, 6)
    factors = torch.tensor([[0.08, 1.4, 0.8], [-0.1, 0.7, 1.3]])
    out = T.distort_hsv(images, factors)
    for b in range(2):
        dhue, dsat, dexp = factors[b].tolist()
        for y in range(5):
            for x in range(6):
                h, s, v = colorsys.rgb_to_hsv(*images[b, :, y, x].tolist())
                rgb = colorsys.hsv_to_rgb((h + dhue) % 1.0, s * dsat, v * dexp)
                expected = torch.tensor(rgb).clamp(0, 1)
                assert torch.allclose(out[b, :, y, x], expected, atol=1e-5), (b, y, x)


def test_classification_recipe_gives_the_size_and_repeats_with_the_seed():
    image = torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8)
    target = target_for([])
    target.update(image_label=3, is_classification=True)
    recipe = T.classification_train(64)
    a, ta = recipe(image, target, torch.Generator().manual_seed(4))
    b, _ = recipe(image, target, torch.Generator().manual_seed(4))
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and ta["image_label"] == 3
