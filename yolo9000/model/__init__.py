"""The networks (Darknet-19, YOLOv2, YOLO9000, Tiny YOLOv2) and darknet `.weights` files."""

from yolo9000.model.darknet19 import Darknet19
from yolo9000.model.layers import ConvBNLeaky, Reorg
from yolo9000.model.weights import WeightsError, load_darknet_weights, save_darknet_weights
from yolo9000.model.yolov2 import YOLO9000, TinyYOLOv2, TinyYOLOv2Classifier, YOLOv2, build_classifier, build_detector

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
