"""`ray job submit` to a head started with `ray start --head` on 127.0.0.1, as a user does it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_config

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A Ray head on loopback (`ray start --head --block`), stopped with its whole process group."""
    port, dashboard = free_port(), free_port()
    agents = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                     "runtime-env-agent-port", "metrics-export-port")]
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", *agents, "--num-cpus=3",
         "--disable-usage-stats"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:  # ready once its job agent takes a (no-op) job
        status = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--no-wait", "--", "true"],
                                env=ENV, capture_output=True, text=True)
        if status.returncode == 0:
            break
        time.sleep(1)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not take a job within 120 s")
    yield address, f"127.0.0.1:{port}"
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def test_ray_job_submit_runs_the_training_job_on_a_running_head(head, shards, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "run.yaml").write_text(yaml.safe_dump(tiny_config(shards, tmp_path / "runs", name="submitted",
                                                             train={"steps": 4}, run={"workers": 2})))
    dashboard, gcs = head
    done = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(job),
         "--runtime-env-json", json.dumps({"env_vars": {"RAY_ADDRESS": gcs}}), "--",
         sys.executable, str(REPO / "pipelines" / "train_9000.py"), "--config", "run.yaml", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "train_9000: done" in done.stdout
    folder = tmp_path / "runs" / "submitted"
    assert (folder / "summary.json").exists()
    assert [p for p in folder.glob("checkpoint_*") if (p / "state.pt").exists()]
