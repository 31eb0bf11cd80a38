"""One source of shards as a stream of raw samples: split by node and worker, shuffled, resampled.

Everything is read through WebDataset (`gopen` opens local paths, `http://` URLs and `pipe:`
commands; `tarfile_samples` groups tar members into samples). Splitting, shuffling and
resampling are done here with explicit rank / world size / worker ids and seeded generators,
so a test can emulate 2 nodes x 2 workers and a run repeats exactly.

Why not webdataset's own `ResampledShards` and `detshuffle`: exact resume needs each reader's sample
order to be a function of (seed, epoch, reader slot), where the slot of a resumed worker is shifted by
the resume step (loader.py). `ResampledShards` seeds itself from torch's rank and DataLoader worker id
(the unshifted ones) unless given `worker_seed`, and folds seed, epoch and worker into 31 bits
(`make_seed`: seed s with slot k + 1 equals seed s + 961 with slot k); `detshuffle` seeds with seed +
epoch alone, the same for every reader, so each rank and worker would shuffle alike. Both can be made
to repeat by passing our own per-slot seeds, but they would then be thin wrappers whose streams differ
from the ones here, so checkpoints taken before would no longer resume exactly.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import webdataset as wds
from webdataset.tariterators import tarfile_samples


class StreamError(ValueError):
    """A source cannot be streamed as configured; the message says which source and why."""


@dataclass
class StreamCounters:
    """What was skipped while streaming, for the trainer to report (per loader worker)."""

    samples: int = 0
    corrupt_samples: int = 0
    unreadable_shards: int = 0
    examples: list[str] = field(default_factory=list)  # first few "what @ where" lines

    def note(self, line: str, limit: int = 10) -> None:
        """Keep a few examples of what was skipped."""
        if len(self.examples) < limit:
            self.examples.append(line)

    def as_dict(self) -> dict:
        """Plain numbers for logging."""
        return {
            "samples": self.samples,
            "corrupt_samples": self.corrupt_samples,
            "unreadable_shards": self.unreadable_shards,
        }


@dataclass(frozen=True)
class Slot:
    """Which part of the data one loader worker of one rank reads."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        """Position among all rank x worker readers."""
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        """Number of rank x worker readers."""
        return self.world_size * self.num_workers


def list_shards(urls: str | list[str]) -> list[str]:
    """Expand a source's urls: a list as is, a local dir to its sorted `*.tar`, else brace/`::` expansion;
    local files that do not exist are refused here, naming them (URLs and `pipe:` are read as they come)."""
    if isinstance(urls, (list, tuple)):
        shards = [str(u) for u in urls]
    elif Path(urls).is_dir():
        shards = sorted(str(p) for p in Path(urls).glob("*.tar"))
        if not shards:
            raise StreamError(f"no *.tar shards in directory {urls}; point the source at a shard directory")
    else:
        shards = wds.shardlists.expand_urls(urls)
    missing = [url for url in shards if not urlparse(url).scheme and not Path(url).is_file()]
    if missing:
        more = f", nor do {len(missing) - 1} more of the {len(shards)} shards" if len(missing) > 1 else ""
        raise StreamError(f"shard {missing[0]} does not exist{more}; check the source's urls")
    return shards


def shards_for_slot(shards: list[str], slot: Slot, seed: int, epoch: int, shardshuffle: bool) -> list[str]:
    """One epoch's shards for this slot: the (optionally shuffled) list split round-robin over all slots."""
    order = list(shards)
    if shardshuffle:
        random.Random(f"shards/{seed}/{epoch}").shuffle(order)  # same order on every slot
    mine = order[slot.index :: slot.count]
    if not mine:
        raise StreamError(
            f"{len(shards)} shard(s) for {slot.count} readers ({slot.world_size} ranks x "
            f"{slot.num_workers} workers): reader {slot.index} has no shard. Use resampled=True, "
            "fewer loader workers, or write more shards"
        )
    return mine


def resampled_shards(shards: list[str], slot: Slot, seed: int) -> Iterator[str]:
    """Shards drawn with replacement forever, a different seeded sequence per slot (darknet-notes: picked with replacement)."""
    rng = random.Random(f"resample/{seed}/{slot.index}")
    while True:
        yield shards[rng.randrange(len(shards))]


def samples_from_shard(url: str, counters: StreamCounters) -> Iterator[dict]:
    """Raw samples of one shard; a shard that cannot be read is warned about by URL and counted."""
    try:
        yield from tarfile_samples([{"url": url}])
    except Exception as exn:  # explicit handler: report by name, then go on with the next shard
        counters.unreadable_shards += 1
        counters.note(f"unreadable shard {url}: {exn}")
        warnings.warn(f"shard {url} could not be read ({type(exn).__name__}: {exn}); skipping the rest of it")


def shuffle_buffer(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Bounded-buffer sample shuffle with a seeded generator (size <= 1: no shuffle)."""
    if size <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


@dataclass
class SourceStream:
    """Raw samples (`__key__`, `jpg`, `json`, `__url__`) of one source for one slot."""

    urls: str | list[str]
    name: str = "source"
    resampled: bool = True
    shardshuffle: bool = True
    shuffle: int = 1000
    seed: int = 0
    counters: StreamCounters = field(default_factory=StreamCounters)

    def __post_init__(self) -> None:
        self.shards = list_shards(self.urls)
        if not self.shards:
            raise StreamError(f"source {self.name!r}: urls {self.urls!r} name no shard")

    def samples_of(self, urls: Iterator[str]) -> Iterator[dict]:
        """Samples of the shards in order; refuses to spin forever when no shard yields anything, and to
        end a one-epoch pass silently empty when every one of its shards was unreadable."""
        empty_in_a_row, total, unreadable_before = 0, 0, self.counters.unreadable_shards
        for url in urls:
            count = 0
            for sample in samples_from_shard(url, self.counters):
                count += 1
                yield sample
            total += count
            empty_in_a_row = 0 if count else empty_in_a_row + 1
            if self.resampled and empty_in_a_row >= max(20, 3 * len(self.shards)):
                raise StreamError(
                    f"source {self.name!r}: the last {empty_in_a_row} shards read gave no sample "
                    f"(unreadable so far: {self.counters.examples[:3]}); check the urls {self.urls!r}"
                )
        if total == 0 and self.counters.unreadable_shards > unreadable_before:
            raise StreamError(
                f"source {self.name!r}: no shard of this reader could be read "
                f"({self.counters.examples[:3]}); check the urls {self.urls!r}"
            )

    def iterate(self, slot: Slot, epoch: int = 0) -> Iterator[dict]:
        """Samples for this slot: endless when resampled, else one epoch."""
        if self.resampled:
            urls: Iterator[str] = resampled_shards(self.shards, slot, self.seed)
        else:
            urls = iter(shards_for_slot(self.shards, slot, self.seed, epoch, self.shardshuffle))
        raw = self.samples_of(urls)
        rng = random.Random(f"shuffle/{self.name}/{self.seed}/{epoch}/{slot.index}")
        for sample in shuffle_buffer(raw, self.shuffle, rng):
            self.counters.samples += 1
            yield sample
