"""Training throughput, as ratios measured in one run: the network step alone, the whole loop without Ray
(loader + update), and the same job through Ray Train with one worker.

    python bench/train_step.py --config configs/demo_shapes.yaml --steps 60
    python bench/train_step.py --config configs/demo_shapes.yaml --steps 60 --skip-ray

The network step is fwd + bwd + optimizer step on a fixed synthetic batch of the config's size; the
loop and the Ray job read the config's real shards. images/s counts the steps after the first 10%.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolo9000.batch import BatchTargets  # noqa: E402
from yolo9000.train.config import load_config  # noqa: E402
from yolo9000.train.loop import (  # noqa: E402
    LocalSession, Meter, Progress, build_model, make_criterion, make_optimizer, run, set_threads, update,
)
from yolo9000.train.setup import load_labels  # noqa: E402


def network_step(cfg, steps: int) -> float:
    """images/s of update() on one synthetic batch (no data loading)."""
    set_threads(cfg)
    labels = load_labels(cfg)
    model, criterion = build_model(cfg, labels), make_criterion(cfg, labels, 1)
    optimizer = make_optimizer(model, cfg)
    batch_size, size = cfg.data.batch_size, cfg.data.image_size
    centre = torch.rand(batch_size, 1, 2) * 0.5 + 0.25
    targets = BatchTargets(torch.cat([centre - 0.1, centre + 0.1], -1), torch.zeros(batch_size, 1, dtype=torch.long),
                           torch.arange(batch_size) % 2 == 1, torch.where(torch.arange(batch_size) % 2 == 1, 0, -1))
    batch = {"images": torch.randint(0, 255, (batch_size, 3, size, size), dtype=torch.uint8), "targets": targets,
             "hsv": None, "keys": [str(i) for i in range(batch_size)]}
    one = replace(cfg, train=replace(cfg.train, subdivisions=1))
    forever = iter(lambda: batch, None)
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        update(one, model, criterion, optimizer, forever, Meter(), size, torch.device("cpu"), labels, Progress(), False)
        timings.append(time.perf_counter() - start)
    kept = timings[max(1, steps // 10):]
    return batch_size * len(kept) / sum(kept)


def steady_images_per_s(reports: list[dict]) -> float:
    """Mean reported images/s, leaving out the first report (start-up)."""
    values = [r["images_per_s"] for r in reports[1:] if "images_per_s" in r] or [reports[-1]["images_per_s"]]
    return sum(values) / len(values)


def local_loop(cfg) -> tuple[float, float]:
    session = LocalSession()
    run(cfg, session)
    waits = [r["data_wait_share"] for r in session.reports[1:]] or [session.reports[-1]["data_wait_share"]]
    return steady_images_per_s(session.reports), sum(waits) / len(waits)


def ray_job(cfg) -> float:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    from yolo9000.train.launch import fit

    return steady_images_per_s(fit(cfg, show_progress=False).history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo_shapes.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    base = load_config(args.config, [f"train.steps={args.steps}", f"run.report_every={max(1, args.steps // 6)}",
                                     f"run.checkpoint_every={args.steps}", "run.workers=1", "train.precise_bn_batches=0",
                                     "model.init_from=null", f"name=bench-{int(time.time())}",
                                     "run.storage_path=" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "yolo9000-bench")])
    rows = [("network step (synthetic batch)", network_step(base, args.steps))]
    loop, wait = local_loop(base)
    rows.append(("loop without Ray (loader + update)", loop))
    if not args.skip_ray:
        rows.append(("Ray Train, 1 worker", ray_job(base)))
    print(f"\n{base.model.arch} width {base.model.width} at {base.data.image_size} px, batch {base.data.batch_size}, "
          f"{base.run.cpus_per_worker} CPU threads, {base.data.num_workers} loader workers; {args.steps} steps each")
    print(f"| run | images/s | / network step | / loop without Ray |\n| --- | --- | --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value:.1f} | {value / rows[0][1]:.3f} | {value / loop:.3f} |")
    print(f"data wait share of the loop without Ray: {wait:.3f}")


if __name__ == "__main__":
    main()
