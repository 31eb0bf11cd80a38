"""Darknet-19 classifier (darknet19.cfg): trunk + 1x1 conv to classes + global average pool."""

import torch
from torch import nn

from yolo9000.model.layers import Darknet19Trunk, check_input_size


class Darknet19(nn.Module):
    """Darknet-19: 19 convs + 5 maxpools -> (B, num_classes) logits; works at 224, 256 and 448."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk = Darknet19Trunk()
        # darknet19.cfg's last conv: 1x1, linear, with bias, no BN.
        self.classifier = nn.Conv2d(Darknet19Trunk.out_channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, 32, "Darknet19")
        _, features = self.trunk(x)
        return self.classifier(features).mean(dim=(2, 3))  # (B, num_classes)
