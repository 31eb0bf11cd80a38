"""Source items → records → WebDataset `.tar` shards, `manifest.parquet` and `summary.json`.

The prepare modules (coco, voc, imagenet) list `SourceItem`s: where an image lives and its
annotations in the pixels of the original image. `write_shards` plans the shards up front from
the sorted items and their estimated sizes, then writes each planned shard independently in a
process pool, so shard contents depend only on the input. Every file is written under a
temporary name (`*.partial`) and renamed when complete: an interrupted run, started again with
the same input and options, keeps the finished shards and writes only the missing ones.
Bad input is skipped or repaired and counted in `summary.json`, never silently.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import re
import sys
import tarfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from yolo9000.data.schema import MANIFEST_SCHEMA, SampleRecord, record_to_wds, validate_record

PARTS_DIR = "_parts"
JPEG_FORMATS = {"JPEG", "MPO"}  # PIL names a JPEG with a multi-picture (camera) extension "MPO"
MAX_EXAMPLES = 10


class PrepareError(ValueError):
    """Input that cannot be prepared; the message names the file and item and how to fix it."""


@dataclass
class SourceItem:
    """One image of a raw dataset, with annotations in the pixels of the original image."""

    key: str
    source: str
    file: str  # path relative to the dataset root, as written in the record
    path: str  # where to read the bytes: an image file, or a tar file when `member` is set
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (K, 4) x0 y0 x1 y1
    labels: list[str] = field(default_factory=list)
    crowd: list[bool] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)
    image_label: str | None = None
    member: tuple[int, int] | None = None  # (offset, size) of the image inside the tar at `path`
    size_estimate: int = 0
    annotated_size: tuple[int, int] | None = None  # (width, height) the annotation file states, if any

    def describe(self) -> dict:
        """What identifies the item in the shard plan's fingerprint."""
        return {
            "key": self.key, "file": self.file, "size": self.size_estimate,
            "boxes": np.asarray(self.boxes, np.float32).round(3).tolist(), "labels": self.labels,
            "crowd": self.crowd, "difficult": self.difficult, "image_label": self.image_label,
        }


@dataclass
class WriterConfig:
    """Where and how shards are written."""

    out_dir: Path
    prefix: str = "shard"
    shard_size: int = 100_000_000  # target bytes per shard
    workers: int = 2
    max_side: int | None = None  # downsize images whose longer side is larger
    jpeg_quality: int = 95  # for re-encoded and resized images
    show_progress: bool = True


# ---------------------------------------------------------------- command-line helpers

SIZE_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Bytes from `123456`, `100MB`, `1.5GB`, `512KiB` (decimal units; KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"cannot read size {text!r}: use bytes or e.g. 100MB, 1.5GB, 512KiB")
    size = int(float(match.group(1)) * SIZE_UNITS[unit])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def add_writer_arguments(parser: argparse.ArgumentParser, default_prefix: str) -> None:
    """The options every prepare script shares."""
    parser.add_argument("--out", "-o", type=Path, required=True,
                        help="output folder for <prefix>-NNNNNN.tar shards, manifest.parquet and summary.json; "
                             "running again with the same input and options resumes, keeping finished shards "
                             "(_parts/ holds the per-shard manifest parts and the shard plan for that)")
    parser.add_argument("--prefix", default=default_prefix, help="shard file name prefix (default: %(default)s)")
    parser.add_argument("--shard-size", type=parse_size, default=parse_size("100MB"),
                        help="target bytes per shard, planned from the source file sizes; bytes or e.g. "
                             "100MB, 1GB, 512MiB (default: 100MB)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes writing shards in parallel; 1 writes in this process (default: 2)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downsize images whose longer side exceeds this many pixels (re-encoded as JPEG, "
                             "boxes scaled); default: keep every image as it is")
    parser.add_argument("--jpeg-quality", type=int, default=95,
                        help="JPEG quality of re-encoded or downsized images (default: 95)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def writer_config_from_args(args: argparse.Namespace) -> WriterConfig:
    """The WriterConfig of parsed `add_writer_arguments` options."""
    if args.workers < 1:
        raise PrepareError(f"--workers must be at least 1, got {args.workers}")
    if args.max_side is not None and args.max_side < 1:
        raise PrepareError(f"--max-side must be a positive number of pixels, got {args.max_side}")
    return WriterConfig(out_dir=args.out, prefix=args.prefix, shard_size=args.shard_size, workers=args.workers,
                        max_side=args.max_side, jpeg_quality=args.jpeg_quality, show_progress=not args.no_progress)


def file_size(path: str | Path) -> int:
    """Size of a file in bytes, 0 when it cannot be read (the writer then skips and counts it)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def summary_line(summary: dict) -> str:
    """One line for the end of a run."""
    skipped = sum(v["count"] for v in summary["skipped"].values())
    changed = ", ".join(f"{k} {v['count']}" for k, v in sorted(summary["changed"].items())) or "none"
    noticed = ", ".join(f"{k} {v['count']}" for k, v in sorted(summary["noticed"].items())) or "none"
    return (f"{summary['samples']} samples ({summary['detection_samples']} detection, "
            f"{summary['classification_samples']} classification, {summary['boxes']} boxes) in "
            f"{summary['shards']} shards; {skipped} items skipped; changed: {changed}; noticed: {noticed} "
            "(details in summary.json)")


def run_prepare(program: str, args: argparse.Namespace, read_items: Callable[[], list[SourceItem]],
                user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Body of every prepare script: read the items, write the shards, print the summary line.

    A PrepareError or one of `user_errors` (bad input, found before anything is lost) prints
    `program: error: ...` and returns exit status 2 instead of a traceback.
    """
    try:
        summary = write_shards(read_items(), writer_config_from_args(args))
    except (PrepareError, *user_errors) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    print(summary_line(summary))
    return 0


# ---------------------------------------------------------------- items → records


def read_item_bytes(item: SourceItem) -> bytes:
    """The raw bytes of the item's image (from a file, or from a member of a tar file)."""
    with open(item.path, "rb") as f:
        if item.member is None:
            return f.read()
        offset, size = item.member
        f.seek(offset)
        return f.read(size)


def decoded_format_and_size(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(format, (width, height)) when the whole image decodes, else None.

    JPEGs decode in draft mode at 1/8 scale: the decoder still reads all the entropy-coded data,
    so truncated or broken files fail the same way, at a fraction of the cost of a full decode.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt, size = image.format, image.size
        if fmt in JPEG_FORMATS:
            image.draft(image.mode, (1, 1))
        image.load()
    except Exception:
        return None
    return fmt, size


def verifies_as_jpeg(data: bytes) -> bool:
    """Whether PIL identifies the bytes as a JPEG and its `verify()` accepts them."""
    try:
        probe = Image.open(io.BytesIO(data))
        probe.verify()
        return probe.format in JPEG_FORMATS
    except Exception:
        return False


def decode(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The decoded image, at least `size` large (a JPEG meant for a smaller size decodes at a reduced
    DCT scale first, as PIL's thumbnail does), for re-encoding or resizing."""
    image = Image.open(io.BytesIO(data))
    if image.format in JPEG_FORMATS:
        image.draft("RGB", size)
    image.load()
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of an image, converted to RGB."""
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clipped boxes (K, 4), keep mask (K,): not degenerate after clipping, changed mask (K,))."""
    clipped = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (clipped != boxes).any(axis=1)
    return clipped, keep, changed


def materialise(item: SourceItem, max_side: int | None = None, jpeg_quality: int = 95
                ) -> tuple[SampleRecord | None, list[tuple[str, int, str]]]:
    """The record of an item and the events on the way: (reason, count, file); None when skipped."""
    try:
        data = read_item_bytes(item)
    except OSError as error:
        return None, [("unreadable_image", 1, f"{item.file}: {error.strerror or error}")]
    decoded = decoded_format_and_size(data)
    if decoded is None:
        return None, [("corrupt_image", 1, item.file)]
    (fmt, (width, height)), verified_jpeg = decoded, verifies_as_jpeg(data)
    events = []
    if item.annotated_size is not None and tuple(item.annotated_size) != (width, height):
        events.append(("size_differs_from_annotation", 1,
                       f"{item.file}: annotation says {item.annotated_size[0]}x{item.annotated_size[1]}, "
                       f"image is {width}x{height}"))
    if not verified_jpeg:
        reason = "reencoded_unverifiable_jpeg" if fmt in JPEG_FORMATS else "reencoded_non_jpeg"
        events.append((reason, 1, item.file))
    boxes = np.asarray(item.boxes, np.float32).reshape(-1, 4)
    boxes, keep, changed = clip_boxes(boxes, width, height)
    if (changed & keep).any():
        events.append(("boxes_clipped", int((changed & keep).sum()), item.file))
    if (~keep).any():
        events.append(("degenerate_boxes_dropped", int((~keep).sum()), item.file))
    jpeg = data if verified_jpeg else None
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        boxes = boxes * np.array([new_size[0] / width, new_size[1] / height] * 2, np.float32)
        boxes = np.minimum(boxes, np.array([*new_size, *new_size], np.float32))
        width, height = new_size
        jpeg = None
        events.append(("resized", 1, item.file))
    if jpeg is None:
        try:
            jpeg = encode_jpeg(decode(data, (width, height)).convert("RGB").resize((width, height), Image.Resampling.BILINEAR),
                               jpeg_quality)
        except (OSError, SyntaxError, ValueError):  # decodes in draft mode only: count it as corrupt
            return None, [("corrupt_image", 1, item.file)]
    record = SampleRecord(
        key=item.key, source=item.source, file=item.file, width=width, height=height, jpeg=jpeg,
        boxes=boxes[keep], labels=np.asarray(item.labels, dtype=object)[keep].tolist(),
        crowd=np.asarray(item.crowd, dtype=bool)[keep].tolist(),
        difficult=np.asarray(item.difficult, dtype=bool)[keep].tolist(), image_label=item.image_label,
    )
    validate_record(record)
    return record, events


# ---------------------------------------------------------------- planning


def plan_shards(sizes: list[int], shard_size: int) -> list[list[int]]:
    """Consecutive item indices per shard: a shard closes before the item that would overflow it."""
    plan, current, filled = [], [], 0
    for index, size in enumerate(sizes):
        if current and filled + size > shard_size:
            plan.append(current)
            current, filled = [], 0
        current.append(index)
        filled += size
    if current:
        plan.append(current)
    return plan


def plan_fingerprint(items: list[SourceItem], plan: list[list[int]], config: WriterConfig) -> str:
    """A hash of everything that decides shard contents, so a resume never mixes two plans."""
    digest = hashlib.sha256()
    digest.update(json.dumps([config.prefix, config.max_side, config.jpeg_quality, plan]).encode())
    for item in items:
        digest.update(json.dumps(item.describe(), sort_keys=True).encode())
    return digest.hexdigest()


def shard_name(prefix: str, index: int) -> str:
    """`<prefix>-000000.tar`."""
    return f"{prefix}-{index:06d}.tar"


def check_unique_keys(items: list[SourceItem]) -> None:
    """Refuse duplicate or dotted keys, naming them."""
    counts = Counter(item.key for item in items)
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    if duplicates:
        raise PrepareError(f"duplicate sample keys {duplicates[:10]} ({len(duplicates)} in all): every image "
                           "needs its own key; check for images listed twice")
    dotted = sorted(key for key in counts if "." in key)
    if dotted:
        raise PrepareError(f"sample keys {dotted[:10]} hold dots, which WebDataset reads as extensions")


# ---------------------------------------------------------------- writing one shard


def tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    """A tar member with fixed metadata, so the same records give the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o444, 0, 0
    return info, io.BytesIO(data)


def write_tar(records: list[SampleRecord], path: Path) -> None:
    """Write records as one WebDataset tar at `path`."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for record in records:
            sample = record_to_wds(record)
            for extension in ("jpg", "json"):
                tar.addfile(*tar_member(f"{record.key}.{extension}", sample[extension]))


def write_atomically(path: Path, write) -> None:
    """Call `write(temporary_path)`, then rename the temporary file to `path`."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def write_planned_shard(task: tuple[int, list[SourceItem], WriterConfig]) -> dict:
    """Write one planned shard and its manifest part; returns the shard's part summary."""
    index, items, config = task
    out_dir = Path(config.out_dir)
    name = shard_name(config.prefix, index)
    records, events = [], []
    for item in items:
        record, item_events = materialise(item, config.max_side, config.jpeg_quality)
        events.extend(item_events)
        if record is not None:
            records.append(record)
    table = pa.Table.from_pylist([r.manifest_row(name) for r in records], schema=MANIFEST_SCHEMA)
    part = {"shard": name, "samples": len(records), "items": len(items), "events": events}
    parts = out_dir / PARTS_DIR
    write_atomically(parts / f"{name}.parquet", lambda p: pq.write_table(table, p))
    write_atomically(parts / f"{name}.json", lambda p: p.write_text(json.dumps(part)))
    write_atomically(out_dir / name, lambda p: write_tar(records, p))
    return part


def shard_is_finished(out_dir: Path, name: str) -> bool:
    """A shard is finished when its tar and both manifest parts exist (the tar is renamed last)."""
    parts = out_dir / PARTS_DIR
    return all(p.exists() for p in (out_dir / name, parts / f"{name}.parquet", parts / f"{name}.json"))


# ---------------------------------------------------------------- the whole run


def start_output(config: WriterConfig, fingerprint: str, shards: int) -> None:
    """Create the output folder, remove stale `.partial` files, refuse a folder of another plan."""
    parts = Path(config.out_dir) / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    plan_file = parts / f"{config.prefix}-plan.json"
    if plan_file.exists():
        previous = json.loads(plan_file.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise PrepareError(f"{config.out_dir} holds shards of a different input or options "
                               f"({plan_file}); use a new --out folder or delete that one to start over")
    for stale in list(Path(config.out_dir).glob("*.partial")) + list(parts.glob("*.partial")):
        stale.unlink()
    plan_file.write_text(json.dumps({"fingerprint": fingerprint, "shards": shards}))


def pool_context() -> multiprocessing.context.BaseContext:
    """fork where the platform has it: workers start at once and a calling script needs no
    `if __name__ == "__main__"` guard; spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_tasks(tasks: list, config: WriterConfig, total_items: int, finished_items: int) -> None:
    """Write the planned shards, in a process pool when workers > 1, with a progress bar."""
    bar = tqdm(total=total_items, initial=finished_items, unit="img", desc=f"writing {config.prefix} shards",
               disable=not config.show_progress)
    if config.workers == 1 or len(tasks) <= 1:
        for task in tasks:
            bar.update(write_planned_shard(task)["items"])
    else:  # a worker that dies (e.g. killed for memory) raises BrokenProcessPool here instead of hanging
        with ProcessPoolExecutor(min(config.workers, len(tasks)), mp_context=pool_context()) as pool:
            for done in as_completed([pool.submit(write_planned_shard, task) for task in tasks]):
                bar.update(done.result()["items"])
    bar.close()


def value_counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """{value: count} of a string column."""
    counts = pc.value_counts(values).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def summarise(table: pa.Table, parts: list[dict]) -> dict:
    """`summary.json`: samples, shards, counts per label; skipped, changed and noticed items with examples."""
    skip_reasons, notice_reasons = {"corrupt_image", "unreadable_image"}, {"size_differs_from_annotation"}
    skipped, changed, noticed = {}, {}, {}
    for part in parts:
        for reason, count, example in part["events"]:
            group = skipped if reason in skip_reasons else noticed if reason in notice_reasons else changed
            entry = group.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += count
            if len(entry["examples"]) < MAX_EXAMPLES:
                entry["examples"].append(example)
    box_labels = value_counts(pc.list_flatten(table["labels"]))
    image_labels = value_counts(table["image_label"].drop_null())
    return {
        "items": sum(part["items"] for part in parts),
        "samples": table.num_rows,
        "shards": len(parts),
        "detection_samples": table.num_rows - sum(image_labels.values()),
        "classification_samples": sum(image_labels.values()),
        "boxes": sum(box_labels.values()),
        "crowd_boxes": int(pc.sum(pc.list_flatten(table["crowd"]).cast(pa.int64())).as_py() or 0),
        "difficult_boxes": int(pc.sum(pc.list_flatten(table["difficult"]).cast(pa.int64())).as_py() or 0),
        "labels": {w: {"boxes": box_labels.get(w, 0), "images": image_labels.get(w, 0)}
                   for w in sorted(set(box_labels) | set(image_labels))},
        "skipped": skipped,
        "changed": changed,
        "noticed": noticed,
    }


def write_shards(items: list[SourceItem], config: WriterConfig) -> dict:
    """Write items as shards + manifest.parquet + summary.json under config.out_dir; returns the summary."""
    items = sorted(items, key=lambda item: item.key)
    check_unique_keys(items)
    out_dir = Path(config.out_dir)
    plan = plan_shards([item.size_estimate for item in items], config.shard_size)
    start_output(config, plan_fingerprint(items, plan, config), len(plan))
    names = [shard_name(config.prefix, i) for i in range(len(plan))]
    todo = [i for i, name in enumerate(names) if not shard_is_finished(out_dir, name)]
    tasks = [(i, [items[j] for j in plan[i]], config) for i in todo]
    finished_items = len(items) - sum(len(plan[i]) for i in todo)
    run_tasks(tasks, config, len(items), finished_items)
    parts = [json.loads((out_dir / PARTS_DIR / f"{name}.json").read_text()) for name in names]
    tables = [pq.read_table(out_dir / PARTS_DIR / f"{name}.parquet", schema=MANIFEST_SCHEMA) for name in names]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    write_atomically(out_dir / "manifest.parquet", lambda p: pq.write_table(table, p))
    summary = summarise(table, parts)
    write_atomically(out_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    return summary
