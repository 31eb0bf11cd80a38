"""Shared fixtures of the training tests: tiny real datasets prepared into shards by the project's own
prepare scripts (COCO layout for detection, ImageNet folders for classification)."""

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "data"))

from datasets import COCO_MAP, COCO_NAMES, IMAGENET_WNIDS, build_coco, build_imagenet_folders  # noqa: E402


def prepare(script: str, *args: str) -> None:
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / script), *args, "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> dict[str, Path]:
    """{coco, imagenet, classes}: shard folders (with manifest.parquet) and a class-list file of every wnid."""
    root = tmp_path_factory.mktemp("train-data")
    ann, images, _ = build_coco(root / "coco-raw", n_images=32, seed=5)
    build_imagenet_folders(root / "imagenet-raw", per_class=8, seed=6)
    prepare("prepare_coco.py", "--ann", str(ann), "--images", str(images), "-o", str(root / "coco"),
            "--shard-size", "20kB", "--workers", "1")
    prepare("prepare_imagenet.py", "--root", str(root / "imagenet-raw"), "-o", str(root / "imagenet"),
            "--shard-size", "20kB", "--workers", "1")
    classes = root / "classes.txt"
    classes.write_text("".join(f"{w}\n" for w in dict.fromkeys([COCO_MAP[n] for n in COCO_NAMES] + IMAGENET_WNIDS)))
    return {"coco": root / "coco", "imagenet": root / "imagenet", "classes": classes}


def tiny_config(shards: dict[str, Path], storage: Path, **sections) -> dict:
    """A Tiny YOLOv2 (width 1/8, 64 px) joint-training config over the shards; sections override by key."""
    config = {
        "name": "tiny", "task": "detect", "seed": 7,
        "model": {"arch": "tiny-yolov2", "width": 0.125, "anchors": [[1.0, 1.0], [2.0, 1.5]]},
        "labels": {"classes": str(shards["classes"])},
        "data": {"sources": [{"name": "coco", "urls": str(shards["coco"]), "weight": 1, "kind": "detection"},
                             {"name": "imagenet", "urls": str(shards["imagenet"]), "weight": 1,
                              "kind": "classification"}],
                 "batch_size": 4, "image_size": 64, "num_workers": 1, "shuffle_buffer": 8},
        "loss": {"darknet_version": "final"},
        "train": {"steps": 8, "optimizer": "sgd", "lr": 0.002, "multi_scale_sizes": [64, 96], "multi_scale_every": 2},
        "run": {"storage_path": str(storage), "workers": 2, "checkpoint_every": 2, "report_every": 2},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config
