"""Prepare a COCO instances split as WebDataset shards + manifest.parquet + summary.json.

    python pipelines/prepare_coco.py --ann instances_train2017.json --images train2017/ -o shards/coco/
"""

import argparse
import sys

from wordtree.labelsets import LabelSetError, label_map, read_label_map
from wordtree.wordnet import WordNetNotFound, unknown_wnids
from yolo9000.data.prepare.coco import read_coco
from yolo9000.data.prepare.command import (BAD_INPUT_HELP, add_source_argument, add_writer_arguments,
                                           run_prepare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Boxes: COCO [x, y, w, h] become x0 y0 x1 y1 pixels; crowd annotations are kept with crowd=true "
               "(training drops them). Images with no annotation are kept as detection samples with no boxes "
               "(use --drop-empty to leave them out) and counted as no_boxes. Category names map to WordNet ids "
               "through the label map; an unknown name stops the run before anything is written. " + BAD_INPUT_HELP)
    parser.add_argument("--ann", required=True, help="COCO instances json, e.g. annotations/instances_train2017.json")
    parser.add_argument("--images", required=True, help="folder of the split's images, e.g. train2017/")
    parser.add_argument("--label-map", default=None,
                        help="file of 'category name<TAB>wnid' lines (default: the shipped COCO map)")
    add_source_argument(parser, default="coco")
    parser.add_argument("--drop-empty", action="store_true", help="leave out images that have no annotation")
    add_writer_arguments(parser, default_prefix="coco")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def read_items():
        name_to_wnid = read_label_map(args.label_map) if args.label_map else label_map("coco")
        return read_coco(args.ann, args.images, name_to_wnid, source=args.source, keep_empty=not args.drop_empty)

    return run_prepare("prepare_coco", args, read_items, user_errors=(LabelSetError, WordNetNotFound),
                       unknown_wnids=unknown_wnids)


if __name__ == "__main__":
    sys.exit(main())
