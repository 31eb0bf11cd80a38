"""Prepare ImageNet (class folders or one tar per synset) as WebDataset shards + manifest + summary.

    python pipelines/prepare_imagenet.py --root ILSVRC/Data/CLS-LOC/train -o shards/imagenet/
    python pipelines/prepare_imagenet.py --root fall11_whole/ --synsets imagenet21k -o shards/in21k/
"""

import argparse
import sys

from wordtree.labelsets import LabelSetError, synset_set
from wordtree.wordnet import WordNetNotFound, unknown_wnids
from yolo9000.data.prepare.command import (BAD_INPUT_HELP, add_source_argument, add_writer_arguments,
                                           run_prepare)
from yolo9000.data.prepare.imagenet import read_imagenet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every image becomes a classification sample labelled with its folder's (or tar's) wnid, unless "
               "--boxes holds a box file for it: then it is a detection sample with those boxes and wnids. "
               "A folder, tar or box name that is not a WordNet 3.0 noun synset (or not in --synsets), an empty "
               "class folder or tar, and anything else in --root stop the run before anything is written. "
               + BAD_INPUT_HELP)
    parser.add_argument("--root", required=True,
                        help="ImageNet train folder of <wnid>/ class folders, or a folder of <wnid>.tar files "
                             "(ImageNet-21k); both may be mixed")
    parser.add_argument("--boxes", default=None,
                        help="folder of ILSVRC / ImageNet-DET bounding-box XML files (<name> holds the wnid), "
                             "matched to images by file stem, searched recursively; coordinates used as given; a "
                             "box file without <object> leaves its image a classification sample")
    parser.add_argument("--synsets", default=None,
                        help="allowed wnids: a shipped set (imagenet1k, imagenet21k, imagenet_det200) or a file "
                             "of wnids; default: any noun synset of WordNet 3.0")
    add_source_argument(parser, default="imagenet")
    add_writer_arguments(parser, default_prefix="imagenet")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def read_items():
        allowed = set(synset_set(args.synsets)) if args.synsets else None
        return read_imagenet(args.root, boxes_dir=args.boxes, source=args.source, allowed_wnids=allowed)

    return run_prepare("prepare_imagenet", args, read_items, user_errors=(LabelSetError, WordNetNotFound),
                       unknown_wnids=unknown_wnids)


if __name__ == "__main__":
    sys.exit(main())
