"""Images/s of predict (letterbox → network → postprocess) on the CPU, and the share of postprocessing,
as ratios to the network alone measured in the same run.

    python bench/predict.py                       # YOLOv2-416 and Tiny YOLOv2-416, batch 1 and 8; YOLO9000 + 9k tree
    python bench/predict.py --rounds 5 --threads 2

(a) predict (detect's settings: threshold .5) on 640×480 uint8 images for YOLOv2 (80 classes, final head) and
    Tiny YOLOv2 (20 classes), batch 1 and 8: images/s, and predict's time over the network's alone (the letterbox
    and postprocess overhead).
(b) YOLO9000 with darknet's 9k tree (9,418 classes, 3 anchors) at 416: postprocessing time over the network's,
    top-down labels and the 80 COCO nodes (coco9k.map), at thresholds .005 (evaluation) and .5 (display).
    Goal: at most 10 % of the network's time. Networks are randomly initialised: σ(objectness) is near .5, so at
    .005 every box is a candidate (the worst case) and at .5 about half.
Each ratio is the median of per-round ratios, the two parts timed back to back (the machine may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wordtree.darknet_files import load_tree, read_lines_file  # noqa: E402
from yolo9000.model import build_detector  # noqa: E402
from yolo9000.postprocess import DISPLAY, PostprocessConfig, postprocess  # noqa: E402
from yolo9000.predict import DARKNET_ANCHORS, Detector, letterbox_batch, parse_anchors, predict, run_network  # noqa: E402

DARKNET = REPO / "wordtree" / "data" / "darknet"


def paired(function, baseline, rounds: int) -> tuple[float, float, float]:
    """Median seconds of `function()` and of `baseline()`, and the median of their per-round ratio; each round times
    the two back to back (after one warm-up each), so a machine whose load drifts skews both alike."""
    function(), baseline()
    times, base_times, ratios = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        middle = time.perf_counter()
        baseline()
        end = time.perf_counter()
        times.append(middle - start)
        base_times.append(end - middle)
        ratios.append((middle - start) / (end - middle))
    return statistics.median(times), statistics.median(base_times), statistics.median(ratios)


def detector(arch: str, head: str, classes: int, tree=None) -> Detector:
    anchors = parse_anchors(DARKNET_ANCHORS[(arch, head, classes)])
    torch.manual_seed(0)
    model = build_detector(arch, classes, len(anchors), head=head).eval()
    labels = list(tree.wnids) if tree is not None else [f"c{i}" for i in range(classes)]
    return Detector(model, anchors, 416, labels, labels, tree)


def images(batch: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    return [torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8, generator=generator) for _ in range(batch)]


def predict_throughput(rounds: int) -> None:
    print("(a) predict on 640x480 images, CPU, threshold .5")
    print(f"{'network':<16}{'batch':>6}{'predict img/s':>15}{'network img/s':>15}{'predict/network time':>22}")
    for name, net in [("YOLOv2-416", detector("yolov2", "final", 80)), ("TinyYOLOv2-416", detector("tiny-yolov2", "paper", 20))]:
        for batch in (1, 8):
            pictures = images(batch)
            boxed, _ = letterbox_batch(pictures, net.input_size)
            whole, network, ratio = paired(lambda: predict(net, pictures, DISPLAY), lambda: run_network(net, boxed), rounds)
            print(f"{name:<16}{batch:>6}{batch / whole:>15.2f}{batch / network:>15.2f}{ratio:>22.3f}")


def postprocess_share(rounds: int) -> None:
    tree = load_tree(DARKNET / "9k.tree")
    net = detector("yolo9000", "paper", len(tree), tree)
    coco_nodes = torch.tensor([int(line) for line in read_lines_file(DARKNET / "coco9k.map")])
    print("(b) YOLO9000-416 with the 9k tree: postprocess time / network time (goal <= 0.10)")
    print(f"{'batch':>6}{'threshold':>11}{'candidates':>12}{'network s':>11}{'top-down':>10}{'COCO 80':>10}")
    for batch in (1, 8):
        boxed, sizes = letterbox_batch(images(batch), net.input_size)
        output = run_network(net, boxed)
        for threshold in (0.005, 0.5):
            config = PostprocessConfig(score_threshold=threshold)
            candidates = int((output.view(batch, 3, -1, *output.shape[-2:])[:, :, 4].sigmoid() > threshold).sum())
            network = lambda: run_network(net, boxed)  # noqa: E731
            top_down = lambda: postprocess(output, net.anchors, sizes, 416, config, tree=net.tree_arrays)  # noqa: E731
            coco = lambda: postprocess(output, net.anchors, sizes, 416, config, tree=net.tree_arrays,  # noqa: E731
                                       label_nodes=coco_nodes)
            _, seconds, top_down_ratio = paired(top_down, network, rounds)
            _, _, coco_ratio = paired(coco, network, rounds)
            print(f"{batch:>6}{threshold:>11}{candidates:>12}{seconds:>11.3f}{top_down_ratio:>10.3f}{coco_ratio:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per measurement (medians; default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.rounds} rounds")
    predict_throughput(args.rounds)
    postprocess_share(args.rounds)


if __name__ == "__main__":
    main()
