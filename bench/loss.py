"""Time and peak memory of the region loss (targets + forward + backward of the loss only), as ratios
to the forward + backward pass of the network measured in the same run.

    python bench/loss.py                      # batch 16 at 416 (13×13) on the CPU
    python bench/loss.py --batch 4 --size 320 --device cuda --repeats 5

Cases: (a) YOLOv2, 80 classes, flat softmax, 5 anchors, detection images only;
       (b) YOLO9000, darknet's 9k tree (9,418 classes), 3 anchors, half classification-only images.
Each (case, part) runs in a fresh process so that CPU peak memory (ru_maxrss growth over the
process's baseline after set-up) belongs to that part alone; on CUDA, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wordtree.darknet_files import load_tree, read_lines_file  # noqa: E402
from yolo9000.hierarchy import TreeArrays  # noqa: E402
from yolo9000.loss import RegionLoss, RegionLossConfig  # noqa: E402
from yolo9000.batch import BatchTargets  # noqa: E402
from yolo9000.model.yolov2 import YOLO9000, YOLOv2  # noqa: E402

DARKNET = REPO / "wordtree" / "data" / "darknet"
VOC_ANCHORS = [[1.3221, 1.73145], [3.19275, 4.00944], [5.05587, 8.09892], [9.47112, 4.84053], [11.2364, 10.0071]]
NINE_K_ANCHORS = [[0.77871, 1.14074], [3.00525, 4.31277], [9.22725, 9.61974]]  # yolo9000.cfg


def make_targets(batch: int, labels: list[int], classification_share: float, seed: int) -> BatchTargets:
    """Random boxes (1–12 per detection image, padded to 30 rows) and classification images."""
    gen = torch.Generator().manual_seed(seed)
    rows = 30
    centre = torch.rand(batch, rows, 2, generator=gen) * 0.8 + 0.1
    size = torch.rand(batch, rows, 2, generator=gen) * 0.5 + 0.03
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1).clamp(0, 1)
    pool = torch.tensor(labels)
    label = pool[torch.randint(len(pool), (batch, rows), generator=gen)]
    count = torch.randint(1, 13, (batch, 1), generator=gen)
    label = torch.where(torch.arange(rows)[None] < count, label, -1)
    is_classification = torch.arange(batch) < int(batch * classification_share)
    image_label = torch.where(is_classification, pool[torch.randint(len(pool), (batch,), generator=gen)], -1)
    return BatchTargets(boxes, label, is_classification, image_label)


def build_case(case: str):
    """(network factory, criterion, targets maker) for case 'a' (80 flat) or 'b' (9k tree)."""
    if case == "a":
        criterion = RegionLoss(torch.tensor(VOC_ANCHORS), 80, config=RegionLossConfig(darknet_version="final"))
        return lambda: YOLOv2(80, 5, head="final"), criterion, lambda batch: make_targets(batch, list(range(80)), 0.0, 0)
    tree = load_tree(DARKNET / "9k.tree")
    coco_nodes = [int(line) for line in read_lines_file(DARKNET / "coco9k.map")]
    criterion = RegionLoss(torch.tensor(NINE_K_ANCHORS), len(tree), TreeArrays.from_parent(tree.parent))
    return lambda: YOLO9000(len(tree), 3), criterion, lambda batch: make_targets(batch, coco_nodes, 0.5, 1)


def measure(case: str, part: str, batch: int, size: int, device: str, repeats: int, queue) -> None:
    """Seconds per iteration and peak bytes of one part ('network' or 'loss') of one case.

    The loss part never builds the network (its output is random, of the head's shape), so that the
    set-up's own peak does not hide the loss's.
    """
    torch.manual_seed(0)
    make_network, criterion, make = build_case(case)
    criterion = criterion.to(device).train()
    channels = len(criterion.anchors) * (5 + criterion.num_classes)
    output = torch.randn(batch, channels, size // 32, size // 32, device=device, requires_grad=True)
    if part == "network":
        network = make_network().to(device).train()
        images = torch.randn(batch, 3, size, size, device=device)
    targets = {k: v.to(device) for k, v in make(batch).items()}

    def network_step():
        network.zero_grad(set_to_none=True)  # as a training step does
        network(images).backward(torch.ones_like(output))

    def loss_step():
        output.grad = None
        criterion(output, targets).total.backward()

    step = network_step if part == "network" else loss_step
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()  # warm-up (its peak counts: later iterations reuse the same memory)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    queue.put((seconds, peak))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_isolated(*args):
    """Run `measure` in a fresh process and return its (seconds, peak bytes)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"batch {args.batch}, input {args.size} ({args.size // 32}×{args.size // 32}), device {args.device}, "
          f"{args.repeats} timed iterations after one warm-up; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("peak memory: " + ("torch.cuda.max_memory_allocated above the set-up" if args.device == "cuda"
                            else "growth of ru_maxrss over the set-up (process high-water mark)"))
    header = f"{'case':<34}{'network s':>10}{'loss s':>10}{'time ratio':>11}{'network MiB':>13}{'loss MiB':>10}{'mem ratio':>10}"
    print(header)
    names = {"a": "(a) YOLOv2, 80 flat, 5 anchors", "b": "(b) YOLO9000, 9418 tree, 3 anchors"}
    for case in ("a", "b"):
        net_s, net_mem = run_isolated(case, "network", args.batch, args.size, args.device, args.repeats)
        loss_s, loss_mem = run_isolated(case, "loss", args.batch, args.size, args.device, args.repeats)
        mib = 2**20
        print(f"{names[case]:<34}{net_s:>10.3f}{loss_s:>10.3f}{loss_s / net_s:>11.4f}"
              f"{net_mem / mib:>13.1f}{loss_mem / mib:>10.1f}{loss_mem / max(net_mem, 1):>10.4f}")


if __name__ == "__main__":
    main()
