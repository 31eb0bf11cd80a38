"""Raw sample -> (uint8 image (3, H, W), target with boxes in pixels and label indices).

JPEGs decode through TorchCodec (libjpeg-turbo on CPU, batched nvJPEG on CUDA; torchvision 0.29 deprecates
its own decoders for it), PIL for what it refuses. With `decode_on: device` a worker reads only the
JPEG header (the size the geometry needs) and ships the bytes; `decode_jpegs_on_device` decodes them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image
from torchcodec.decoders import decode_jpeg

from yolo9000.data.labelmap import LabelMap, UnknownLabelError


class CorruptSampleError(ValueError):
    """A sample whose image or json cannot be decoded; the message names the key and the shard."""


def decode_image(data: bytes) -> torch.Tensor:
    """JPEG bytes -> (3, H, W) uint8 RGB, channels-last in memory; libjpeg-turbo via TorchCodec, PIL for what it refuses."""
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")
    except RuntimeError:
        return decode_with_pil(data)


def decode_with_pil(data: bytes) -> torch.Tensor:
    """Image bytes -> (3, H, W) uint8 RGB, channels-last like decode_jpeg, through PIL (any format, any mode)."""
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def image_header(data: bytes) -> tuple[int, int]:
    """(height, width) from the image header alone (PIL reads no pixels): what `decode_on: device` workers need."""
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def decode_jpegs_on_device(jpegs: dict, sizes: torch.Tensor, keys: list[str], device: torch.device | str) -> torch.Tensor:
    """`decode_on: device`: a batch's JPEGs (flat bytes + offsets) → canvas (B, 3, Hc, Wc) uint8 on `device`, in one
    batched nvJPEG call on CUDA; an image it refuses is decoded alone, then by PIL on the CPU; one that nothing
    decodes, or whose size is not its header's, raises naming the sample (its batch is already formed)."""
    offsets = jpegs["offsets"].tolist()
    sources = [jpegs["data"][start:end] for start, end in zip(offsets[:-1], offsets[1:])]
    try:
        images = decode_jpeg(sources, mode="RGB", device=device)
    except RuntimeError:
        images = [decode_one_on_device(source, key, device) for source, key in zip(sources, keys)]
    height, width = (int(v) for v in sizes.max(0).values)
    canvas = torch.zeros(len(images), 3, height, width, dtype=torch.uint8, device=device)
    for i, (image, size, key) in enumerate(zip(images, sizes.tolist(), keys)):  # one device copy per image
        if list(image.shape[1:]) != size:
            raise CorruptSampleError(f"sample {key}: decoded as {tuple(image.shape[1:])}, its header said {tuple(size)}")
        canvas[i, :, : size[0], : size[1]] = image
    return canvas


def decode_one_on_device(source: torch.Tensor, key: str, device: torch.device | str) -> torch.Tensor:
    """One JPEG on the device, else through PIL on the CPU; raises CorruptSampleError naming the sample."""
    try:
        return decode_jpeg(source, mode="RGB", device=device)
    except RuntimeError:
        try:
            return decode_with_pil(source.numpy().tobytes()).to(device)
        except Exception as exn:  # PIL raises several types for broken images
            raise CorruptSampleError(f"sample {key}: bad JPEG on the device path ({type(exn).__name__}: {exn})") from exn


def decode_target(meta: dict, labelmap: LabelMap, where: str) -> dict:
    """The json record -> target: boxes (K, 4) float32 pixels, labels/crowd/difficult per box, image_label index."""
    boxes = torch.tensor(meta["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.from_numpy(labelmap.indices(meta["labels"], where))
    image_label = meta.get("image_label")
    count = boxes.shape[0]
    return {
        "boxes": boxes,
        "labels": labels,
        "crowd": torch.tensor(meta.get("crowd") or [False] * count, dtype=torch.bool),
        "difficult": torch.tensor(meta.get("difficult") or [False] * count, dtype=torch.bool),
        "image_label": -1 if image_label is None else int(labelmap.indices([image_label], where)[0]),
        "is_classification": image_label is not None,
        "source": meta["source"],
    }


def decode_sample(sample: dict, labelmap: LabelMap, pixels: bool = True) -> tuple[torch.Tensor, dict]:
    """Decode one raw WebDataset sample; raises CorruptSampleError naming key and shard.

    `pixels=False` (`decode_on: device`): only the header is read; the image is a stand-in of its shape (an
    expanded scalar, no memory) and `target["jpeg"]` holds the bytes for the device to decode.
    """
    key, url = sample.get("__key__"), sample.get("__url__")
    where = f"sample {key} in {url}"
    if "jpg" not in sample or "json" not in sample:
        raise CorruptSampleError(f"{where} lacks 'jpg' or 'json' (has {sorted(k for k in sample if not k.startswith('__'))})")
    try:
        meta = json.loads(sample["json"])
        target = decode_target(meta, labelmap, where)
    except UnknownLabelError:
        raise  # a set-up error, not a corrupt sample: check manifests before training
    except (ValueError, KeyError, TypeError) as exn:
        raise CorruptSampleError(f"{where}: bad json ({type(exn).__name__}: {exn})") from exn
    if len(target["labels"]) != len(target["boxes"]):
        raise CorruptSampleError(f"{where}: {len(target['boxes'])} boxes but {len(target['labels'])} labels")
    try:
        if pixels:
            image = decode_image(sample["jpg"])
        else:
            image = torch.zeros((), dtype=torch.uint8).expand(3, *image_header(sample["jpg"]))
            target["jpeg"] = sample["jpg"]
    except Exception as exn:  # PIL raises several types for broken images
        raise CorruptSampleError(f"{where}: bad JPEG ({type(exn).__name__}: {exn})") from exn
    target["key"] = key
    target["orig_size"] = (int(image.shape[1]), int(image.shape[2]))  # (H, W) as stored, to undo a letterbox
    return image, target
