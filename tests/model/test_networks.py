import ast
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from yolo9000.model.darknet19 import Darknet19
from yolo9000.model.layers import ConvBNLeaky, Reorg
from yolo9000.model.weights import darknet_convs
from yolo9000.model.yolov2 import YOLO9000, TinyYOLOv2, YOLOv2, build_detector

META = torch.device("meta")  # shapes and counts without allocating or computing


def darknet_float_count(model: nn.Module) -> int:
    """Floats darknet stores: every parameter and BN running statistic (not the batch counter)."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return params + stats


@pytest.mark.parametrize(
    "make, floats",
    [
        (lambda: YOLOv2(80, 5, head="final"), 50_983_561),  # yolov2.cfg COCO [HEAD]
        (lambda: YOLOv2(80, 5, head="paper"), 67_465_609),  # yolo.cfg COCO [v2-paper]
        (lambda: YOLOv2(20, 5, head="final"), 50_676_061),  # yolov2-voc.cfg
        (lambda: YOLOv2(20, 5, head="paper"), 67_158_109),  # yolo-voc.cfg
        (lambda: YOLO9000(), 48_807_501),  # yolo9000.cfg
        (lambda: Darknet19(), 20_856_776),  # darknet19.cfg
    ],
    ids=["yolov2-coco", "yolo-coco-paper", "yolov2-voc", "yolo-voc-paper", "yolo9000", "darknet19"],
)
def test_float_counts_equal_darknets_file_sizes(make, floats):
    with META:
        model = make()
    assert darknet_float_count(model) == floats


def darknet_bflops(model: nn.Module, height: int, width: int) -> float:
    """darknet's printed BFLOPs: sum over convs of 2 * n * k * k * c * out_h * out_w / 1e9."""
    total = []
    hook = lambda m, i, o: total.append(2 * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                                        * m.in_channels * o.shape[2] * o.shape[3] / 1e9)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(hook)
    model(torch.zeros(1, 3, height, width, device=META))
    return sum(total)


@pytest.mark.parametrize(
    "make, size, bflops",
    [
        (lambda: Darknet19(), 224, 5.582),
        (lambda: Darknet19(), 448, 22.328),
        (lambda: YOLOv2(20, 5, head="paper"), 416, 34.898),
        (lambda: YOLOv2(20, 5, head="paper"), 544, 59.678),
        (lambda: YOLOv2(20, 5, head="final"), 416, 29.360),
        (lambda: YOLOv2(80, 5, head="paper"), 416, 35.002),
        (lambda: YOLOv2(80, 5, head="final"), 608, 62.938),
        (lambda: YOLO9000(), 544, 49.062),
        (lambda: TinyYOLOv2(20, 5), 416, 6.971),
    ],
    ids=["darknet19-224", "darknet19-448", "yolo-voc-416", "yolo-voc-544", "yolov2-voc-416", "yolo-coco-416",
         "yolov2-coco-608", "yolo9000-544", "tiny-yolo-voc-416"],
)
def test_operation_counts_equal_darknets_bflops(make, size, bflops):
    with META:
        model = make()
    assert darknet_bflops(model, size, size) == pytest.approx(bflops, abs=5e-4)


DETECTORS = {
    "yolov2-paper": lambda: YOLOv2(80, 5, head="paper"),
    "yolov2-final": lambda: YOLOv2(20, 5, head="final"),
    "yolo9000": lambda: YOLO9000(),
    "tiny-yolov2": lambda: TinyYOLOv2(20, 5),
}


@pytest.mark.parametrize("name", DETECTORS)
def test_detectors_output_one_cell_per_32_pixels_at_every_multiple_of_32(name):
    with META:
        model = DETECTORS[name]()
        channels = model.num_anchors * (5 + model.num_classes)
        for height, width in [(320, 320), (416, 416), (608, 608), (320, 608), (544, 416), (64, 32)]:
            out = model(torch.zeros(2, 3, height, width))
            assert out.shape == (2, channels, height // 32, width // 32)


@pytest.mark.parametrize("name", DETECTORS)
def test_detectors_reject_sizes_that_are_not_multiples_of_32(name):
    with META:
        model = DETECTORS[name]()
        for height, width in [(100, 64), (64, 400), (31, 31)]:
            with pytest.raises(ValueError, match=f"multiples of 32; got {height}x{width}"):
                model(torch.zeros(1, 3, height, width))


def test_detectors_reject_images_without_three_channels():
    with META:
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            TinyYOLOv2(20)(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize(
    "make, size",
    [(lambda: YOLO9000(num_classes=7, num_anchors=3), (64, 96)), (lambda: TinyYOLOv2(4, 5), (96, 64))],
    ids=["yolo9000", "tiny-yolov2"],
)
def test_detectors_run_on_cpu_with_finite_outputs(make, size):
    # YOLOv2 runs on the CPU in the passthrough tests below.
    model = make()
    out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, model.num_anchors * (5 + model.num_classes), size[0] // 32, size[1] // 32)
    assert torch.isfinite(out).all()


def test_tiny_yolov2_backpropagates_to_every_parameter():
    model = TinyYOLOv2(2, 2)
    model(torch.rand(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_darknet19_gives_class_logits_at_224_and_448():
    with META:
        model = Darknet19()
        assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
        assert model(torch.zeros(1, 3, 448, 448)).shape == (1, 1000)
    small = Darknet19(num_classes=10).eval()
    x = torch.rand(1, 3, 64, 64)
    _, features = small.trunk(x)
    # global average pool of a linear 1x1 conv, computed the other way round
    expected = small.classifier(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
    torch.testing.assert_close(small(x), expected)


def test_darknet19_has_19_convs_and_5_maxpools():
    with META:
        model = Darknet19()
    assert len(darknet_convs(model)) == 19
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_passthrough_comes_from_layer_16_at_26x26x512_for_416():
    with META:
        model = YOLOv2(20, 5)
        passthrough, deep = model.trunk(torch.zeros(1, 3, 416, 416))
    assert passthrough.shape == (1, 512, 26, 26) and deep.shape == (1, 1024, 13, 13)


@pytest.mark.parametrize("head, reorg_channels", [("paper", 2048), ("final", 256)])
def test_passthrough_is_concatenated_before_the_deep_features(head, reorg_channels):
    model = YOLOv2(2, 1, head=head).eval()
    seen = {}
    model.trunk.to_passthrough.register_forward_hook(lambda m, i, o: seen.update(layer16=o))
    model.deep.register_forward_hook(lambda m, i, o: seen.update(deep=o))
    model.fuse.register_forward_hook(lambda m, i, o: seen.update(fused_input=i[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        fine = Reorg(2)(model.passthrough_conv(seen["layer16"]))
    assert seen["fused_input"].shape[1] == reorg_channels + 1024
    assert torch.equal(seen["fused_input"][:, :reorg_channels], fine)
    assert torch.equal(seen["fused_input"][:, reorg_channels:], seen["deep"])


def conv_shapes(model: nn.Module) -> list[tuple[int, int, int, bool]]:
    """(in, out, kernel, has BN) per conv in the order the weights file uses."""
    return [(c.in_channels, c.out_channels, c.kernel_size[0], bn is not None) for c, bn in darknet_convs(model)]


# Darknet-19 layers 0-22 transcribed from the darknet-notes, as (in, out, kernel, BN).
TRUNK = [
    (3, 32, 3, True), (32, 64, 3, True),
    (64, 128, 3, True), (128, 64, 1, True), (64, 128, 3, True),
    (128, 256, 3, True), (256, 128, 1, True), (128, 256, 3, True),
    (256, 512, 3, True), (512, 256, 1, True), (256, 512, 3, True), (512, 256, 1, True), (256, 512, 3, True),
    (512, 1024, 3, True), (1024, 512, 1, True), (512, 1024, 3, True), (1024, 512, 1, True), (512, 1024, 3, True),
]


def test_convs_follow_the_cfg_order_of_every_architecture():
    with META:
        assert conv_shapes(Darknet19()) == TRUNK + [(1024, 1000, 1, False)]
        assert conv_shapes(YOLO9000()) == TRUNK + [(1024, 28269, 1, False)]
        assert conv_shapes(YOLOv2(80, 5, head="paper")) == TRUNK + [
            (1024, 1024, 3, True), (1024, 1024, 3, True),  # 23, 24
            (3072, 1024, 3, True), (1024, 425, 1, False),  # 28, 29
        ]
        assert conv_shapes(YOLOv2(20, 5, head="final")) == TRUNK + [
            (1024, 1024, 3, True), (1024, 1024, 3, True),  # 23, 24
            (512, 64, 1, True),  # 26: the passthrough conv comes before the fuse conv in the file
            (1280, 1024, 3, True), (1024, 125, 1, False),  # 29, 30
        ]
        assert conv_shapes(TinyYOLOv2(20, 5)) == [
            (3, 16, 3, True), (16, 32, 3, True), (32, 64, 3, True), (64, 128, 3, True),
            (128, 256, 3, True), (256, 512, 3, True), (512, 1024, 3, True), (1024, 1024, 3, True),
            (1024, 125, 1, False),
        ]


def test_tiny_yolov2_keeps_13x13_at_416_through_its_stride_one_maxpool():
    with META:
        model = TinyYOLOv2(20)
        assert model.features(torch.zeros(1, 3, 416, 416)).shape == (1, 1024, 13, 13)


def test_build_detector_picks_the_named_architecture():
    with META:
        assert isinstance(build_detector("yolov2", 20, 5, head="final").passthrough_conv, ConvBNLeaky)
        assert isinstance(build_detector("yolov2", 20, 5).passthrough_conv, nn.Identity)
        assert isinstance(build_detector("yolo9000", 9418, 3), YOLO9000)
        tiny = build_detector("tiny-yolov2", 3, 2)
        assert isinstance(tiny, TinyYOLOv2) and tiny.detect.out_channels == 2 * 8


def test_build_detector_lists_valid_names_and_heads():
    with pytest.raises(ValueError, match="yolov2, yolo9000, tiny-yolov2"):
        build_detector("yolov3", 20, 5)
    with pytest.raises(ValueError, match="paper, final"):
        build_detector("yolov2", 20, 5, head="v3")


def test_model_files_import_only_torch_and_layers():
    """DESIGN "Allowed imports": model/ imports torch and model/layers.py only (plus the standard library and the
    project's dependency-free atomic writer, which weights.py writes .weights files through)."""
    model_dir = Path(__file__).resolve().parents[2] / "yolo9000" / "model"
    for path in sorted(model_dir.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = top in ("torch", "__future__", "atomicio") or name == "yolo9000.model.layers"
                assert allowed or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_width_multiplier_scales_every_conv_of_tiny_yolov2():
    from yolo9000.model import build_detector

    half = build_detector("tiny-yolov2", 20, 5, width=0.5)
    full = build_detector("tiny-yolov2", 20, 5)
    widths = [m.out_channels for m in half.features if hasattr(m, "conv") for m in [m.conv]]
    assert widths == [max(8, c // 2) for c in (16, 32, 64, 128, 256, 512, 1024, 1024)]
    assert half(torch.zeros(1, 3, 128, 128)).shape == full(torch.zeros(1, 3, 128, 128)).shape == (1, 125, 4, 4)
    with pytest.raises(ValueError, match="only tiny-yolov2 takes a width"):
        build_detector("yolov2", 20, 5, width=0.5)


def test_a_classifier_over_a_detectors_trunk_has_the_detectors_trunk_names_and_shapes():
    from yolo9000.model import build_classifier, build_detector

    for arch, trunk in (("tiny-yolov2", "features."), ("yolov2", "trunk."), ("yolo9000", "trunk.")):
        classifier = build_classifier(arch, 7, width=0.25 if arch == "tiny-yolov2" else 1.0)
        detector = build_detector(arch, 20, 5, width=0.25 if arch == "tiny-yolov2" else 1.0)
        ours = {k: v.shape for k, v in classifier.state_dict().items() if k.startswith(trunk)}
        theirs = {k: v.shape for k, v in detector.state_dict().items() if k.startswith(trunk)}
        assert ours and ours == theirs
        assert classifier(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
