"""Shared fixtures of the training tests: tiny real datasets prepared into shards by the project's own
prepare scripts (COCO layout for detection, ImageNet folders for classification), and Ray clusters on
127.0.0.1 started by cluster/local.sh."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
BIN = Path(sys.executable).parent
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


class LocalCluster:
    """The nodes cluster/local.sh runs with its state in `state`: up / down, the addresses, a node killed."""

    def __init__(self, state: Path, **env: str) -> None:
        self.state = state
        # the cluster's processes (job drivers, Ray Train workers) import this checkout and the tests' helpers
        path = os.pathsep.join([str(REPO), str(TESTS / "train"), os.environ.get("PYTHONPATH", "")])
        self.env = {**os.environ, "RAY_LOCAL_DIR": str(state), "RAY_AUTH_MODE": "disabled",
                    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": path, **env}

    def up(self, nodes: int, *ray_start_args: str) -> None:
        done = subprocess.run([str(REPO / "cluster" / "local.sh"), "up", str(nodes), *ray_start_args], env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    def down(self) -> None:
        subprocess.run([str(REPO / "cluster" / "local.sh"), "down"], env=self.env, capture_output=True, timeout=120)

    def address(self, key: str) -> str:
        """GCS (host:port) or DASHBOARD (http://...) from the cluster's state file."""
        lines = (self.state / "cluster.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)[key]

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL every process of a node's session at once: the test's stand-in for a machine lost."""
        session = int((self.state / "nodes" / f"{name}.sid").read_text())
        killed = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getsid(int(entry.name)) == session:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
        return killed
