"""The training loop in one process (LocalSession, no Ray): what benchmarks and quick checks use."""

from yolo9000.train.checkpoint import load_model
from yolo9000.train.config import config_from_dict
from yolo9000.train.loop import LocalSession, run
from conftest import tiny_config


def test_the_loop_runs_without_ray_and_evaluates_the_validation_source_on_schedule(shards, tmp_path):
    cfg = config_from_dict(tiny_config(shards, tmp_path, train={"steps": 4}, run={"workers": 1, "report_every": 1},
                                       eval={"data": str(shards["coco"]), "every": 2, "score_threshold": 1e-4}))
    session = LocalSession(tmp_path / "checkpoints")
    final = run(cfg, session)
    evaluated = [r for r in session.reports if "eval/coco/AP50" in r]
    assert [r["step"] for r in evaluated] == [2, 4] and final["step"] == 4
    assert "eval/boxed/AP50" in final  # classes split by the detection sources' manifests
    assert load_model(session.checkpoints[-1]).state["progress"]["step"] == 4


def test_the_loop_trains_on_device_warped_batches_at_the_multi_scale_sizes(shards, tmp_path):
    cfg = config_from_dict(tiny_config(shards, tmp_path, data={"augment_on": "device", "canvas_max_side": 256},
                                       train={"steps": 4, "multi_scale_every": 1, "precise_bn_batches": 1},
                                       run={"workers": 1, "report_every": 1}))
    session = LocalSession(tmp_path / "checkpoints")
    final = run(cfg, session)
    assert final["step"] == 4 and all(r["last_update_finite"] for r in session.reports)
    assert {r["input_size"] for r in session.reports} <= {64, 96} and len({r["input_size"] for r in session.reports}) == 2
