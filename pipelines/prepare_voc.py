"""Prepare a PASCAL VOC split as WebDataset shards + manifest.parquet + summary.json.

    python pipelines/prepare_voc.py --root VOCdevkit/VOC2012 --split trainval -o shards/voc2012/
"""

import argparse
import sys

from wordtree.labelsets import LabelSetError, label_map, read_label_map
from wordtree.wordnet import WordNetNotFound, unknown_wnids
from yolo9000.data.prepare.command import (BAD_INPUT_HELP, add_source_argument, add_writer_arguments,
                                           run_prepare)
from yolo9000.data.prepare.voc import read_voc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="VOC pixel coordinates are 1-based; they become 0-based by subtracting 1 from xmin, ymin, xmax "
               "and ymax, as darknet's voc_label.py does. 'difficult' objects are kept with difficult=true "
               "(training drops them). An annotation with no <object> is kept as a negative image and counted "
               "as no_boxes. Class names map to WordNet ids through the label map; an unknown name stops the run "
               "before anything is written. " + BAD_INPUT_HELP)
    parser.add_argument("--root", required=True,
                        help="VOC folder holding Annotations/, JPEGImages/ and ImageSets/Main/, e.g. VOC2012/")
    parser.add_argument("--split", default="trainval",
                        help="image list ImageSets/Main/<split>.txt (default: %(default)s)")
    parser.add_argument("--label-map", default=None,
                        help="file of 'class name<TAB>wnid' lines (default: the shipped VOC map)")
    add_source_argument(parser, default="voc")
    add_writer_arguments(parser, default_prefix="voc")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def read_items():
        name_to_wnid = read_label_map(args.label_map) if args.label_map else label_map("voc")
        return read_voc(args.root, name_to_wnid, split=args.split, source=args.source)

    return run_prepare("prepare_voc", args, read_items, user_errors=(LabelSetError, WordNetNotFound),
                       unknown_wnids=unknown_wnids)


if __name__ == "__main__":
    sys.exit(main())
