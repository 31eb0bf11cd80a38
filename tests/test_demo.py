"""The miniature `make demo`: the whole path (data, tree, shards, anchors, a Ray head, `ray job submit` for
every training stage, evaluate, detect, report) on a few images and steps."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("ap_boxed_classes", "ap_unboxed_classes", "ablation_ap_unboxed_classes", "ap_unrelated_classes",
        "top_down_exact_unboxed", "ablation_top_down_exact_unboxed", "runs", "stage_seconds")


def test_the_miniature_demo_runs_every_stage_and_writes_the_report(tmp_path):
    command = [sys.executable, str(REPO / "pipelines" / "demo.py"), "--tiny", "--data", str(tmp_path / "data"),
               "--out", str(tmp_path / "runs")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "ray job submit" in done.stdout and "cluster/local.sh up 1" in done.stdout and "stopping the Ray head" in done.stdout
    out = tmp_path / "runs"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in KEYS:
        assert key in metrics, key
    for key in KEYS[:6]:
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 1.0, key
    for stage in ("warmup", "joint", "detonly"):
        run = metrics["runs"][stage]
        assert run["images_seen"] == 4 * 16 and (Path(run["folder"]) / "loss.png").exists(), stage
    assert (out / "report.md").read_text().startswith("# make demo")
    assert (out / "class_ap.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "detections").glob("*.jpg"))
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("reusing finished run") == 3
    assert "reusing shards" in again.stdout and "already holds these settings" in again.stdout
