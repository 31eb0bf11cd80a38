"""`yolo9000` console entry: argument parsing only; the work is done by the library modules."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from yolo9000 import anchors as dimension_clusters
from yolo9000.arguments import integer
from yolo9000.data.schema import SchemaError

USER_ERRORS = (dimension_clusters.AnchorError, SchemaError)


def build_parser() -> argparse.ArgumentParser:
    """The `yolo9000` parser with one subparser per command."""
    parser = argparse.ArgumentParser(prog="yolo9000", description="YOLOv2 / YOLO9000 hierarchical detection tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_anchors_command(commands)
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
