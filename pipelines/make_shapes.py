"""Render the embedded demo's synthetic plane figures in the real COCO and ImageNet layouts.

    python pipelines/make_shapes.py --out demo/shapes
    python pipelines/prepare_coco.py --ann demo/shapes/coco/annotations/instances_train.json \\
        --images demo/shapes/coco/train --label-map demo/shapes/labels.map --source shapes -o shards/shapes-det/
    python pipelines/prepare_imagenet.py --root demo/shapes/imagenet/train --synsets demo/shapes/labels.map \\
        --source shapes-cls -o shards/shapes-cls/
    wordtree build --synsets shapes --root plane_figure.n.01 --shape labels-only -o trees/shapes/
"""

import argparse
import sys
import time

from wordtree.labelsets import LabelSetError, label_map
from yolo9000.data.shapes import (
    CLASS_NAMES, JPEG_QUALITY, OBJECT_SIDE, OBJECTS_PER_SCENE, SETTINGS_FILE, ShapesError, ShapesSettings,
    make_shapes,
)

EPILOG = f"""\
What is written under --out:
  coco/annotations/instances_train.json, coco/train/   detection scenes; boxes named by their coarse class
                                                        (triangle, quadrilateral, star)
  imagenet/train/<wnid>/<wnid>_NNNNNN.JPEG              classification images, one fine-class figure each
  coco/annotations/instances_val.json, coco/val/        validation scenes; every object named by its fine class
  coco/annotations/instances_tune.json, coco/tune/      the same kind, its own seed: choose configs on it
  labels.map      'name<TAB>wnid' of all {len(CLASS_NAMES)} classes: prepare_coco.py --label-map reads it
  classes.json    each class's wnid, COCO category id, coarse class and role: boxed (had boxes), unboxed
                  (fine, its parent had boxes), unrelated (fine, no boxed relative below the root)
  {SETTINGS_FILE}   the settings; a second run with the same ones reuses the folder and says so, other
                  settings replace what make_shapes wrote there (a folder it did not write is refused)

Scenes hold {OBJECTS_PER_SCENE[0]}-{OBJECTS_PER_SCENE[1]} non-overlapping figures whose boxes' longer side is \
{int(OBJECT_SIDE[0] * 100)}-{int(OBJECT_SIDE[1] * 100)} % of the image side,
on gradient, blotch or flat backgrounds with noise; JPEG quality {JPEG_QUALITY}. The classes' wnids come from
wordtree/data/shapes.map. Each image has its own generator seeded by (seed, split, index): the output is
byte-identical for the same settings, whatever --workers is.
"""


def build_parser() -> argparse.ArgumentParser:
    defaults = ShapesSettings()
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", "-o", required=True,
                        help="output folder (created; an earlier make_shapes folder is reused or replaced)")
    parser.add_argument("--train-detection", type=int, default=defaults.train_detection,
                        help="detection scenes, coarse labels (default: %(default)s)")
    parser.add_argument("--train-classification", type=int, default=defaults.train_classification,
                        help="classification images, fine labels, spread evenly over the classes (default: %(default)s)")
    parser.add_argument("--val", type=int, default=defaults.val,
                        help="validation scenes, fine labels (default: %(default)s)")
    parser.add_argument("--tune", type=int, default=defaults.tune,
                        help="tuning scenes, fine labels, for choosing configs (default: %(default)s)")
    parser.add_argument("--size", type=int, default=defaults.size,
                        help="image side in pixels; images are square (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes rendering in parallel; 1 renders in this process; the output does not "
                             "depend on it (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = ShapesSettings(train_detection=args.train_detection, train_classification=args.train_classification,
                              val=args.val, tune=args.tune, size=args.size, seed=args.seed)
    started = time.perf_counter()
    try:
        result = make_shapes(args.out, settings, label_map("shapes"), workers=args.workers,
                             progress=not args.no_progress)
    except (ShapesError, LabelSetError) as error:
        print(f"make_shapes: error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in result.images.items())
    if result.reused:
        print(f"reusing {result.out}: it already holds these settings ({counts} images; {SETTINGS_FILE})")
    else:
        boxes = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in result.boxes.items())
        print(f"wrote {result.out} ({result.reason}): {counts} images; boxes: {boxes} "
              f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
