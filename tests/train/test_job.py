"""The training job on a real local Ray cluster (127.0.0.1): 2 DDP workers, checkpoints, a worker killed
mid-run, exact resume (bitwise equal weights), a resubmitted run, and the pre-flight checks."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"  # every report waits for the controller's poll

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from conftest import REPO, tiny_config  # noqa: E402
from yolo9000.train.checkpoint import load_model, load_state  # noqa: E402
from yolo9000.train.config import config_from_dict  # noqa: E402
from yolo9000.train.launch import PreflightError, fit, preflight  # noqa: E402

STEPS = 12


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def run(shards, storage, name, **sections):
    cfg = config_from_dict(tiny_config(shards, storage, name=name, **sections))
    return fit(cfg, show_progress=False)


def checkpoints(folder: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first (Ray names them by time)."""
    return sorted(p for p in folder.glob("checkpoint_*") if p.is_dir())


def weights(checkpoint: str) -> dict:
    return load_state(checkpoint)["model"]


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(cluster, shards, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    result = run(shards, storage, "whole", train={"steps": STEPS})
    return result


def test_two_workers_train_and_leave_a_loadable_checkpoint_and_the_run_files(uninterrupted):
    result = uninterrupted
    assert result.metrics["step"] == STEPS and result.metrics["images_seen"] == STEPS * 4 * 2  # batch 4, 2 ranks
    for key in ("loss", "loss/coord", "loss/class", "stats/avg_iou", "images_per_s", "data_wait_share", "lr",
                "input_size", "corrupt_samples", "mix/coco", "mix/imagenet"):
        assert key in result.metrics, key
    loaded = load_model(result.checkpoint)
    assert loaded.spec.arch == "tiny-yolov2" and len(loaded.labels) == loaded.spec.num_classes
    assert (Path(result.checkpoint) / "rank0.pt").exists() and (Path(result.checkpoint) / "rank1.pt").exists()
    assert loaded.state["progress"]["step"] == STEPS and int(loaded.state["criterion"]["seen"]) == STEPS * 8
    folder = result.run_folder
    assert (folder / "summary.json").exists() and (folder / "loss.png").stat().st_size > 0
    assert any((folder / "tensorboard").iterdir())


def kill_a_worker_after_the_first_checkpoint(storage: Path, name: str, killed: list) -> None:
    """SIGKILL one RayTrainWorker process once the run has a checkpoint (the test's stand-in for a crash)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if checkpoints(storage / name):
            for pid in worker_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, len(checkpoints(storage / name))))
                return
        time.sleep(0.02)


def worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RayTrainWorker" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def test_a_killed_worker_restarts_from_its_checkpoint_and_ends_bitwise_equal(uninterrupted, shards, tmp_path):
    killed = []
    killer = threading.Thread(target=kill_a_worker_after_the_first_checkpoint, args=(tmp_path, "killed", killed))
    killer.start()
    result = run(shards, tmp_path, "killed", train={"steps": STEPS}, run={"max_failures": 2})
    killer.join()
    assert killed and killed[0][1] < STEPS // 2, "the worker must die mid-run"
    assert result.metrics["step"] == STEPS
    assert_bitwise_equal(weights(result.checkpoint), weights(uninterrupted.checkpoint))


def test_a_resubmitted_run_resumes_from_its_last_checkpoint_and_ends_bitwise_equal(
        uninterrupted, cluster, shards, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shards, tmp_path, name="again", train={"steps": STEPS})))
    command = [sys.executable, str(REPO / "pipelines" / "train_9000.py"), "--config", str(config),
               "--address", cluster, "--no-progress"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not checkpoints(tmp_path / "again") and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies: its controller and workers go with it
    first.wait()
    done_before = len(checkpoints(tmp_path / "again"))
    assert done_before < STEPS // 2
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    final = load_state(checkpoints(tmp_path / "again")[-1])
    assert final["progress"]["step"] == STEPS
    assert_bitwise_equal(final["model"], weights(uninterrupted.checkpoint))


# ---------------------------------------------------------------- pre-flight, before any worker starts


def preflight_of(shards, tmp_path, **sections):
    preflight(config_from_dict(tiny_config(shards, tmp_path, **sections)))


def test_preflight_finds_a_manifest_label_missing_from_the_class_list(shards, tmp_path):
    classes = tmp_path / "fewer.txt"
    classes.write_text("".join(shards["classes"].read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(PreflightError, match=r"(?s)'imagenet'.*manifest.parquet: n0"):
        preflight_of(shards, tmp_path, labels={"classes": str(classes)})


def test_preflight_finds_missing_shards_and_too_few_for_the_readers(shards, tmp_path):
    sources = [{"name": "gone", "urls": str(tmp_path / "gone-{000000..000003}.tar"), "kind": "detection"}]
    with pytest.raises(PreflightError, match=r"'gone': shard .*gone-000000.tar does not exist"):
        preflight_of(shards, tmp_path, data={"sources": sources})
    with pytest.raises(PreflightError, match=r"'coco': \d+ shard\(s\) for 64 readers"):
        preflight_of(shards, tmp_path, data={"resampled": False}, run={"workers": 64})
    with pytest.raises(PreflightError, match="does not answer"):
        preflight_of(shards, tmp_path, data={"sources": [{"name": "web", "urls": "http://127.0.0.1:9/s.tar"}]})


def test_preflight_finds_an_init_from_that_is_missing_or_for_another_network(shards, uninterrupted, tmp_path):
    with pytest.raises(PreflightError, match="neither a checkpoint folder nor a darknet .weights"):
        preflight_of(shards, tmp_path, model={"arch": "tiny-yolov2", "width": 0.125, "anchors": [[1, 1]],
                                              "init_from": str(tmp_path / "nothing")})
    with pytest.raises(PreflightError, match="no layer of .* fits this YOLOv2"):
        preflight_of(shards, tmp_path, model={"arch": "yolov2", "width": 1.0, "anchors": [[1, 1]],
                                              "init_from": uninterrupted.checkpoint})


def test_the_entry_point_prints_a_preflight_error_without_a_traceback_or_a_cluster(shards, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(tiny_config(shards, tmp_path, labels={"tree": str(tmp_path / "no.tree"), "classes": None})))
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "train_9000.py"), "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "labels.tree" in done.stderr and "no.tree" in done.stderr
    assert "Ray" not in done.stdout + done.stderr  # refused before any cluster was started
