"""Darknet `.weights` files: read into and write from our modules (darknet-notes "Weights format").

A file is a header (int32 major, minor, revision, then `seen` as int64 or int32) followed by
float32 values, conv by conv in cfg order: biases (BN beta when BN), then for BN gamma, rolling
mean, rolling variance, then the weights in OIHW order. The convs are found by walking the
model's modules in registration order, which the models keep equal to darknet's cfg order, so
the reader, the writer and the architectures share one list and cannot drift apart.
Values are little-endian, as darknet writes them on x86 and ARM.
"""

import itertools
import struct
from pathlib import Path

import torch
from torch import nn

from atomicio import write_file
from yolo9000.model.layers import ConvBNLeaky

FLOAT_BYTES = 4


class WeightsError(ValueError):
    """A .weights file does not fit the model, or has a header we cannot read."""


def darknet_convs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The model's convs in darknet file order: (conv, bn) for ConvBNLeaky, (conv, None) for a linear conv."""
    convs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []

    def walk(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, ConvBNLeaky):
                convs.append((child.conv, child.bn))
            elif isinstance(child, nn.Conv2d):
                if child.bias is None:
                    raise WeightsError(
                        f"conv {name!r} has neither BN nor a bias; darknet's linear convs always have a bias"
                    )
                convs.append((child, None))
            else:
                walk(child)

    walk(model)
    return convs


def conv_tensors(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> list[torch.Tensor]:
    """One conv's tensors in file order: bias or BN beta, [gamma, rolling mean, rolling variance], weights."""
    if bn is None:
        return [conv.bias, conv.weight]
    return [bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]


def count_darknet_floats(model: nn.Module, num_convs: int | None = None) -> int:
    """How many floats the first `num_convs` convs (all when None) take in a .weights file."""
    convs = darknet_convs(model)[:num_convs]
    return sum(t.numel() for conv, bn in convs for t in conv_tensors(conv, bn))


def check_version(version: tuple[int, int, int], where: str) -> None:
    """Refuse versions darknet itself treats as legacy (transposed) or that are not versions at all."""
    major, minor, revision = version
    if min(version) < 0 or major >= 1000 or minor >= 1000:
        raise WeightsError(
            f"{where}: unsupported darknet weights version {major}.{minor}.{revision}; expected e.g. "
            "0.1.0 (16-byte header) or 0.2.0 (20-byte header). Versions >= 1000 are darknet's legacy "
            "transposed format; other values mean this is not a darknet .weights file"
        )


def seen_format(major: int, minor: int) -> str:
    """struct format of `seen`: int64 when major*10 + minor >= 2, else int32 (pjreddie's parser.c)."""
    return "<Q" if major * 10 + minor >= 2 else "<i"


def read_header(data: bytes | bytearray, path: Path) -> tuple[tuple[int, int, int], int, int]:
    """Parse the header; returns (version, seen, header size in bytes)."""
    if len(data) < 12:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a darknet weights header (12-20 bytes)")
    version = struct.unpack_from("<3i", data, 0)
    check_version(version, str(path))
    fmt = seen_format(version[0], version[1])
    header_size = 12 + struct.calcsize(fmt)
    if len(data) < header_size:
        raise WeightsError(f"{path}: file ends inside the {header_size}-byte header")
    (seen,) = struct.unpack_from(fmt, data, 12)
    return version, seen, header_size


def whole_convs_in(
    convs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]], sizes: list[int], available: int, where: str
) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The leading convs that exactly `available` floats fill (darknet's `partial` files)."""
    ends = list(itertools.accumulate(sizes))
    if available in ends:
        return convs[: ends.index(available) + 1]
    if available > ends[-1]:
        raise WeightsError(
            f"{where}: file too long: all {len(convs)} convs take {ends[-1]} floats, found {available}; "
            "use num_convs=N to load the first N convs of a bigger file"
        )
    whole = sum(1 for end in ends if end < available)
    raise WeightsError(
        f"{where}: {available} floats do not end at a conv boundary: the first {whole} convs take "
        f"{ends[whole - 1] if whole else 0} floats and the first {whole + 1} take {ends[whole]}; "
        "is this file for another architecture or class count?"
    )


def convs_to_load(
    model: nn.Module, available: int, num_convs: int | None, prefix_only: bool, path: Path
) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Choose which convs the file's `available` floats fill, or raise saying expected vs found."""
    convs = darknet_convs(model)
    name = type(model).__name__
    if num_convs is not None:
        if not 1 <= num_convs <= len(convs):
            raise WeightsError(f"num_convs={num_convs} but {name} has {len(convs)} convs")
        convs = convs[:num_convs]
    sizes = [sum(t.numel() for t in conv_tensors(conv, bn)) for conv, bn in convs]
    if prefix_only:
        return whole_convs_in(convs, sizes, available, f"{path}: {name}")
    expected = sum(sizes)
    what = f"the first {len(convs)} convs" if num_convs is not None else f"all {len(convs)} convs"
    if available < expected:
        raise WeightsError(
            f"{path}: file too short: {name} expects {expected} floats for {what}, found {available}; "
            "the file is truncated or for another architecture (use num_convs or prefix_only=True "
            "for a partial file such as darknet19_448.conv.23)"
        )
    if available > expected and num_convs is None:
        raise WeightsError(
            f"{path}: file too long: {name} expects {expected} floats for {what}, found {available}; "
            "the file is for a bigger model or other class/anchor counts (num_convs=N loads only the first N convs)"
        )
    return convs


def load_darknet_weights(
    model: nn.Module, path: str | Path, num_convs: int | None = None, prefix_only: bool = False
) -> int:
    """Load a darknet .weights file into `model` in place; returns the header's `seen` (images trained).

    num_convs=N loads the model's first N convs from the file's start and ignores what follows
    (darknet's load_weights_upto, but counting convs, not cfg layers: Darknet-19's layers 0-22
    are 18 convs); prefix_only=True loads as many whole convs as the file holds, e.g.
    `darknet19_448.conv.23` (the 18 trunk convs, darknet's `partial`) into a YOLOv2.
    """
    path = Path(path)
    data = bytearray(path.stat().st_size)  # one writable buffer, viewed (not copied) as floats below
    with open(path, "rb") as f:
        f.readinto(data)
    _, seen, header_size = read_header(data, path)
    body_bytes = len(data) - header_size
    if body_bytes % FLOAT_BYTES:
        raise WeightsError(f"{path}: body of {body_bytes} bytes is not a whole number of float32 values")
    floats = torch.empty(0)
    if body_bytes:
        floats = torch.frombuffer(data, dtype=torch.float32, offset=header_size, count=body_bytes // FLOAT_BYTES)
    convs = convs_to_load(model, floats.numel(), num_convs, prefix_only, path)
    offset = 0
    with torch.no_grad():
        for conv, bn in convs:
            for tensor in conv_tensors(conv, bn):
                n = tensor.numel()
                tensor.copy_(floats[offset : offset + n].view_as(tensor))
                offset += n
    return seen


def save_darknet_weights(
    model: nn.Module, path: str | Path, seen: int = 0, version: tuple[int, int, int] = (0, 2, 0)
) -> None:
    """Write `model` as a darknet .weights file; written to a temporary name, then renamed into place."""
    path = Path(path)
    check_version(version, str(path))
    fmt = seen_format(version[0], version[1])
    if not 0 <= seen < 2 ** (8 * struct.calcsize(fmt) - (fmt == "<i")):
        raise WeightsError(f"{path}: seen={seen} does not fit the {struct.calcsize(fmt)}-byte field of version {version}")
    header = struct.pack("<3i", *version) + struct.pack(fmt, seen)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as f:
            f.write(header)
            for conv, bn in darknet_convs(model):
                for tensor in conv_tensors(conv, bn):
                    f.write(tensor.detach().to("cpu", torch.float32).contiguous().numpy())

    write_file(path, write)
