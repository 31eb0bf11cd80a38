"""The command line every prepare script shares: the writer's options, and the body read → check →
write → summary line, which turns bad input into one message and exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from yolo9000.arguments import integer, plain_name, size_in_bytes
from yolo9000.data.prepare.items import PrepareError, SourceItem
from yolo9000.data.shardwriter.plan import remove_run_files
from yolo9000.data.shardwriter.summary import summary_line
from yolo9000.data.shardwriter.write import WriterConfig, write_shards

BAD_INPUT_HELP = (
    "Bad input is either refused or skipped and counted. Refused, before anything is written (exit status 2, "
    "one message naming the file and entry): a malformed annotation, an image or category listed twice, a label "
    "that is not a WordNet 3.0 noun synset, a file name outside the dataset folder, an input with no images, and "
    "an --out folder that holds another run (unless --overwrite). Skipped or repaired and counted in "
    "summary.json (reasons, counts and examples; totals in the last line printed): corrupt or unreadable images "
    "(skipped), non-JPEG or unverifiable JPEG images (re-encoded), boxes outside the image (clipped) or empty "
    "after clipping (dropped), images that differ from their annotated size, and detection images with no box "
    "(kept as negatives, noticed). A run in which no image at all could be read ends with exit status 2."
)


def add_writer_arguments(parser: argparse.ArgumentParser, default_prefix: str) -> None:
    """The options every prepare script shares."""
    parser.add_argument("--out", "-o", type=Path, required=True,
                        help="output folder for <prefix>-NNNNNN.tar shards, manifest.parquet and summary.json; "
                             "running again with the same input and options resumes, keeping finished shards "
                             "(_parts/ holds the per-shard manifest parts and the shard plan for that); a folder "
                             "holding another run is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="when --out holds another run, delete its shards (*.tar), manifest, summary and "
                             "_parts/ first (other files are left alone)")
    parser.add_argument("--prefix", type=plain_name, default=default_prefix,
                        help="shard file name prefix: letters, digits, '_' and '-' (default: %(default)s)")
    parser.add_argument("--shard-size", type=size_in_bytes, default=size_in_bytes("100MB"),
                        help="target bytes per shard, planned from the source file sizes; bytes or e.g. "
                             "100MB, 1GB, 512MiB (default: 100MB)")
    parser.add_argument("--workers", type=integer(minimum=1), default=2,
                        help="processes writing shards in parallel; 1 writes in this process (default: 2)")
    parser.add_argument("--max-side", type=integer(minimum=1), default=None,
                        help="downsize images whose longer side exceeds this many pixels (re-encoded as JPEG, "
                             "boxes scaled); default: keep every image as it is")
    parser.add_argument("--jpeg-quality", type=integer(1, 100), default=95,
                        help="JPEG quality, 1-100, of re-encoded or downsized images (default: 95)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_source_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """`--source`: the dataset's name in records and sample keys."""
    parser.add_argument("--source", type=plain_name, default=default,
                        help="source name in records and keys: letters, digits, '_' and '-' (default: %(default)s)")


def writer_config_from_args(args: argparse.Namespace) -> WriterConfig:
    """The WriterConfig of parsed `add_writer_arguments` options."""
    return WriterConfig(out_dir=args.out, prefix=args.prefix, shard_size=args.shard_size, workers=args.workers,
                        max_side=args.max_side, jpeg_quality=args.jpeg_quality, show_progress=not args.no_progress,
                        overwrite=args.overwrite)


def check_items(items: list[SourceItem], unknown_wnids: Callable[[Iterable[str]], list[str]] | None) -> None:
    """Refuse an input with no images, or with labels that `unknown_wnids` (WordNet) does not know."""
    if not items:
        raise PrepareError("the input lists no images; check the annotation file, --root or --split")
    if unknown_wnids is None:
        return
    used: dict[str, str] = {}  # wnid -> the first file that uses it
    for item in items:
        for wnid in [*item.labels, *([item.image_label] if item.image_label else [])]:
            used.setdefault(wnid, item.file)
    unknown = unknown_wnids(used)
    if unknown:
        named = ", ".join(f"{w} (e.g. {used[w]})" for w in unknown[:10])
        raise PrepareError(f"{len(unknown)} labels are no noun synset of WordNet 3.0: {named}; fix the label map, "
                           "folder or box file that gives them")


def run_prepare(program: str, args: argparse.Namespace, read_items: Callable[[], list[SourceItem]],
                user_errors: tuple[type[Exception], ...] = (),
                unknown_wnids: Callable[[Iterable[str]], list[str]] | None = None) -> int:
    """Body of every prepare script: check the options, read the items, check their labels against
    `unknown_wnids`, write the shards, print the summary line; returns the exit status.

    Bad input (a PrepareError, one of `user_errors`, a file that cannot be read or written) prints
    `program: error: ...` and returns 2, found before anything is lost; so does a run in which not one
    image could be read (its empty shards are removed, so a corrected run starts afresh).
    """
    try:
        config = writer_config_from_args(args)
        items = read_items()
        check_items(items, unknown_wnids)
        summary = write_shards(items, config)
    except (PrepareError, *user_errors) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{program}: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(summary_line(summary))
    if summary["samples"] == 0:  # every image skipped: a wrong --images or --root, most likely
        examples = [e for reason in summary["skipped"].values() for e in reason["examples"]]
        remove_run_files(config.out_dir)
        print(f"{program}: error: none of the {summary['items']} images could be read (e.g. {examples[0]}); check "
              "the image folder (the empty shards were removed)", file=sys.stderr)
        return 2
    return 0
