"""Two Ray nodes on 127.0.0.1 started by cluster/local.sh: DDP across the nodes (placement checked by Ray node
id, gradients equal on both ranks after the all-reduce), `ray job submit` to the two-node cluster, and a whole
node killed mid-run: the run resumes from its checkpoint and ends bitwise equal to the submitted one."""

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.1"  # every report waits for the controller's poll

import pytest  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from ray.train import RunConfig, ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from conftest import BIN, REPO, LocalCluster, tiny_config  # noqa: E402
from yolo9000.data.collate import to_network_input  # noqa: E402
from yolo9000.data.loader import Loader  # noqa: E402
from yolo9000.train.checkpoint import load_state  # noqa: E402
from yolo9000.train.config import config_from_dict, to_dict  # noqa: E402
from yolo9000.train.launch import fit  # noqa: E402
from yolo9000.train.loop import RaySession, build_model, make_criterion, make_optimizer, task_loss  # noqa: E402
from yolo9000.train.setup import load_labels  # noqa: E402

STEPS = 12
NODE = ["--num-cpus=2"]
# a lost node is declared dead within about 1.5 s instead of 30 s (GCS health checks every 0.5 s, 3 misses)
FAST_DEATH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
              "RAY_health_check_failure_threshold": "3"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and one worker node, each with 2 CPUs; this process is a driver on the head."""
    nodes = LocalCluster(tmp_path_factory.mktemp("ray-local"), **FAST_DEATH)
    try:
        nodes.up(2, *NODE)
        ray.init(address=nodes.address("GCS"), log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.down()


def spread(shards, storage, name, **sections):
    """The tiny job with its 2 workers on 2 different nodes."""
    run = {"placement_strategy": "STRICT_SPREAD", **sections.pop("run", {})}
    return config_from_dict(tiny_config(shards, storage, name=name, run=run, **sections))


# ---------------------------------------------------------------- DDP across two nodes


def gradient_probe(config: dict) -> None:
    """A few DDP steps of the job's network, loss and loader; each rank saves its node id, losses and the
    gradients it holds after each all-reduce."""
    cfg = config_from_dict(config["config"])
    session = RaySession()
    labels = load_labels(cfg)
    model = session.prepare(build_model(cfg, labels))
    criterion, optimizer = make_criterion(cfg, labels, session.world), make_optimizer(model, cfg)
    batches = iter(Loader(replace(cfg.data, seed=cfg.seed), labels.labelmap, session.rank, session.world))
    steps = []
    for _ in range(3):
        batch = next(batches)
        images = to_network_input(batch["images"], cfg.data.image_size, batch["hsv"])
        terms, _ = task_loss(cfg, model, criterion, images, batch["targets"], labels, False)
        loss = sum(terms.values()) / len(images)
        loss.backward()
        steps.append({"loss": float(loss), "grads": [p.grad.clone() for p in model.parameters()]})
        optimizer.step()
        optimizer.zero_grad()
    torch.save({"node": ray.get_runtime_context().get_node_id(), "steps": steps},
               Path(config["out"]) / f"rank{session.rank}.pt")


def test_two_workers_on_two_nodes_hold_equal_gradients_after_the_all_reduce(cluster, shards, tmp_path):
    cfg = spread(shards, tmp_path, "probe")
    trainer = TorchTrainer(gradient_probe, train_loop_config={"config": to_dict(cfg), "out": str(tmp_path)},
                           scaling_config=ScalingConfig(num_workers=2, placement_strategy=cfg.run.placement_strategy),
                           run_config=RunConfig(name="probe", storage_path=str(tmp_path)))
    trainer.fit()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert ranks[0]["node"] != ranks[1]["node"] and {ranks[0]["node"], ranks[1]["node"]} <= alive
    for step0, step1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert step0["loss"] != step1["loss"], "each rank reads its own part of the data"
        assert all(torch.equal(a, b) for a, b in zip(step0["grads"], step1["grads"]))
        assert any(bool(g.abs().sum() > 0) for g in step0["grads"])


# ---------------------------------------------------------------- ray job submit, and a node lost mid-run


def weights(checkpoint: str) -> dict:
    return load_state(checkpoint)["model"]


def checkpoints(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("checkpoint_*") if p.is_dir())


def lose_the_worker_node_then_start_it_again(cluster: LocalCluster, folder: Path, lost: list) -> None:
    """Once the run has a checkpoint: every process of the worker node killed at once; then the node started
    again (a replacement machine joining), which the job's 2 strictly spread workers need."""
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoints(folder):
        time.sleep(0.02)
    lost.append((len(checkpoints(folder)), cluster.kill_node("worker1")))
    time.sleep(2)  # the GCS declares the node dead
    cluster.up(2, *NODE)


@pytest.fixture(scope="module")
def submitted(cluster, shards, tmp_path_factory) -> dict:
    """The job submitted with `ray job submit` to the two-node cluster, uninterrupted: its output, logs, run folder."""
    root = tmp_path_factory.mktemp("submitted")
    (root / "job").mkdir()
    config = tiny_config(shards, root / "runs", name="submitted", train={"steps": STEPS},
                         run={"placement_strategy": "STRICT_SPREAD"})
    (root / "job" / "run.yaml").write_text(yaml.safe_dump(config))
    ray_cli, dashboard = [str(BIN / "ray"), "job"], cluster.address("DASHBOARD")
    done = subprocess.run(
        [*ray_cli, "submit", "--address", dashboard, "--submission-id", "two-nodes", "--working-dir", str(root / "job"),
         "--runtime-env-json", json.dumps({"env_vars": {"RAY_ADDRESS": cluster.address("GCS")}}), "--",
         sys.executable, str(REPO / "pipelines" / "train_9000.py"), "--config", "run.yaml", "--no-progress"],
        env=cluster.env, capture_output=True, text=True, timeout=300)
    logs = subprocess.run([*ray_cli, "logs", "--address", dashboard, "two-nodes"], env=cluster.env,
                          capture_output=True, text=True, timeout=60)
    return {"done": done, "logs": logs.stdout, "folder": root / "runs" / "submitted"}


def test_ray_job_submit_to_the_two_node_cluster_leaves_logs_and_the_run_folder_at_the_head(submitted):
    done = submitted["done"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"[submitted] step {STEPS}/{STEPS}" in submitted["logs"] and "train_9000: done" in submitted["logs"]
    folder = submitted["folder"]
    assert (folder / "summary.json").exists() and (folder / "loss.png").exists()
    final = load_state(checkpoints(folder)[-1])
    assert final["progress"]["step"] == STEPS and final["progress"]["images_seen"] == STEPS * 4 * 2


def test_a_whole_node_lost_mid_run_resumes_from_its_checkpoint_and_ends_bitwise_equal(
        cluster, submitted, shards, tmp_path):
    lost = []
    killer = threading.Thread(target=lose_the_worker_node_then_start_it_again,
                              args=(cluster, tmp_path / "lost", lost))
    killer.start()
    result = fit(spread(shards, tmp_path, "lost", train={"steps": STEPS}, run={"max_failures": 2}),
                 show_progress=False)
    killer.join()
    (done_before, killed), = lost
    assert killed and done_before < STEPS // 2, "the node must be lost mid-run"
    assert result.metrics["step"] == STEPS
    final, whole = weights(result.checkpoint), load_state(checkpoints(submitted["folder"])[-1])["model"]
    assert final.keys() == whole.keys() and all(torch.equal(final[k], whole[k]) for k in final)
