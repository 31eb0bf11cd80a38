import struct

import numpy as np
import pytest
import torch
from torch import nn

from yolo9000.model.darknet19 import Darknet19
from yolo9000.model.layers import ConvBNLeaky
from yolo9000.model.weights import (
    WeightsError,
    count_darknet_floats,
    load_darknet_weights,
    save_darknet_weights,
)
from yolo9000.model.yolov2 import YOLO9000, TinyYOLOv2, YOLOv2


class SmallNet(nn.Module):
    """A three-conv net with a nested module: BN conv, BN conv inside a Sequential, linear conv."""

    def __init__(self) -> None:
        super().__init__()
        self.first = ConvBNLeaky(3, 4, 3)
        self.middle = nn.Sequential(nn.MaxPool2d(2), ConvBNLeaky(4, 5, 1))
        self.last = nn.Conv2d(5, 2, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.middle(self.first(x)))


# SmallNet in darknet file order, written down independently of the code: (in, out, kernel, BN).
SMALLNET_CONVS = [(3, 4, 3, True), (4, 5, 1, True), (5, 2, 3, False)]


def independent_darknet_body(convs: list[tuple[int, int, int, bool]]) -> tuple[bytes, list[dict]]:
    """Floats in darknet's documented order, value = conv index * 1000 + position (+ a tag per kind)."""
    chunks, expected = [], []
    for index, (c_in, c_out, k, bn) in enumerate(convs):
        base = index * 1000
        values = {"bias": base + np.arange(c_out) + 0.5}
        if bn:
            values["gamma"] = base + np.arange(c_out) + 0.25
            values["mean"] = -(base + np.arange(c_out))
            values["var"] = base + np.arange(c_out) + 0.75
        values["weights"] = base + np.arange(c_out * c_in * k * k, dtype=np.float64)
        values = {name: v.astype("<f4") for name, v in values.items()}
        chunks += list(values.values())  # dict keeps bias, gamma, mean, var, weights order
        values["weights"] = values["weights"].reshape(c_out, c_in, k, k)  # OIHW
        expected.append(values)
    return b"".join(chunk.tobytes() for chunk in chunks), expected


def model_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> dict[str, np.ndarray]:
    found = {"weights": conv.weight}
    if bn is None:
        found["bias"] = conv.bias
    else:
        found.update(bias=bn.bias, gamma=bn.weight, mean=bn.running_mean, var=bn.running_var)
    return {name: t.detach().numpy() for name, t in found.items()}


@pytest.mark.parametrize(
    "header, seen",
    [
        (struct.pack("<3i", 0, 1, 0) + struct.pack("<i", 12345), 12345),  # 16 bytes: YOLOv2-era files
        (struct.pack("<3i", 0, 2, 0) + struct.pack("<Q", 2**33 + 7), 2**33 + 7),  # 20 bytes: HEAD
        (struct.pack("<3i", 1, 0, 0) + struct.pack("<Q", 640), 640),  # major*10+minor >= 2
    ],
    ids=["v0.1.0-int32-seen", "v0.2.0-int64-seen", "v1.0.0-int64-seen"],
)
def test_file_written_in_the_documented_order_loads_into_the_right_tensors(tmp_path, header, seen):
    body, expected = independent_darknet_body(SMALLNET_CONVS)
    path = tmp_path / "small.weights"
    path.write_bytes(header + body)
    model = SmallNet()
    assert load_darknet_weights(model, path) == seen
    convs = [(model.first.conv, model.first.bn), (model.middle[1].conv, model.middle[1].bn), (model.last, None)]
    for (conv, bn), values in zip(convs, expected):
        found = model_tensors(conv, bn)
        assert found.keys() == values.keys()
        for name in values:
            np.testing.assert_array_equal(found[name], values[name], err_msg=name)


def test_tiny_yolov2_file_written_independently_loads_conv_by_conv(tmp_path):
    convs = [(3, 16, 3, True), (16, 32, 3, True), (32, 64, 3, True), (64, 128, 3, True), (128, 256, 3, True),
             (256, 512, 3, True), (512, 1024, 3, True), (1024, 1024, 3, True), (1024, 1 * (5 + 1), 1, False)]
    body, expected = independent_darknet_body(convs)
    path = tmp_path / "tiny.weights"
    path.write_bytes(struct.pack("<3iI", 0, 1, 0, 0) + body)
    model = TinyYOLOv2(num_classes=1, num_anchors=1)
    load_darknet_weights(model, path)
    layers = [m for m in model.features if isinstance(m, ConvBNLeaky)]
    for block, values in zip(layers, expected[:-1]):
        found = model_tensors(block.conv, block.bn)
        for name in values:
            np.testing.assert_array_equal(found[name], values[name], err_msg=name)
    found = model_tensors(model.detect, None)
    for name in expected[-1]:
        np.testing.assert_array_equal(found[name], expected[-1][name], err_msg=name)


def randomise(model: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BN statistic distinct random values (positive variances)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(values + 0.5 if name.endswith("running_var") else (values - 0.5) * 0.2)
    return model


def darknet_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize(
    "make, version, header_bytes",
    [(lambda: TinyYOLOv2(num_classes=3, num_anchors=2), (0, 2, 0), 20), (SmallNet, (0, 1, 0), 16)],
    ids=["tiny-yolov2-v0.2.0", "smallnet-v0.1.0"],
)
def test_save_then_load_gives_identical_state_and_outputs(tmp_path, make, version, header_bytes):
    path = tmp_path / "model.weights"
    original = randomise(make(), seed=1).eval()
    save_darknet_weights(original, path, seen=64000, version=version)
    assert path.stat().st_size == header_bytes + 4 * count_darknet_floats(original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.weights"]  # no temporary left behind

    fresh = randomise(make(), seed=2).eval()
    assert load_darknet_weights(fresh, path) == 64000
    before, after = darknet_state(original), darknet_state(fresh)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(original(x), fresh(x))


@pytest.fixture(scope="module")
def darknet19_file(tmp_path_factory):
    """A Darknet-19 classifier file (19 convs) with random values, and the model that wrote it."""
    model = randomise(Darknet19(num_classes=1000), seed=4)
    path = tmp_path_factory.mktemp("darknet19") / "darknet19.weights"
    save_darknet_weights(model, path, version=(0, 1, 0))
    return path, model


def test_darknet19_trunk_loads_into_the_yolov2_trunk_with_num_convs(darknet19_file):
    path, classifier = darknet19_file
    detector = YOLO9000(num_classes=1, num_anchors=1)
    head_before = detector.detect.weight.clone()
    load_darknet_weights(detector, path, num_convs=18)
    assert all(torch.equal(a, b) for a, b in zip(darknet_state(classifier.trunk).values(),
                                                  darknet_state(detector.trunk).values()))
    assert torch.equal(detector.detect.weight, head_before)


def test_conv23_prefix_file_loads_into_yolov2_with_prefix_only(darknet19_file, tmp_path):
    path, classifier = darknet19_file
    # darknet19_448.conv.23: the file minus the 1000-class 1x1 conv (weights + biases).
    trunk_floats = 20_856_776 - (1000 * 1024 + 1000)
    prefix = tmp_path / "darknet19_448.conv.23"
    prefix.write_bytes(path.read_bytes()[: 16 + 4 * trunk_floats])
    detector = YOLOv2(num_classes=20, num_anchors=5, head="paper")
    load_darknet_weights(detector, prefix, prefix_only=True)
    assert all(torch.equal(a, b) for a, b in zip(darknet_state(classifier.trunk).values(),
                                                  darknet_state(detector.trunk).values()))
    with pytest.raises(WeightsError, match="file too long"):  # the classifier conv does not fit YOLO9000's head
        load_darknet_weights(YOLO9000(num_classes=1, num_anchors=1), path)


def write_tiny(tmp_path) -> tuple[bytes, TinyYOLOv2]:
    model = TinyYOLOv2(num_classes=1, num_anchors=1)
    path = tmp_path / "tiny.weights"
    save_darknet_weights(model, path)
    return path.read_bytes(), model


def test_truncated_file_is_rejected_saying_expected_and_found_floats(tmp_path):
    data, model = write_tiny(tmp_path)
    expected = count_darknet_floats(model)
    short = tmp_path / "short.weights"
    short.write_bytes(data[:-8])
    with pytest.raises(WeightsError, match=f"file too short: TinyYOLOv2 expects {expected} floats for all 9 convs, "
                                           f"found {expected - 2}"):
        load_darknet_weights(model, short)


def test_file_with_extra_floats_is_rejected_unless_num_convs_is_given(tmp_path):
    data, model = write_tiny(tmp_path)
    expected = count_darknet_floats(model)
    long = tmp_path / "long.weights"
    long.write_bytes(data + struct.pack("<3f", 1, 2, 3))
    with pytest.raises(WeightsError, match=f"file too long: TinyYOLOv2 expects {expected} floats .* found {expected + 3}"):
        load_darknet_weights(model, long)
    load_darknet_weights(model, long, num_convs=9)  # darknet's load_weights_upto ignores the rest


def test_prefix_that_ends_inside_a_conv_is_rejected(tmp_path):
    data, model = write_tiny(tmp_path)
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[: 20 + 4 * (16 * 4 + 16 * 27 + 10)])  # first conv and 10 floats of the second
    with pytest.raises(WeightsError, match="do not end at a conv boundary"):
        load_darknet_weights(model, cut, prefix_only=True)


@pytest.mark.parametrize("version", [(1000, 0, 0), (0, 1000, 0), (-1, 2, 0)])
def test_unsupported_versions_are_rejected_on_read_and_write(tmp_path, version):
    path = tmp_path / "bad.weights"
    path.write_bytes(struct.pack("<3iQ", *version, 0))
    model = SmallNet()
    with pytest.raises(WeightsError, match="unsupported darknet weights version"):
        load_darknet_weights(model, path)
    with pytest.raises(WeightsError, match="unsupported darknet weights version"):
        save_darknet_weights(model, tmp_path / "out.weights", version=version)


def test_file_shorter_than_a_header_or_with_a_partial_float_is_rejected(tmp_path):
    path = tmp_path / "bad.weights"
    path.write_bytes(b"\0" * 8)
    with pytest.raises(WeightsError, match="too short for a darknet weights header"):
        load_darknet_weights(SmallNet(), path)
    path.write_bytes(struct.pack("<3iQ", 0, 2, 0, 0) + b"\0" * 6)
    with pytest.raises(WeightsError, match="not a whole number of float32"):
        load_darknet_weights(SmallNet(), path)


def test_seen_that_does_not_fit_an_int32_header_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="does not fit the 4-byte field"):
        save_darknet_weights(SmallNet(), tmp_path / "x.weights", seen=2**31, version=(0, 1, 0))


def test_prefix_only_refuses_a_file_bigger_than_the_whole_model(tmp_path):
    data, model = write_tiny(tmp_path)
    long = tmp_path / "long.weights"
    long.write_bytes(data + struct.pack("<f", 1))
    with pytest.raises(WeightsError, match="file too long: all 9 convs take"):
        load_darknet_weights(model, long, prefix_only=True)


def test_num_convs_outside_the_model_is_refused(tmp_path):
    data, model = write_tiny(tmp_path)
    with pytest.raises(WeightsError, match="num_convs=10 but TinyYOLOv2 has 9 convs"):
        load_darknet_weights(model, tmp_path / "tiny.weights", num_convs=10)
