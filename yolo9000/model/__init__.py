"""The networks (Darknet-19, YOLOv2, YOLO9000, Tiny YOLOv2) and darknet `.weights` files."""

from torch import nn

from yolo9000.model.darknet19 import Darknet19
from yolo9000.model.layers import ConvBNLeaky, Reorg
from yolo9000.model.weights import WeightsError, load_darknet_weights, save_darknet_weights
from yolo9000.model.yolov2 import ARCHS, YOLO9000, TinyYOLOv2, TinyYOLOv2Classifier, YOLOv2, build_detector

__all__ = [
    "ConvBNLeaky",
    "Darknet19",
    "Reorg",
    "TinyYOLOv2",
    "TinyYOLOv2Classifier",
    "WeightsError",
    "YOLO9000",
    "YOLOv2",
    "build_classifier",
    "build_detector",
    "load_darknet_weights",
    "save_darknet_weights",
]


def build_classifier(arch: str, num_classes: int, width: float = 1.0) -> nn.Module:
    """The global-pool classifier over a detector's trunk: Darknet-19 for yolov2 / yolo9000 / darknet19,
    Tiny YOLOv2's conv stages for tiny-yolov2."""
    if arch in ("darknet19", "yolov2", "yolo9000"):
        if width != 1.0:
            raise ValueError(f"width={width}: only tiny-yolov2 takes a width multiplier")
        return Darknet19(num_classes)
    if arch == "tiny-yolov2":
        return TinyYOLOv2Classifier(num_classes, width=width)
    raise ValueError(f"unknown classifier architecture {arch!r}; valid names: darknet19, {', '.join(ARCHS)}")
