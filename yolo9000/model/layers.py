"""Building blocks shared by every network: ConvBNLeaky, Reorg, darknet's stride-1 maxpool,
layer specs as data, and the Darknet-19 trunk (layers 0-22).

The trunk lives here, not in darknet19.py, so that every file of `model/` imports only torch and
this file (DESIGN, "Allowed imports").
"""

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

# A layer spec is (filters, kernel) for a ConvBNLeaky, "M" for a 2x2/2 maxpool, or "M1" for
# darknet's 2x2 maxpool with stride 1 (tiny-yolo-voc's 6th maxpool).
LayerSpec = Union[tuple[int, int], str]

# Darknet-19, darknet-notes "Architecture of YOLOv2": layers 0-16 end at the passthrough source
# (26x26x512 at 416); layers 17-22 are the maxpool and the 1024-wide stage.
DARKNET19_TO_PASSTHROUGH: list[LayerSpec] = [
    (32, 3), "M",
    (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3),
]
DARKNET19_AFTER_PASSTHROUGH: list[LayerSpec] = [
    "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
]

BN_EPS = 1e-5
BN_MOMENTUM = 0.01  # darknet's rolling average keeps .99 of the old value (notes: "BN")
LEAKY_SLOPE = 0.1


class ConvBNLeaky(nn.Module):
    """Darknet's convolutional layer with batch_normalize=1: conv (no bias) + BN + leaky 0.1, pad k//2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MaxPoolStride1(nn.Module):
    """Darknet's size-2 stride-1 maxpool: pads one pixel right and bottom so H, W stay the same.

    Darknet skips out-of-image cells; replicating the last row/column gives the same maximum.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), kernel_size=2, stride=1)


class Reorg(nn.Module):
    """Darknet's reorg (passthrough), exactly: (B, C, H, W) -> (B, C*s*s, H/s, W/s).

    Not pixel_unshuffle nor space_to_depth: darknet calls its reorg routine backwards on the input
    dims, which mixes channels and rows (darknet-notes "reorg (passthrough) exact semantics").
    """

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.stride
        if c % (s * s) or h % s or w % s:
            raise ValueError(
                f"Reorg(stride={s}) needs channels divisible by {s * s} and H, W divisible by {s}; "
                f"got input of shape {tuple(x.shape)}"
            )
        x = x.reshape(b, c // (s * s), h, s, w, s)  # [b, c2, j, dy, i, dx] over memory as (C/s², H·s, W·s)
        x = x.permute(0, 3, 5, 1, 2, 4)  # (b, dy, dx, c2, j, i)
        return x.reshape(b, c * s * s, h // s, w // s)


def build_layers(spec: list[LayerSpec], in_channels: int) -> tuple[nn.Sequential, int]:
    """Build an nn.Sequential from layer specs; returns it and its number of output channels."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "M1":
            layers.append(MaxPoolStride1())
        elif isinstance(item, tuple) and len(item) == 2:
            filters, kernel = item
            layers.append(ConvBNLeaky(channels, filters, kernel))
            channels = filters
        else:
            raise ValueError(f"unknown layer spec {item!r}: use (filters, kernel), 'M' or 'M1'")
    return nn.Sequential(*layers), channels


def check_input_size(x: torch.Tensor, multiple: int, model_name: str) -> None:
    """Raise a clear error unless x is (B, 3, H, W) with H and W multiples of `multiple`."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{model_name} expects images of shape (B, 3, H, W); got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple or height == 0 or width == 0:
        raise ValueError(
            f"{model_name} needs height and width that are positive multiples of {multiple}; "
            f"got {height}x{width}: resize or letterbox the input to e.g. "
            f"{max(multiple, round(height / multiple) * multiple)}x{max(multiple, round(width / multiple) * multiple)}"
        )


class Darknet19Trunk(nn.Module):
    """Darknet-19 layers 0-22 (18 convs, 5 maxpools); returns (layer-16 passthrough, layer-22 features)."""

    out_channels = 1024
    passthrough_channels = 512

    def __init__(self) -> None:
        super().__init__()
        self.to_passthrough, _ = build_layers(DARKNET19_TO_PASSTHROUGH, 3)
        self.after_passthrough, _ = build_layers(DARKNET19_AFTER_PASSTHROUGH, self.passthrough_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        passthrough = self.to_passthrough(x)  # (B, 512, H/16, W/16)
        return passthrough, self.after_passthrough(passthrough)  # (B, 1024, H/32, W/32)
