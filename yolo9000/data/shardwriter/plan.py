"""The shard plan: which items go into which shard, decided up front from the items in `shard_order` and their
estimated sizes, so shard contents depend only on the input; and the output folder it is written to.

An output folder holds one run: its shards, `manifest.parquet`, `summary.json`, and `_parts/` (the plan
file, `plan.json`, with a fingerprint of everything that decides shard contents, and one manifest part
per finished shard). The same input and options resume there; anything else is refused unless the user
asks to overwrite, and then every file of the previous run is removed first, so nothing stale is left.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from atomicio import remove_temporaries, write_file
from yolo9000.data.prepare.items import PrepareError, SourceItem

PARTS_DIR = "_parts"
PLAN_FILE = "plan.json"
RUN_FILES = ("manifest.parquet", "summary.json")  # besides the *.tar shards and _parts/
MAX_NAMED = 5


def shard_order(items: list[SourceItem]) -> list[SourceItem]:
    """Items in a hashed order of their keys, the same for the same items whatever order they came in:
    datasets listed class by class (ImageNet folders) would otherwise give shards of one class each, and a
    reader's shuffle buffer, a few shards wide, batches of one or two classes."""
    return sorted(items, key=lambda item: hashlib.blake2b(item.key.encode(), digest_size=8).digest())


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


def plan_fingerprint(items: list[SourceItem], plan: list[list[int]], options: list) -> str:
    """A hash of everything that decides shard contents (items, plan, options), so a resume never mixes two plans."""
    digest = hashlib.sha256()
    digest.update(json.dumps([*options, plan]).encode())
    for item in items:
        digest.update(json.dumps(item.describe(), sort_keys=True).encode())
    return digest.hexdigest()


def shard_name(prefix: str, index: int) -> str:
    """`<prefix>-000000.tar`."""
    return f"{prefix}-{index:06d}.tar"


def check_unique_keys(items: list[SourceItem]) -> None:
    """Refuse duplicate or dotted keys, naming the files that share a key."""
    files: dict[str, list[str]] = {}
    for item in items:
        files.setdefault(item.key, []).append(item.file)
    shared = {key: names for key, names in files.items() if len(names) > 1}
    if shared:
        examples = "; ".join(f"{key}: {', '.join(names)}" for key, names in sorted(shared.items())[:MAX_NAMED])
        raise PrepareError(f"{len(shared)} sample keys are shared by several images ({examples}): every image "
                           "needs its own key; check for images listed twice or file names that differ only "
                           "in their folder")
    dotted = sorted(key for key in files if "." in key)
    if dotted:
        raise PrepareError(f"sample keys {dotted[:10]} hold dots, which WebDataset reads as extensions")


def claim_output(out_dir: Path, fingerprint: str, names: list[str], overwrite: bool) -> None:
    """Make `out_dir` the folder of this run: create it, or resume the same plan there, or clear another
    run's files when `overwrite`; refuse another run's files otherwise. Then record the plan."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PrepareError(f"--out {out_dir} is a file; give a folder for the shards")
    parts = out_dir / PARTS_DIR
    others = other_runs_files(out_dir, fingerprint, names)
    if others and not overwrite:
        recorded = recorded_fingerprint(out_dir)
        what = "files of another run" if recorded in (None, fingerprint) else "a run of a different input or options"
        listed = ", ".join(p.name for p in others[:MAX_NAMED]) + (
            f" and {len(others) - MAX_NAMED} more" if len(others) > MAX_NAMED else "")
        raise PrepareError(f"{out_dir} holds {what} ({listed}); nothing was changed. Choose another --out "
                           "folder, or pass --overwrite to replace that run (its shards, manifest, summary and "
                           "_parts/ are deleted first)")
    if overwrite:
        remove_run_files(out_dir)
    parts.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out_dir)
    remove_temporaries(parts)
    write_file(parts / PLAN_FILE, lambda p: p.write_text(json.dumps({"fingerprint": fingerprint, "shards": len(names)})))


def other_runs_files(out_dir: Path, fingerprint: str, names: list[str]) -> list[Path]:
    """The files in `out_dir` that do not belong to the run of this fingerprint (shards of another plan or
    prefix, its manifest and summary), sorted; empty for a new folder or a resume of the same plan."""
    if not out_dir.is_dir():
        return []
    shards = sorted(out_dir.glob("*.tar"))
    if recorded_fingerprint(out_dir) == fingerprint:
        return [p for p in shards if p.name not in set(names)]
    parts = out_dir / PARTS_DIR
    return shards + [out_dir / f for f in RUN_FILES if (out_dir / f).exists()] + ([parts] if parts.exists() else [])


def recorded_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint in the folder's plan file; None when there is none or it cannot be read."""
    try:
        return json.loads((out_dir / PARTS_DIR / PLAN_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def remove_run_files(out_dir: Path) -> None:
    """Delete every file a previous run wrote in `out_dir`: shards, manifest, summary and `_parts/`."""
    for path in list(out_dir.glob("*.tar")) + [out_dir / f for f in RUN_FILES]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
