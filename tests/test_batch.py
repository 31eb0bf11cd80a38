import pytest
import torch

from yolo9000.batch import BatchTargets


def targets() -> BatchTargets:
    return BatchTargets(torch.rand(3, 2, 4), torch.tensor([[0, -1], [1, 2], [-1, -1]]), torch.tensor([False, False, True]),
                        torch.tensor([-1, -1, 4]), ["a", "b", "c"])


def test_targets_move_to_a_device_as_one():
    moved = targets().to("meta")  # a device without data: proves every field moves, no GPU needed
    for name in ("boxes", "labels", "is_classification", "image_label"):
        assert getattr(moved, name).device.type == "meta", name
    assert moved.keys == ["a", "b", "c"]


def test_selecting_images_keeps_their_rows_and_keys():
    picked = targets().select(torch.tensor([2, 0]))
    assert picked.image_label.tolist() == [4, -1] and picked.keys == ["c", "a"]
    assert targets().select(slice(1, 2)).labels.tolist() == [[1, 2]]


def test_shapes_that_do_not_fit_are_refused_with_each_shape():
    with pytest.raises(ValueError, match=r"labels \(3, 1\) \(B, M\)"):
        BatchTargets(torch.rand(3, 2, 4), torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, dtype=torch.bool),
                     torch.zeros(3, dtype=torch.long))
