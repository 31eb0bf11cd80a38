"""Detectors: YOLOv2 (paper and final passthrough heads), YOLO9000 and Tiny YOLOv2.

Every detector returns the raw head output (B, A*(5+C), H/32, W/32), anchor-major with
(tx, ty, tw, th, to, classes...) per anchor (darknet-notes "Weights format", last point).
Modules are registered in darknet's cfg order, so `weights.py` walks them in file order.
"""

import torch
from torch import nn

from yolo9000.model.layers import (
    ConvBNLeaky,
    Darknet19Trunk,
    LayerSpec,
    Reorg,
    build_layers,
    check_input_size,
)

HEADS = ("paper", "final")
ARCHS = ("yolov2", "yolo9000", "tiny-yolov2")

# tiny-yolo-voc.cfg [d2dece3d]; "M1" is the size-2 stride-1 maxpool that keeps 13x13 at 416.
TINY_YOLOV2: list[LayerSpec] = [
    (16, 3), "M",
    (32, 3), "M",
    (64, 3), "M",
    (128, 3), "M",
    (256, 3), "M",
    (512, 3), "M1",
    (1024, 3),
    (1024, 3),
]


def head_filters(num_classes: int, num_anchors: int) -> int:
    """Channels of the last conv: A * (5 + C)."""
    return num_anchors * (5 + num_classes)


class YOLOv2(nn.Module):
    """YOLOv2 detector on the Darknet-19 trunk with a passthrough from layer 16.

    head="paper" (yolo.cfg, yolo-voc.cfg): reorg the 512-channel layer 16 to 2048 channels, concat
    [reorg, deep] = 3072. head="final" (yolov2.cfg, yolov2-voc.cfg): a 1x1/64 conv first, so
    256 + 1024 = 1280 (darknet-notes "Architecture of YOLOv2").
    """

    def __init__(self, num_classes: int, num_anchors: int = 5, head: str = "paper") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown YOLOv2 head {head!r}; valid heads: {', '.join(HEADS)}")
        self.num_classes, self.num_anchors, self.head = num_classes, num_anchors, head
        self.trunk = Darknet19Trunk()  # layers 0-22
        self.deep, deep_channels = build_layers([(1024, 3), (1024, 3)], Darknet19Trunk.out_channels)  # 23, 24
        passthrough_channels = Darknet19Trunk.passthrough_channels
        if head == "final":
            self.passthrough_conv = ConvBNLeaky(passthrough_channels, 64, 1)  # layer 26 [HEAD]
            passthrough_channels = 64
        else:
            self.passthrough_conv = nn.Identity()
        self.reorg = Reorg(stride=2)
        self.fuse = ConvBNLeaky(4 * passthrough_channels + deep_channels, 1024, 3)
        self.detect = nn.Conv2d(1024, head_filters(num_classes, num_anchors), kernel_size=1)  # linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, 32, "YOLOv2")
        passthrough, features = self.trunk(x)
        deep = self.deep(features)  # (B, 1024, H/32, W/32)
        fine = self.reorg(self.passthrough_conv(passthrough))  # (B, 2048 or 256, H/32, W/32)
        return self.detect(self.fuse(torch.cat([fine, deep], dim=1)))  # concat order [reorg, deep]


class YOLO9000(nn.Module):
    """YOLO9000 (yolo9000.cfg): Darknet-19 trunk + one linear 1x1 conv; no passthrough, no extra 3x3s."""

    def __init__(self, num_classes: int = 9418, num_anchors: int = 3) -> None:
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.trunk = Darknet19Trunk()
        self.detect = nn.Conv2d(Darknet19Trunk.out_channels, head_filters(num_classes, num_anchors), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, 32, "YOLO9000")
        _, features = self.trunk(x)
        return self.detect(features)


def scaled_spec(spec: list[LayerSpec], width: float) -> list[LayerSpec]:
    """Layer specs with every conv's filters times `width` (at least 8): a thinner network for small runs."""
    if width <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width}")
    return [(max(8, round(item[0] * width)), item[1]) if isinstance(item, tuple) else item for item in spec]


class TinyYOLOv2(nn.Module):
    """Tiny YOLOv2 (tiny-yolo-voc.cfg, d2dece3d): 6 conv+maxpool stages, two 1024 3x3s, linear 1x1.

    `width` scales every conv's filters (1 = darknet's network; ½ trains ~10x faster on a CPU).
    """

    def __init__(self, num_classes: int, num_anchors: int = 5, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.num_anchors, self.width = num_classes, num_anchors, width
        self.features, channels = build_layers(scaled_spec(TINY_YOLOV2, width), 3)
        self.detect = nn.Conv2d(channels, head_filters(num_classes, num_anchors), kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, 32, "TinyYOLOv2")
        return self.detect(self.features(x))


class TinyYOLOv2Classifier(nn.Module):
    """Tiny YOLOv2's conv stages under a linear 1x1 conv to classes and a global average pool.

    The classifier stage of the chain classifier -> detector: its `features` load into TinyYOLOv2's.
    """

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.features, channels = build_layers(scaled_spec(TINY_YOLOV2, width), 3)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, 32, "TinyYOLOv2Classifier")
        return self.classifier(self.features(x)).mean(dim=(2, 3))  # (B, num_classes)


def build_detector(arch: str, num_classes: int, num_anchors: int, head: str = "paper", width: float = 1.0) -> nn.Module:
    """Build a detector by name: "yolov2" (head "paper" or "final"), "yolo9000" or "tiny-yolov2" (any width)."""
    if arch != "tiny-yolov2" and width != 1.0:
        raise ValueError(f"width={width}: only tiny-yolov2 takes a width multiplier")
    if arch == "yolov2":
        return YOLOv2(num_classes, num_anchors, head=head)
    elif arch == "yolo9000":
        return YOLO9000(num_classes, num_anchors)
    elif arch == "tiny-yolov2":
        return TinyYOLOv2(num_classes, num_anchors, width=width)
    raise ValueError(f"unknown detector architecture {arch!r}; valid names: {', '.join(ARCHS)}")
