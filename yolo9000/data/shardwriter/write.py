"""Items → WebDataset `.tar` shards, `manifest.parquet` and `summary.json` in one output folder.

`write_shards` plans the shards (plan.py), then writes each planned shard independently, in a
process pool when asked, so shard contents depend only on the input. Every file goes through the
project's one atomic writer (`atomicio`): a shard, its two manifest parts, and at the end the manifest
with the summary, each group renamed into place only when all its files are complete. An interrupted
run, started again with the same input and options, keeps the finished shards and writes only the
missing ones; pool workers end when the process that started them does, even when it is killed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from tqdm import tqdm

from atomicio import write_files
from yolo9000.data.prepare.items import PrepareError, SourceItem
from yolo9000.data.schema import MANIFEST_SCHEMA, NAME_PATTERN, SampleRecord, read_manifest, record_to_wds
from yolo9000.data.shardwriter.encode import materialise
from yolo9000.data.shardwriter.plan import (PARTS_DIR, check_unique_keys, claim_output, plan_fingerprint,
                                            plan_shards, shard_name, shard_order)
from yolo9000.data.shardwriter.summary import summarise

PARENT_POLL_S = 0.5  # how often a pool worker checks that the process that started it is still there


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
    overwrite: bool = False  # replace another run's files in out_dir instead of refusing

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if not NAME_PATTERN.fullmatch(self.prefix):
            raise PrepareError(f"prefix {self.prefix!r} is not a plain name (letters, digits, '_' and '-')")
        if self.shard_size < 1 or self.workers < 1 or (self.max_side is not None and self.max_side < 1):
            raise PrepareError(f"shard_size ({self.shard_size}), workers ({self.workers}) and max_side "
                               f"({self.max_side}) must be at least 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise PrepareError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")


def write_tar(records: list[SampleRecord], path: Path) -> None:
    """Write records as one WebDataset tar at `path`, with fixed member metadata: the same records give
    the same bytes."""
    with open(path, "wb") as stream, wds.TarWriter(stream, user="", group="", mode=0o444, mtime=0,
                                                    encoder=False) as tar:
        for record in records:
            tar.write(record_to_wds(record))


def write_planned_shard(task: tuple[int, list[SourceItem], WriterConfig]) -> dict:
    """Write one planned shard and its manifest parts (the tar renamed last); returns the part summary."""
    index, items, config = task
    name = shard_name(config.prefix, index)
    records, events = [], []
    for item in items:
        record, item_events = materialise(item, config.max_side, config.jpeg_quality)
        events.extend(item_events)
        if record is not None:
            records.append(record)
    table = pa.Table.from_pylist([r.manifest_row(name) for r in records], schema=MANIFEST_SCHEMA)
    part = {"shard": name, "samples": len(records), "items": len(items), "events": events}
    parts = config.out_dir / PARTS_DIR
    write_files({
        parts / f"{name}.parquet": lambda p: pq.write_table(table, p),
        parts / f"{name}.json": lambda p: p.write_text(json.dumps(part)),
        config.out_dir / name: lambda p: write_tar(records, p),
    })
    return part


def shard_is_finished(out_dir: Path, name: str) -> bool:
    """A shard is finished when its tar and both manifest parts exist (the tar is renamed last)."""
    parts = out_dir / PARTS_DIR
    return all(p.exists() for p in (out_dir / name, parts / f"{name}.parquet", parts / f"{name}.json"))


def pool_context() -> multiprocessing.context.BaseContext:
    """fork where the platform has it: workers start at once and a calling script needs no
    `if __name__ == "__main__"` guard; spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def end_with_parent(parent: int) -> None:
    """Pool worker initializer: a thread ends this worker once `parent` is gone (killed, say, with SIGKILL,
    which its pool never hears of), instead of leaving it writing and then waiting forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes that end when this process does, even when it is killed."""
    return ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=end_with_parent,
                               initargs=(os.getpid(),))


def run_tasks(tasks: list, config: WriterConfig, total_items: int, finished_items: int) -> None:
    """Write the planned shards, in a process pool when workers > 1, with a progress bar."""
    bar = tqdm(total=total_items, initial=finished_items, unit="img", desc=f"writing {config.prefix} shards",
               disable=not config.show_progress)
    if config.workers == 1 or len(tasks) <= 1:
        for task in tasks:
            bar.update(write_planned_shard(task)["items"])
    else:  # a worker that dies (e.g. killed for memory) raises BrokenProcessPool here instead of hanging
        with process_pool(min(config.workers, len(tasks))) as pool:
            for done in as_completed([pool.submit(write_planned_shard, task) for task in tasks]):
                bar.update(done.result()["items"])
    bar.close()


def write_shards(items: list[SourceItem], config: WriterConfig) -> dict:
    """Write items as shards + manifest.parquet + summary.json under config.out_dir; returns the summary."""
    items = shard_order(items)
    check_unique_keys(items)
    out_dir = config.out_dir
    plan = plan_shards([item.size_estimate for item in items], config.shard_size)
    names = [shard_name(config.prefix, i) for i in range(len(plan))]
    fingerprint = plan_fingerprint(items, plan, [config.prefix, config.max_side, config.jpeg_quality])
    claim_output(out_dir, fingerprint, names, config.overwrite)
    todo = [i for i, name in enumerate(names) if not shard_is_finished(out_dir, name)]
    tasks = [(i, [items[j] for j in plan[i]], config) for i in todo]
    run_tasks(tasks, config, len(items), len(items) - sum(len(plan[i]) for i in todo))
    parts = [json.loads((out_dir / PARTS_DIR / f"{name}.json").read_text()) for name in names]
    tables = [read_manifest(out_dir / PARTS_DIR / f"{name}.parquet", MANIFEST_SCHEMA.names) for name in names]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    summary = summarise(table, parts)
    write_files({
        out_dir / "manifest.parquet": lambda p: pq.write_table(table, p),
        out_dir / "summary.json": lambda p: p.write_text(json.dumps(summary, indent=1)),
    })
    return summary
