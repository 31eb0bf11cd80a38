"""Training throughput, as ratios measured in one run, and the figures the scaling model needs.

    python bench/train_step.py                                  # CPU: both model presets, then the demo job
    python bench/train_step.py --models yolov2-416 --skip-job --json step.json
    python bench/train_step.py --device cuda --json step.json   # a GPU: fp32 eager vs bf16 + channels-last (+ compile)

1. Network step (fwd + bwd + optimizer step of `update()`, one synthetic batch, no loading) per --models preset:
   YOLOv2 at 416 (80 classes) and Tiny YOLOv2 at 224, batch 8; images/s, the forward's share of the step,
   parameters, gradient bytes (what DDP all-reduces per update) and FLOPs per image (torch's FlopCounterMode;
   training = forward + backward). With --device cuda each preset runs fp32 eager, bf16 + channels-last, and
   bf16 + channels-last + torch.compile, with model FLOP utilisation against --peak-tflops.
2. The job on the demo config's real shards (configs/demo_shapes.yaml, `make demo` writes them): the loop without
   Ray (one process), the same loop as a Ray Train job with 1 worker (overhead goal <= 3 %), with Ray Train's
   default controller poll and with the 0.1 s one, and 2 DDP workers of 1 thread against 1 worker of 2 threads;
   the loader's wait share of the step (goal <= 5 %).
Each job run is repeated --rounds times in an order rotated per round (the speed of this machine drifts between
minutes); rows are medians, the overhead is the median of the per-round ratios. images/s counts the steps after
the first report (start-up). Ray's workers run at niceness 0 here (Ray's default 15
would measure the scheduler, not Ray). --json writes every figure for bench/scaling_model.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolo9000.batch import BatchTargets  # noqa: E402
from yolo9000.data.collate import to_network_input  # noqa: E402
from yolo9000.train.config import Config, config_from_dict, load_config  # noqa: E402
from yolo9000.train.loop import (  # noqa: E402
    LocalSession, Meter, Progress, autocast, build_model, compiled, make_criterion, make_optimizer, memory_format,
    run, set_threads, task_loss, update,
)
from yolo9000.train.setup import load_labels  # noqa: E402

PRESETS = {  # name: (arch, width, input size); batch 8, COCO's 80 classes
    "yolov2-416": ("yolov2", 1.0, 416),
    "tiny-224": ("tiny-yolov2", 1.0, 224),
}
CUDA_VARIANTS = {  # name: run settings on a GPU
    "fp32 eager": {"bf16": False, "channels_last": False, "compile": False},
    "bf16 + channels-last": {"bf16": True, "channels_last": True, "compile": False},
    "bf16 + channels-last + compile": {"bf16": True, "channels_last": True, "compile": True},
}


def preset_config(name: str, batch: int, threads: int, variant: dict | None = None) -> Config:
    """A detector of the preset on COCO's classes (no data: the network step feeds a synthetic batch)."""
    arch, width, size = PRESETS[name]
    return config_from_dict({
        "model": {"arch": arch, "width": width}, "labels": {"classes": "coco"},
        "data": {"sources": [{"name": "synthetic", "urls": "none"}], "batch_size": batch, "image_size": size},
        "train": {"multi_scale": False},
        "run": {"cpus_per_worker": threads, **(variant or {"bf16": False, "compile": False})},
    })


def synthetic_batch(batch_size: int, size: int) -> dict:
    """Random uint8 images with one box each, half of them classification samples."""
    centre = torch.rand(batch_size, 1, 2) * 0.5 + 0.25
    odd = torch.arange(batch_size) % 2 == 1
    targets = BatchTargets(torch.cat([centre - 0.1, centre + 0.1], -1), torch.zeros(batch_size, 1, dtype=torch.long),
                           odd, torch.where(odd, 0, -1))
    return {"images": torch.randint(0, 255, (batch_size, 3, size, size), dtype=torch.uint8), "targets": targets,
            "hsv": None, "keys": [str(i) for i in range(batch_size)]}


def model_facts(cfg: Config) -> dict:
    """Parameters, gradient bytes per update, and forward / training FLOPs per image of the config's network."""
    labels = load_labels(cfg)
    model = build_model(cfg, labels)
    size = cfg.data.image_size
    with FlopCounterMode(display=False) as forward:
        output = model(torch.rand(1, 3, size, size))
    with FlopCounterMode(display=False) as training:
        model(torch.rand(1, 3, size, size)).float().sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"arch": cfg.model.arch, "width": cfg.model.width, "size": size, "classes": len(labels.wnids),
            "params": sum(p.numel() for p in trainable), "grad_bytes": sum(p.numel() * 4 for p in trainable),
            "forward_gflops": forward.get_total_flops() / 1e9, "train_gflops": training.get_total_flops() / 1e9,
            "output_shape": list(output.shape)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_step(cfg: Config, steps: int, device: torch.device) -> dict:
    """images/s of update() on one synthetic batch, and the forward's share of a step (timed alone)."""
    set_threads(cfg)
    labels = load_labels(cfg)
    model = compiled(build_model(cfg, labels).to(device, memory_format=memory_format(cfg, device)), cfg, device)
    criterion, optimizer = make_criterion(cfg, labels, 1).to(device), make_optimizer(model, cfg)
    batch, size = synthetic_batch(cfg.data.batch_size, cfg.data.image_size), cfg.data.image_size
    batch["images"] = batch["images"].to(device)
    one = replace(cfg, train=replace(cfg.train, subdivisions=1))
    forever = iter(lambda: batch, None)

    def step() -> None:
        update(one, model, criterion, optimizer, forever, Meter(), size, device, labels, Progress(), False)

    def forward() -> None:
        with autocast(cfg, device):
            task_loss(cfg, model, criterion, to_network_input(batch["images"], size), batch["targets"], labels, False)

    step_s, forward_s = timed(step, steps, device), timed(forward, steps, device)
    return {"images_per_s": cfg.data.batch_size / step_s, "step_s": step_s, "forward_share": forward_s / step_s}


def timed(function, steps: int, device: torch.device) -> float:
    """Mean seconds of `function` after one warm-up call (compilation, allocator, threads)."""
    function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------- the job on real shards


def steady(reports: list[dict], key: str) -> float:
    """Mean of a reported metric, leaving out the first report (start-up)."""
    values = [r[key] for r in reports[1:] if key in r] or [reports[-1][key]]
    return sum(values) / len(values)


def local_loop(cfg: Config) -> dict:
    session = LocalSession()
    run(cfg, session)
    return {"images_per_s": steady(session.reports, "images_per_s"),
            "data_wait_share": steady(session.reports, "data_wait_share")}


def ray_job(cfg: Config, poll_s: str | None) -> dict:
    """The job through fit() (Ray Train), total images/s of all ranks; `poll_s` sets the controller's poll."""
    from yolo9000.train.launch import disconnect, fit

    if poll_s is None:
        os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
    else:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = poll_s
    history = fit(replace(cfg, name=f"{cfg.name}-{cfg.run.workers}w-{poll_s}-{time.time():.0f}"),
                  show_progress=False).history
    disconnect()  # the cluster fit() started goes with it: no Ray process runs beside the loop's rows
    return {"images_per_s": steady(history, "images_per_s") * cfg.run.workers,
            "data_wait_share": steady(history, "data_wait_share")}


def job_rows(config: str, steps: int, rounds: int) -> tuple[Config, list[tuple[str, dict]]]:
    """The demo config's job four ways, `rounds` times in an order rotated per round (this machine's speed drifts by
    10-20 % between minutes, so one pass in a fixed order measures the drift); each row's medians over the rounds."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["RAY_worker_niceness"] = "0"  # read by the raylet that fit() starts for this process
    storage = Path(tempfile.gettempdir()) / "yolo9000-bench"
    base = load_config(config, [f"train.steps={steps}", f"run.report_every={max(1, steps // 6)}",
                                f"run.checkpoint_every={steps}", "run.workers=1", "train.precise_bn_batches=0",
                                "model.init_from=null", f"name=bench-{int(time.time())}",
                                f"run.storage_path={storage}"])
    two = replace(base, run=replace(base.run, workers=2, cpus_per_worker=max(1, base.run.cpus_per_worker // 2)))
    runs = [("loop without Ray", lambda: local_loop(base)),
            ("Ray Train, 1 worker (default 2 s controller poll)", lambda: ray_job(base, None)),
            ("Ray Train, 1 worker (0.1 s poll)", lambda: ray_job(base, "0.1")),
            (f"Ray Train, 2 DDP workers x {two.run.cpus_per_worker} thread (0.1 s poll)", lambda: ray_job(two, "0.1"))]
    measured: list[list[dict]] = [[] for _ in runs]
    for round_ in range(rounds):
        for k in [(round_ + i) % len(runs) for i in range(len(runs))]:
            measured[k].append(runs[k][1]())
    rows = []
    for (name, _), results in zip(runs, measured):
        row = {key: statistics.median(r[key] for r in results) for key in results[0]}
        row["per_round"] = [r["images_per_s"] for r in results]
        rows.append((name, row))
    return base, rows


# ---------------------------------------------------------------- output


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def network_table(results: dict, device: torch.device) -> None:
    print(f"\n| network step ({device.type}) | batch | images/s | / {next(iter(results))} | forward share | "
          "params | grad MB (fp32) | GFLOPs fwd / train per image | MFU |\n|" + " --- |" * 9)
    first = None
    for key, r in results.items():
        first = first or r["images_per_s"]
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"| {key} | {r['batch']} | {r['images_per_s']:.2f} | {r['images_per_s'] / first:.3f} | "
              f"{r['forward_share']:.2f} | {r['params'] / 1e6:.2f} M | {r['grad_bytes'] / 1e6:.1f} | "
              f"{r['forward_gflops']:.1f} / {r['train_gflops']:.1f} | {mfu} |")


def job_table(base: Config, rows: list[tuple[str, dict]]) -> dict:
    loop = rows[0][1]["images_per_s"]
    print(f"\njob: {base.model.arch} width {base.model.width} at {base.data.image_size} px, batch "
          f"{base.data.batch_size} per rank, {base.data.num_workers} loader worker(s) per rank, "
          f"{base.train.steps} steps each, Ray workers at niceness 0, medians of {len(rows[0][1]['per_round'])} rounds")
    print("| run | images/s (all ranks), median | / loop without Ray | per round | loader wait share |\n"
          "| --- | --- | --- | --- | --- |")
    for name, r in rows:
        rounds = ", ".join(f"{v:.0f}" for v in r["per_round"])
        print(f"| {name} | {r['images_per_s']:.1f} | {r['images_per_s'] / loop:.3f} | {rounds} | "
              f"{r['data_wait_share']:.3f} |")
    per_round = [ray / loop for ray, loop in zip(rows[2][1]["per_round"], rows[0][1]["per_round"])]
    print(f"Ray (0.1 s poll) / loop, per round: {', '.join(f'{v:.3f}' for v in per_round)}")
    summary = {"ray_overhead_default_poll": 1 - rows[1][1]["images_per_s"] / loop,
               "ray_overhead_fast_poll": 1 - statistics.median(per_round),
               "ddp2_over_1": rows[3][1]["images_per_s"] / rows[2][1]["images_per_s"],
               "loader_wait_share": rows[0][1]["data_wait_share"]}
    print(f"Ray overhead (1 - Ray/loop): {summary['ray_overhead_default_poll']:.1%} with the default poll, "
          f"{summary['ray_overhead_fast_poll']:.1%} with 0.1 s (goal <= 3 %); 2 DDP workers / 1: "
          f"{summary['ddp2_over_1']:.3f}; loader wait share {summary['loader_wait_share']:.1%} (goal <= 5 %)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=8, help="network-step batch (default 8)")
    parser.add_argument("--model-steps", type=int, default=4, help="timed network steps per preset (after 1 warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for MFU (default: by its name)")
    parser.add_argument("--config", default=str(REPO / "configs" / "demo_shapes.yaml"), help="the job's config")
    parser.add_argument("--steps", type=int, default=120, help="updates of each job run")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of the four job runs, order rotated (default 3)")
    parser.add_argument("--skip-job", action="store_true", help="network steps only")
    parser.add_argument("--json", type=Path, help="write every figure here (bench/scaling_model.py reads it)")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = os.cpu_count() or 1
    print(f"load before: {load()}")
    results = {}
    for name in args.models:
        facts = model_facts(preset_config(name, args.batch, threads))
        variants = CUDA_VARIANTS if device.type == "cuda" else {"fp32": None}
        for variant, settings in variants.items():
            cfg = preset_config(name, args.batch, threads, settings)
            measured = network_step(cfg, args.model_steps, device)
            entry = {"preset": name, "variant": variant, "device": device.type, "batch": args.batch, **facts,
                     **measured}
            if device.type == "cuda":
                entry["mfu"] = measured["images_per_s"] * facts["train_gflops"] * 1e9 / (peak_tflops(args) * 1e12)
            results[f"{name} {variant}"] = entry
    network_table(results, device)
    report = {"load_before": load(), "network": results}
    if not args.skip_job:
        base, rows = job_rows(args.config, args.steps, args.rounds)
        report["job"] = {"rows": dict(rows), **job_table(base, rows)}
    report["load_after"] = load()
    print(f"load after: {report['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def peak_tflops(args) -> float:
    """Dense bf16 peak of the GPU: as given, else from its name (A100 312, H100 / H200 989)."""
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name()
    for key, value in {"A100": 312.0, "H100": 989.0, "H200": 989.0}.items():
        if key in name:
            return value
    raise SystemExit(f"unknown GPU {name!r}: give --peak-tflops (its dense bf16 peak)")


if __name__ == "__main__":
    main()
