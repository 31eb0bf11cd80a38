"""Raw sample -> (uint8 image (3, H, W), target with boxes in pixels and label indices)."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from yolo9000.data.labelmap import LabelMap, UnknownLabelError


class CorruptSampleError(ValueError):
    """A sample whose image or json cannot be decoded; the message names the key and the shard."""


def decode_image(data: bytes) -> torch.Tensor:
    """JPEG bytes -> (3, H, W) uint8 RGB, channels-last in memory; libjpeg-turbo via torchvision, PIL for odd JPEGs (CMYK, ...)."""
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)  # channels-last like decode_jpeg


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


def decode_sample(sample: dict, labelmap: LabelMap) -> tuple[torch.Tensor, dict]:
    """Decode one raw WebDataset sample; raises CorruptSampleError naming key and shard."""
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
        image = decode_image(sample["jpg"])
    except Exception as exn:  # PIL raises several types for broken images
        raise CorruptSampleError(f"{where}: bad JPEG ({type(exn).__name__}: {exn})") from exn
    target["key"] = key
    target["orig_size"] = (int(image.shape[1]), int(image.shape[2]))  # (H, W) as stored, to undo a letterbox
    return image, target
