"""Files written whole or not at all: the one atomic writer of the project (shards, manifests, trees, plans,
weights, checkpoints), used by `wordtree` and `yolo9000` alike, so it imports neither (standard library only).

Each file goes to a hidden temporary name beside its target (`.<name>.<pid>.tmp`), is flushed to disk, and is
then renamed over the target: a reader, or a crash, sees the old file or the new one, never half of one.
Several files written together are all written to temporary names first and renamed only when every one
is complete, so a failure replaces none of them. Errors name the target, never a temporary file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

TEMPORARY_GLOB = ".*.tmp"  # what a writer killed mid-write leaves behind (see remove_temporaries)

Writer = Callable[[Path], object]  # called with the temporary path; writes the whole file there


def temporary_path(path: str | Path) -> Path:
    """The hidden temporary name a file is written to before it is renamed to `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_file(path: str | Path, write: Writer) -> Path:
    """Call `write(temporary)`, flush it to disk, then rename it over `path`; returns `path`."""
    return write_files({path: write})[0]


def write_files(writes: Mapping[str | Path, Writer]) -> list[Path]:
    """Write every file to its temporary name, then rename them all in the given order; a failure
    before the renames (a write that raises, a target that is a folder) replaces none of them."""
    targets = [Path(path) for path in writes]
    for target in targets:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, where a file is to be written", str(target))
    written: dict[Path, Path] = {}
    try:
        for target, write in zip(targets, writes.values()):
            written[target] = _written_temporary(target, write)
        for target, temporary in written.items():
            _named(target, os.replace, temporary, target)
    finally:
        for temporary in written.values():
            temporary.unlink(missing_ok=True)
    return targets


def write_folder(target: str | Path, fill: Callable[[Path], object]) -> Path:
    """Fill a temporary folder beside `target`, then rename it to `target`; when another process
    renamed its own copy there first, that one is kept. Returns `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        fill(staging)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files a killed writer left in `folder`; returns how many."""
    stale = [p for p in Path(folder).glob(TEMPORARY_GLOB) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _written_temporary(target: Path, write: Writer) -> Path:
    """The temporary file of `target`, written by `write` and flushed to disk."""
    temporary = temporary_path(target)
    try:
        _named(target, write, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _named(target: Path, call: Callable, *args) -> object:
    """`call(*args)`, with an OSError about a temporary file re-raised about `target`."""
    try:
        return call(*args)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(target)) from error
