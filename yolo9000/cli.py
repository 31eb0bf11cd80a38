"""`yolo9000` console entry: argument parsing only; the work is done by the library modules."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

from wordtree.labelsets import LabelSetError
from wordtree.tree import TreeError
from yolo9000 import anchors as dimension_clusters
from yolo9000.arguments import integer
from yolo9000 import detect, evaluate, export, predict
from yolo9000.data.labelmap import UnknownLabelError
from yolo9000.data.schema import SchemaError
from yolo9000.data.stream import StreamError
from yolo9000.model import WeightsError
from yolo9000.postprocess import PostprocessConfig, PostprocessError
from yolo9000.train.checkpoint import CheckpointError, describe_checkpoint

USER_ERRORS = (dimension_clusters.AnchorError, predict.PredictError, evaluate.EvaluationError, export.ExportError,
               CheckpointError, WeightsError, TreeError, LabelSetError, SchemaError, StreamError, UnknownLabelError,
               PostprocessError)


def build_parser() -> argparse.ArgumentParser:
    """The `yolo9000` parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="yolo9000", description="YOLOv2 / YOLO9000 hierarchical detection tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_anchors_command(commands)
    add_detect_command(commands)
    add_evaluate_command(commands)
    add_export_command(commands)
    add_inspect_command(commands)
    return parser


def add_anchors_command(commands) -> None:
    """`yolo9000 anchors`: dimension clusters (k-means, d = 1 − IoU) from Parquet manifests."""
    parser = commands.add_parser(
        "anchors",
        help="cluster box shapes into k anchors (k-means, d = 1 - IoU) and print a darknet anchors= line",
        description="Read box sizes from shard manifests, cluster them with k-means using d = 1 - IoU "
        "(YOLOv2 paper, 'Dimension Clusters'), and print the anchors in grid-cell units as a darknet "
        "cfg 'anchors =' line, with the mean IoU of the boxes to their best anchor.",
        epilog="Boxes with zero or negative (or non-finite) size and crowd regions are skipped and counted, and "
        "rows without boxes counted, in the line printed after the anchors. Refused, before anything is printed "
        "or written (exit status 2, one message naming the file or option): a manifest that is missing, not "
        "Parquet, lacks the width/height/boxes columns or is given twice; no usable box; k outside 1..boxes; "
        "an option out of range; a --plot path whose folder does not exist or whose format is unknown.",
    )
    parser.add_argument("--manifest", action="append", required=True, metavar="FILE",
                        help="manifest.parquet written with the shards; repeat to pool several datasets")
    parser.add_argument("-k", type=integer(minimum=1), required=True, help="number of anchors (the paper uses 5)")
    parser.add_argument("--size", type=integer(minimum=1), default=416,
                        help="network input size for grid units, a multiple of --stride (default 416)")
    parser.add_argument("--stride", type=integer(minimum=1), default=32,
                        help="network stride (default 32: 13x13 cells at 416)")
    parser.add_argument("--seed", type=integer(minimum=0), default=0, help="random seed of the k-means++ initialisation")
    parser.add_argument("--restarts", type=integer(minimum=1), default=3, help="seeded runs; the best mean IoU is kept")
    parser.add_argument("--plot", metavar="PNG",
                        help="also save mean IoU against k = 1..--max-k (paper Figure 2); the format follows the "
                             "file name (.png, .pdf, .svg, ...)")
    parser.add_argument("--max-k", type=integer(minimum=1), default=10,
                        help="largest k on the --plot curve (default 10)")
    parser.set_defaults(run=run_anchors)


def run_anchors(args: argparse.Namespace) -> None:
    """Cluster, print the anchors line and mean IoU, and plot the curve when asked."""
    if args.plot:
        dimension_clusters.check_plot_path(args.plot)
    sizes = dimension_clusters.read_manifest_boxes(args.manifest)
    result = dimension_clusters.kmeans_anchors(sizes.wh, args.k, seed=args.seed, restarts=args.restarts)
    grid = dimension_clusters.to_grid_units(result.anchors, input_size=args.size, stride=args.stride)
    print(dimension_clusters.darknet_anchors_line(grid))
    print(f"mean IoU {result.mean_iou:.4f} over {len(sizes.wh)} boxes (k={args.k}, seed={args.seed}, "
          f"{args.size // args.stride}x{args.size // args.stride} grid); "
          f"skipped {sizes.skipped_zero_size} zero-size boxes, {sizes.skipped_crowd} crowd boxes, "
          f"{sizes.rows_without_boxes} rows without boxes")
    if args.plot:
        ks = range(1, min(args.max_k, len(sizes.wh)) + 1)
        curve = dimension_clusters.mean_iou_curve(sizes.wh, ks, seed=args.seed, restarts=args.restarts)
        path = dimension_clusters.plot_mean_iou_curve(curve, args.plot)
        print(f"mean IoU curve for k = 1..{len(curve)} saved to {path}")


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint DIR, or darknet --weights FILE --arch NAME [--head] [--tree | --names] [--anchors]; --size, --device."""
    group = parser.add_argument_group("network (a checkpoint of ours, or darknet weights)")
    group.add_argument("--checkpoint", metavar="DIR", help="checkpoint folder written by training (state.pt, ...)")
    group.add_argument("--weights", metavar="FILE", help="darknet .weights file (needs --arch and --tree or --names)")
    group.add_argument("--arch", choices=["yolov2", "yolo9000", "tiny-yolov2"], help="architecture of --weights")
    group.add_argument("--head", choices=["paper", "final"], default="paper",
                       help="YOLOv2 passthrough head: paper (yolo-voc.cfg) or final (yolov2.cfg); default paper")
    group.add_argument("--tree", metavar="FILE", help="darknet .tree of a WordTree head (9k.tree; .names beside it)")
    group.add_argument("--names", metavar="FILE", help="darknet .names of a flat head (coco.names, voc.names)")
    group.add_argument("--anchors", metavar="W,H,...", help="anchors in grid cells (default: darknet's cfg for the "
                       "arch, head and class count)")
    group.add_argument("--width", type=float, default=1.0, help="Tiny YOLOv2 width multiplier of --weights")
    group.add_argument("--size", type=int, help="network input size (default: the checkpoint's, 416 for --weights)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available; default)")


def device_of(name: str) -> torch.device:
    """The torch device of --device; cuda without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise predict.PredictError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise predict.PredictError(f"--device {name}: no CUDA device here; use --device cpu")
    return device


def detector_from_args(args: argparse.Namespace) -> predict.Detector:
    return predict.load_detector(args.checkpoint, weights=args.weights, arch=args.arch, head=args.head, tree=args.tree,
                                 names=args.names, anchors=args.anchors, width=args.width, input_size=args.size,
                                 device=device_of(args.device))


def add_detect_command(commands) -> None:
    """`yolo9000 detect`: annotated images and one JSON of boxes."""
    parser = commands.add_parser(
        "detect", help="detect objects in images, folders or globs; write annotated images and a JSON of boxes",
        description="Letterbox each image, run the network, label each box top-down in the WordTree (or by a label "
        "set), draw the boxes and write one JSON: box, label, wnid, path to the root, probability. Unreadable "
        "files are named and skipped.",
    )
    add_network_arguments(parser)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders (searched recursively) or globs")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (OUT/<image>, OUT/detections.json), or an image name for one input")
    parser.add_argument("--json", metavar="FILE", help="where to write the JSON (default: in or beside OUT)")
    parser.add_argument("--thresh", type=float, default=0.5, help="score threshold (darknet's test -thresh; default .5)")
    parser.add_argument("--hier-thresh", type=float, default=0.5, help="top-down descent threshold (default .5)")
    parser.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default .45)")
    parser.add_argument("--max-detections", type=int, default=100, help="boxes kept per image (default 100)")
    parser.add_argument("--label-set", metavar="coco|voc|FILE",
                        help="score only these classes (like darknet's coco9k.map): coco, voc, a name<TAB>wnid / wnid "
                        "file, or a darknet .map of node indices")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--draw-min-side", type=int, default=0, metavar="PIXELS",
                        help="enlarge annotated pictures whose short side is smaller, so small images' tags stay "
                        "readable (the JSON keeps the input's pixels; default 0: as they are)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_detect)


def run_detect(args: argparse.Namespace) -> None:
    detector = detector_from_args(args)
    labels = predict.label_set(detector, args.label_set) if args.label_set else None
    config = PostprocessConfig(score_threshold=args.thresh, iou_threshold=args.nms, max_detections=args.max_detections,
                               hier_thresh=args.hier_thresh)
    summary = detect.detect_files(detector, args.inputs, args.output, config, labels, args.json, args.batch_size,
                                  progress=not args.no_progress, draw_min_side=args.draw_min_side)
    for path, reason in summary.skipped:
        print(f"skipped {reason}", file=sys.stderr)
    print(f"{summary.boxes} boxes in {len(summary.images)} images, {len(summary.skipped)} skipped; "
          f"boxes in {summary.json_path}")


def add_evaluate_command(commands) -> None:
    """`yolo9000 evaluate`: COCO / VOC AP, groups, hierarchical accuracy."""
    parser = commands.add_parser(
        "evaluate", help="COCO AP (pycocotools), VOC mAP, per-class and per-group AP, hierarchical top-k",
        description="Evaluate a network on validation shards (--data, with their manifest.parquet) or on a COCO "
        "instances file and its images (--gt, --images); or score an existing COCO results file of any detector "
        "(--gt, --detections). With a WordTree a box's score for a class is objectness x the class's absolute "
        "probability, so any label set in the tree can be evaluated.",
    )
    add_network_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="SHARDS", help="validation shard folder (or shard urls with --manifest)")
    data.add_argument("--manifest", metavar="FILE", help="manifest.parquet of --data (default: beside the shards)")
    data.add_argument("--gt", metavar="JSON", help="COCO instances file (with --images or --detections)")
    data.add_argument("--images", metavar="DIR", help="image folder of --gt")
    data.add_argument("--detections", metavar="JSON", help="COCO results file to score against --gt (no network)")
    parser.add_argument("--label-set", metavar="coco|voc|FILE", help="classes to evaluate (default: those of the data)")
    parser.add_argument("--score-threshold", type=float, default=0.005,
                        help="keep boxes scoring above this (darknet's validation .005; ~1e-4 for under-trained heads)")
    parser.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default .45)")
    parser.add_argument("--max-detections", type=int, default=100, help="boxes kept per image (default 100)")
    parser.add_argument("--hier-thresh", type=float, default=0.5, help="top-down descent threshold (default .5)")
    parser.add_argument("--train-manifest", action="append", default=[], metavar="FILE",
                        help="a manifest.parquet of the training run (repeat): classes with boxes there form the "
                        "group 'boxed', the others 'unboxed'")
    parser.add_argument("--groups", metavar="FILE", help="named class groups: 'group<TAB>wnid or name' lines")
    parser.add_argument("--json", metavar="OUT", help="write all results as JSON")
    parser.add_argument("--plot", metavar="PNG", help="save the per-class PR curves")
    parser.add_argument("--save-detections", metavar="JSON", help="write the network's COCO result rows")
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers for --data (default 2)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    settings = evaluate.EvaluationSettings(
        score_threshold=args.score_threshold, iou_threshold=args.nms, max_detections=args.max_detections,
        hier_thresh=args.hier_thresh, label_set=args.label_set, train_manifests=args.train_manifest,
        groups_file=args.groups, batch_size=args.batch_size, workers=args.workers, progress=True)
    if args.detections:
        if not args.gt:
            raise evaluate.EvaluationError("--detections needs --gt instances.json to score against")
        result = evaluate.evaluate_results_file(args.gt, args.detections, settings)
    elif args.data:
        result = evaluate.evaluate_shards(detector_from_args(args), args.data, settings, args.manifest)
    elif args.gt and args.images:
        result = evaluate.evaluate_coco_images(detector_from_args(args), args.gt, args.images, settings)
    else:
        raise evaluate.EvaluationError("give --data SHARDS, or --gt JSON with --images DIR, or --gt JSON with "
                                       "--detections JSON")
    print(evaluate.summary_table(result))
    if args.json:
        print(f"results written to {evaluate.write_json(result, args.json)}")
    if args.plot:
        print(f"PR curves saved to {evaluate.plot_pr_curves(result, args.plot)}")
    if args.save_detections:
        print(f"detections written to {evaluate.write_rows(result, args.save_detections)}")


def add_export_command(commands) -> None:
    """`yolo9000 export --onnx | --darknet CHECKPOINT -o FILE`."""
    parser = commands.add_parser(
        "export", help="export a checkpoint as ONNX (dynamic batch and size) or darknet .weights",
        description="Write a checkpoint's network as ONNX (input 'images' (B, 3, H, W) in [0, 1], output the raw "
        "head; batch and input size dynamic; checked against PyTorch with onnxruntime) or as darknet .weights "
        "(checked to read back equal).",
    )
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", metavar="CHECKPOINT", help="checkpoint folder to export as ONNX")
    kind.add_argument("--darknet", metavar="CHECKPOINT", help="checkpoint folder to export as darknet .weights")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx or .weights file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> None:
    if args.onnx:
        difference = export.export_onnx(args.onnx, args.output, args.opset)
        print(f"wrote {args.output}; onnxruntime equals PyTorch to {difference:.1e} (relative to the output's "
              f"largest value; tolerance {export.ONNX_TOLERANCE:.0e}) on two batch / input sizes")
    else:
        seen = export.export_darknet(args.darknet, args.output)
        print(f"wrote {args.output} (seen = {seen} images); it reads back equal")


def add_inspect_command(commands) -> None:
    """`yolo9000 inspect CHECKPOINT`."""
    parser = commands.add_parser(
        "inspect", help="print a checkpoint's step, images seen, metrics, classes, tree size and config",
        description="Print what a checkpoint folder holds besides the weights.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> None:
    info = describe_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    spec = info["model_spec"] or {}
    print(f"{info['checkpoint']}: {info['format']}")
    print(f"network     {spec.get('task')} {spec.get('arch')} head {spec.get('head')} width {spec.get('width')} "
          f"input {spec.get('input_size')}, {spec.get('num_classes')} classes, {len(spec.get('anchors') or [])} anchors")
    print(f"step        {info['step']}")
    print(f"images seen {info['images_seen']}")
    print(f"classes     {info['classes']}" + (f", WordTree of {info['tree_nodes']} nodes" if info["tree_nodes"] else ""))
    for name, value in sorted(info["metrics"].items()):
        print(f"metric      {name} = {value}")
    if info["config"]:
        print("config:\n" + "\n".join(f"  {line}" for line in info["config"].splitlines()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print a message and return 2."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as error:
        print(f"yolo9000 {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a plot that cannot be written
        print(f"yolo9000 {args.command}: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
