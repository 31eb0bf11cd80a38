"""`ray job submit` to a head started on 127.0.0.1 by cluster/local.sh (`ray start --head`), as a user does it."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import BIN, REPO, LocalCluster, tiny_config


@pytest.fixture
def head(tmp_path):
    """A Ray head on loopback, started and stopped by cluster/local.sh as a user does it."""
    cluster = LocalCluster(tmp_path / "ray-local")
    try:
        cluster.up(1, "--num-cpus=3")
        yield cluster
    finally:
        cluster.down()


def test_ray_job_submit_runs_the_training_job_on_a_running_head(head, shards, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / "run.yaml").write_text(yaml.safe_dump(tiny_config(shards, tmp_path / "runs", name="submitted",
                                                             train={"steps": 4}, run={"workers": 2})))
    done = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", head.address("DASHBOARD"), "--working-dir", str(job),
         "--runtime-env-json", json.dumps({"env_vars": {"RAY_ADDRESS": head.address("GCS")}}), "--",
         sys.executable, str(REPO / "pipelines" / "train_9000.py"), "--config", "run.yaml", "--no-progress"],
        env=head.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout and "train_9000: done" in done.stdout
    folder = tmp_path / "runs" / "submitted"
    assert (folder / "summary.json").exists()
    assert [p for p in folder.glob("checkpoint_*") if (p / "state.pt").exists()]
