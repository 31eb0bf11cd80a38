"""Small real fixtures for the inference, evaluation and export tests: a hand-made WordTree, saved networks
(checkpoints written with train/checkpoint.py's save_checkpoint), real image files and real shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from wordtree.tree import WordTree
from yolo9000.data.prepare.items import SourceItem
from yolo9000.data.shardwriter.write import WriterConfig, write_shards
from yolo9000.train.checkpoint import ModelSpec, save_checkpoint

# darknet order: roots animal, artifact; animal → dog, cat; dog → terrier, poodle
TREE_WNIDS = ["n00015388", "n00021939", "n02084071", "n02121808", "n02092468", "n02113335"]
TREE_NAMES = ["animal", "artifact", "dog", "cat", "terrier", "poodle"]
TREE_PARENT = [-1, -1, 0, 0, 2, 2]
ANIMAL, ARTIFACT, DOG, CAT, TERRIER, POODLE = range(6)
ANCHORS = [[1.0, 1.0], [2.5, 2.5]]


def small_tree() -> WordTree:
    return WordTree.from_parents(TREE_WNIDS, TREE_PARENT, TREE_NAMES)


def save_network(directory: Path, tree: WordTree | None = None, input_size: int = 64, objectness: float = 3.0,
                 seed: int = 0) -> Path:
    """A Tiny YOLOv2 (width 1/4) over the tree, initialised with a seed, every anchor's objectness bias set so it
    finds boxes; saved as a checkpoint folder."""
    tree = tree or small_tree()
    spec = ModelSpec(task="detect", arch="tiny-yolov2", num_classes=len(tree), anchors=ANCHORS, width=0.25,
                     input_size=input_size)
    torch.manual_seed(seed)
    model = spec.build()
    with torch.no_grad():
        model.detect.bias.view(len(ANCHORS), -1)[:, 4] = objectness
    state = {"model": model.state_dict(), "step": 7, "images_seen": 56, "metrics": {"loss": 1.5}}
    return save_checkpoint(directory, state, spec, "model:\n  arch: tiny-yolov2\n", tree.wnids, tree)


class FixedHead(nn.Module):
    """A stand-in network whose raw output is a fixed (1, A·(5+C), h, w) tensor for every image."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.register_buffer("output", output)
        self.unused = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.expand(len(x), -1, -1, -1).clone()


def shapes_picture(width: int, height: int, boxes=(), mode: str = "RGB") -> Image.Image:
    """A dark picture with light filled rectangles at `boxes` (x0 y0 x1 y1, exclusive ends)."""
    picture = Image.new("RGB", (width, height), (40, 60, 80))
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(230, 220, 200))
    return picture.convert(mode) if mode != "RGB" else picture


def encoded(picture: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


def write_image(path: Path, width: int, height: int, boxes=(), seed: int = 0) -> Path:
    """A real JPEG of shapes (with a little seeded noise so it is not flat)."""
    picture = np.asarray(shapes_picture(width, height, boxes)).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-10, 10, picture.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(picture + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def write_validation_shards(directory: Path, detection: list[dict], classification: list[dict] = ()) -> Path:
    """Real shards + manifest.parquet through the project's shard writer, from dicts of
    {file, width, height, boxes, labels, crowd, difficult} (detection) or {file, width, height, image_label}."""
    images = directory / "images"
    items = []
    for i, sample in enumerate([*detection, *classification]):
        path = write_image(images / sample["file"], sample["width"], sample["height"], sample.get("boxes", ()), seed=i)
        boxes = np.asarray(sample.get("boxes", []), np.float32).reshape(-1, 4)
        items.append(SourceItem(key=f"val-{i:04d}", source="val", file=sample["file"], path=str(path), boxes=boxes,
                                labels=list(sample.get("labels", [])),
                                crowd=list(sample.get("crowd", [False] * len(boxes))),
                                difficult=list(sample.get("difficult", [False] * len(boxes))),
                                image_label=sample.get("image_label"), size_estimate=path.stat().st_size))
    out = directory / "shards"
    write_shards(items, WriterConfig(out_dir=out, prefix="val", shard_size=20_000, workers=1, show_progress=False))
    return out
