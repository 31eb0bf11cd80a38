"""Weak-scaling efficiency of a run on many GPU nodes, on paper, from bench/train_step.py's measured figures.

    python bench/train_step.py --models yolov2-416 --skip-job --json step.json
    python bench/scaling_model.py --bench step.json [--config configs/yolo9000_8x8.yaml]

Inputs measured by the bench: the network's gradient bytes and FLOPs per image, the forward's share of a step,
and (with --device cuda) images/s per GPU. Where no GPU was measured, a GPU step is the step's FLOPs at an
assumed model FLOP utilisation (--mfu) of --peak-tflops; every assumption is a flag and printed.

Model of one update on n = nodes x gpus ranks (per-GPU batch fixed: weak scaling):
  compute    t_c = batch * train FLOPs / (peak * MFU), forward t_f = share * t_c, backward t_b = t_c - t_f
  all-reduce ring: every byte of the gradient crosses each node's link 2 (n-1)/n times,
             t_ar = 2 (n-1)/n * bytes / link + 2 (nodes-1) * latency per bucket; NVLink inside a node is not
             the bottleneck (not modelled)
  overlap    DDP all-reduces 25 MB buckets as backward produces them; gradient bytes are assumed to appear
             evenly over backward, so the first bucket is ready after t_b * bucket / bytes and the last bucket's
             all-reduce always follows backward: exposed = max(t_ar(last bucket), t_first + t_ar - t_b)
  efficiency = t_c / (t_c + exposed)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_step import model_facts  # noqa: E402
from yolo9000.train.config import load_config  # noqa: E402


def allreduce_s(nbytes: float, ranks: int, nodes: int, link_gbps: float, latency_s: float, buckets: int) -> float:
    """Ring all-reduce time: 2(n-1)/n of the bytes over the node's link, plus the ring's hops between nodes."""
    return 2 * (ranks - 1) / ranks * nbytes / (link_gbps * 1e9 / 8) + 2 * (nodes - 1) * latency_s * buckets


def efficiency(step_s: float, forward_share: float, nbytes: float, ranks: int, nodes: int, link_gbps: float,
               latency_s: float, bucket_bytes: float) -> tuple[float, float]:
    """(efficiency, exposed seconds) of one update with the all-reduce overlapped with backward."""
    backward = step_s * (1 - forward_share)
    buckets = max(1, math.ceil(nbytes / bucket_bytes))
    total = allreduce_s(nbytes, ranks, nodes, link_gbps, latency_s, buckets)
    last = allreduce_s(min(bucket_bytes, nbytes), ranks, nodes, link_gbps, latency_s, 1)
    exposed = max(last, backward * min(1.0, bucket_bytes / nbytes) + total - backward)
    return step_s / (step_s + exposed), exposed


def young_interval_s(checkpoint_s: float, ranks: int, failures_per_gpu_hour: float) -> tuple[float, float]:
    """Young's checkpoint interval sqrt(2 C MTBF) and the job's MTBF, both in seconds."""
    mtbf = 3600 / (failures_per_gpu_hour * ranks)
    return math.sqrt(2 * checkpoint_s * mtbf), mtbf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="bench/train_step.py --json output")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "yolo9000_8x8.yaml",
                        help="the run to model (its network, input size and per-GPU batch); its static facts "
                             "are counted here, its timing structure taken from the bench's YOLOv2-416")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--links", type=float, nargs="+", default=[100, 400], help="Gb/s per node")
    parser.add_argument("--peak-tflops", type=float, default=312, help="assumed: A100 dense bf16 (p4d.24xlarge)")
    parser.add_argument("--mfu", type=float, nargs="+", default=[0.2, 0.4],
                        help="assumed model FLOP utilisation of a training step when no GPU was measured")
    parser.add_argument("--latency-us", type=float, default=20, help="assumed per hop between nodes")
    parser.add_argument("--bucket-mb", type=float, default=25, help="DDP's bucket_cap_mb")
    parser.add_argument("--loader-ms", type=float, default=2.8,
                        help="CPU ms per detection sample of the loader (bench/data_pipeline.py, 0 workers)")
    parser.add_argument("--failures-per-gpu-hour", type=float, default=1.97e-5,
                        help="Llama 3's 419 unexpected interruptions in 54 days on 16,384 GPUs")
    parser.add_argument("--checkpoint-gbps", type=float, default=8, help="assumed write rate to S3, Gb/s")
    args = parser.parse_args()

    bench = json.loads(args.bench.read_text())
    measured = next(r for r in bench["network"].values() if r["preset"] == "yolov2-416")
    cuda = [r for r in bench["network"].values() if r["preset"] == "yolov2-416" and r["device"] == "cuda"]
    cfg = load_config(args.config)
    facts = model_facts(cfg)
    ranks, batch, share = args.nodes * args.gpus_per_node, cfg.data.batch_size, measured["forward_share"]
    print(f"measured (bench, {measured['device']}): YOLOv2-416 {measured['params'] / 1e6:.2f} M params, "
          f"{measured['grad_bytes'] / 1e6:.1f} MB fp32 gradients, {measured['forward_gflops']:.1f} / "
          f"{measured['train_gflops']:.1f} GFLOPs fwd / train per image, forward share {share:.2f}")
    print(f"modelled: {args.config.name}: {facts['arch']} at {facts['size']} px, {facts['params'] / 1e6:.2f} M "
          f"params ({facts['grad_bytes'] / 1e6:.1f} MB fp32 gradients), {facts['train_gflops']:.1f} GFLOPs per "
          f"training image, batch {batch} per GPU, {args.nodes} nodes x {args.gpus_per_node} GPUs = {ranks} ranks")
    if cuda:  # a measured GPU step: scale it to the config's network by FLOPs
        best = max(cuda, key=lambda r: r["images_per_s"])
        steps = {f"measured {best['variant']}": batch / best["images_per_s"] * facts["train_gflops"]
                 / best["train_gflops"]}
    else:
        steps = {f"MFU {mfu:.0%} of {args.peak_tflops:.0f} TFLOP/s (assumed)":
                 batch * facts["train_gflops"] * 1e9 / (args.peak_tflops * 1e12 * mfu) for mfu in args.mfu}
    print("\n| GPU step (1 GPU) | images/s per GPU | link | gradients | all-reduce | exposed | efficiency |\n|"
          + " --- |" * 7)
    bucket = args.bucket_mb * 2**20
    for label, step_s in steps.items():
        for link in args.links:
            for dtype, width in (("fp32", 4), ("bf16", 2)):
                nbytes = facts["params"] * width
                buckets = max(1, math.ceil(nbytes / bucket))
                t_ar = allreduce_s(nbytes, ranks, args.nodes, link, args.latency_us * 1e-6, buckets)
                eff, exposed = efficiency(step_s, share, nbytes, ranks, args.nodes, link, args.latency_us * 1e-6,
                                          bucket)
                print(f"| {label}: {step_s * 1e3:.1f} ms | {batch / step_s:.0f} | {link:.0f} Gb/s | {dtype} | "
                      f"{t_ar * 1e3:.1f} ms | {exposed * 1e3:.1f} ms | {eff:.1%} |")
    fastest = min(steps.values())
    cores = batch / fastest * args.loader_ms / 1e3
    print(f"\nloader: {args.loader_ms} ms CPU per sample x {batch / fastest:.0f} images/s per GPU = {cores:.1f} "
          f"cores per GPU, {cores * args.gpus_per_node:.0f} per node (at the fastest step above)")
    state_bytes = facts["params"] * 4 * 2  # weights + SGD momentum, fp32
    checkpoint_s = state_bytes * 8 / (args.checkpoint_gbps * 1e9)
    interval, mtbf = young_interval_s(checkpoint_s, ranks, args.failures_per_gpu_hour)
    print(f"checkpoint: {state_bytes / 1e6:.0f} MB in {checkpoint_s:.1f} s; job MTBF {mtbf / 3600:.0f} h at "
          f"{args.failures_per_gpu_hour:g} failures per GPU-hour; Young's interval sqrt(2 C MTBF) = "
          f"{interval / 60:.0f} min = {interval / fastest:.0f} updates at the fastest step; every "
          f"{cfg.run.checkpoint_every} updates ({cfg.run.checkpoint_every * fastest / 60:.1f} min) costs "
          f"{checkpoint_s / (cfg.run.checkpoint_every * fastest):.2%} of the time")


if __name__ == "__main__":
    main()
