"""Source streams -> mix -> decode -> transforms -> collate, in a DataLoader over an IterableDataset.

Determinism: with N loader workers, DataLoader hands out batches round-robin, so global step
s comes from worker s % N. Each worker builds batches of B consecutive samples of its own
mixed stream, seeded by (seed, rank, worker). Resuming at `start_step` k shifts worker ids by k
(DataLoader starts again at worker 0) and skips, before decoding, the samples of the batches
before k; batches k, k+1, ... are then exactly those of an uninterrupted run. Corrupt samples
skipped before k would shift that count, so each batch also reports its worker's raw-sample
`position`; passing `Loader.positions` (saved with the checkpoint) as `start_positions` makes the
resume exact in that case too.

Images of a batch arrive in a loader worker's shared-memory buffer; the worker writes a later
batch into it only after every tensor of the main process that used it (views included) is gone
(`buffers.py`), so a batch that is kept stays intact.

`augment_on: worker` (the default and the reference) crops, flips and resizes in the workers;
`augment_on: device` has them draw the same numbers from the same generators and ship them with the
decoded images on a padded canvas (collate.py's second batch form), for `warp.device_batch` to
apply on the device; `decode_on: device` ships the JPEG bytes themselves. The stream, the mix, the
skipping of corrupt samples and so the resume positions are the same on every path.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from yolo9000.data import transforms as T
from yolo9000.data.buffers import LentBuffers, WorkerBuffers, return_queues, worker_buffers
from yolo9000.data.collate import CanvasError, canvas_bytes, check_canvas, collate, collate_for_warp
from yolo9000.data.decode import CorruptSampleError, decode_sample
from yolo9000.data.labelmap import LabelMap, UnknownLabelError
from yolo9000.data.mix import Mix, MixError
from yolo9000.data.stream import Slot, SourceStream, StreamError

SET_UP_ERRORS = (UnknownLabelError, StreamError, MixError, CanvasError)  # raised to the user as their message alone

KINDS = ("detection", "classification")
CLASSIFICATION_AUGMENTS = ("classifier", "detection")
PLACES = ("worker", "device")


@dataclass
class SourceConfig:
    """One dataset: shards (list, brace pattern, dir, http://, pipe:), its mixing weight and its kind.

    `manifest` is the source's manifest.parquet, checked before training starts; by default the one
    beside local shards.
    """

    name: str
    urls: str | list[str]
    weight: float = 1.0
    kind: str = "detection"
    manifest: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"source {self.name!r}: kind {self.kind!r} is not one of {KINDS}")


@dataclass
class LoaderConfig:
    """Everything the data pipeline needs; defaults from the YOLOv2 paper and darknet."""

    sources: list[SourceConfig] = field(default_factory=list)
    batch_size: int = 8
    image_size: int = 416
    num_workers: int = 2
    shuffle_buffer: int = 1000
    seed: int = 0
    max_boxes: int = 30
    augment: bool = True
    resampled: bool = True
    hsv_on_device: bool = True
    jitter: float = 0.2
    pin_memory: bool = False
    persistent_workers: bool = True
    reuse_buffers: bool = True  # workers write batches into shared memory the main process has let go
    # classification images: "classifier" = Darknet-19's recipe (area crop, rotation; classify jobs),
    # "detection" = the detection jitter crop, as darknet's joint training reads every image (detect jobs)
    classification_augment: str = "classifier"
    augment_on: str = "worker"  # worker: crop / flip / resize in the loader workers; device: as numbers, warped there
    decode_on: str = "worker"  # device (with augment_on: device, on CUDA): JPEG bytes ship, decoded batched there
    canvas_max_side: int | None = None  # device path: an image with a longer side is an error naming it

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, SourceConfig) else SourceConfig(**s) for s in self.sources]
        if self.classification_augment not in CLASSIFICATION_AUGMENTS:
            raise ValueError(f"LoaderConfig.classification_augment {self.classification_augment!r} is not one of "
                             f"{CLASSIFICATION_AUGMENTS}")
        if not self.sources:
            raise ValueError("LoaderConfig.sources is empty; give at least one {name, urls, weight, kind}")
        if self.batch_size < 1 or self.image_size < 1 or self.max_boxes < 1 or self.num_workers < 0:
            raise ValueError(
                f"LoaderConfig: batch_size={self.batch_size}, image_size={self.image_size}, "
                f"max_boxes={self.max_boxes} must be >= 1 and num_workers={self.num_workers} >= 0"
            )
        for name in ("augment_on", "decode_on"):
            if getattr(self, name) not in PLACES:
                raise ValueError(f"LoaderConfig.{name}={getattr(self, name)!r} is not one of {PLACES}")
        if self.decode_on == "device" and (self.augment_on != "device" or not self.hsv_on_device):
            raise ValueError("LoaderConfig.decode_on='device' needs augment_on='device' and hsv_on_device (the workers "
                             "then see no pixels)")


def transforms_for(kind: str, cfg: LoaderConfig) -> T.Compose:
    """The augmentation for a source kind, or the evaluation letterbox when augment is off; its geometry
    deferred to the device warp with `augment_on: device`."""
    defer = cfg.augment_on == "device"
    if not cfg.augment:
        return T.evaluation(cfg.image_size, defer=defer)
    if kind == "classification" and cfg.classification_augment == "classifier":
        return T.classification_train(cfg.image_size, hsv_on_device=cfg.hsv_on_device, defer=defer)
    return T.detection_train(cfg.image_size, jitter=cfg.jitter, hsv_on_device=cfg.hsv_on_device, defer=defer)


def sample_generator(seed: int, epoch: int, slot_index: int, ordinal: int, key: str) -> torch.Generator:
    """Per-sample generator from (seed, epoch, reader, position in its stream, key): repeatable, never global state."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{slot_index}/{ordinal}/{key}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def batches_before(start_step: int, worker: int, num_workers: int) -> int:
    """How many of this (logical) worker's batches come before global step `start_step`."""
    return max(0, -(-(start_step - worker) // num_workers))


class PipelineDataset(IterableDataset):
    """Yields collated batches for one rank; each batch carries this worker's cumulative `stats`."""

    def __init__(self, cfg: LoaderConfig, labelmap: LabelMap, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, epoch: int = 0, start_positions: dict[int, int] | None = None,
                 buffer_returns: list | None = None):
        self.cfg, self.labelmap = cfg, labelmap
        self.rank, self.world_size, self.start_step, self.epoch = rank, world_size, start_step, epoch
        self.start_positions = start_positions
        self.buffer_returns = buffer_returns  # per worker id: a queue of image buffers the main process let go
        self.streams = {
            s.name: SourceStream(s.urls, name=s.name, resampled=cfg.resampled, shardshuffle=True,
                                 shuffle=cfg.shuffle_buffer, seed=cfg.seed)
            for s in cfg.sources
        }
        self.transforms = {s.name: transforms_for(s.kind, cfg) for s in cfg.sources}

    def slot(self) -> Slot:
        """This process's reader slot; worker ids shifted by start_step so resumed batches line up."""
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        worker = info.id if info is not None else 0
        return Slot(self.rank, self.world_size, (worker + self.start_step) % workers, workers)

    def raw_samples(self, slot: Slot) -> tuple[Mix, Iterator[tuple[int, str, dict]]]:
        """The mixed raw-sample stream of this slot, numbered, with its Mix (for realised ratios)."""
        streams = {name: stream.iterate(slot, self.epoch) for name, stream in self.streams.items()}
        weights = {s.name: s.weight for s in self.cfg.sources}
        mix = Mix(streams, weights, random.Random(f"mix/{self.cfg.seed}/{self.epoch}/{slot.index}"))
        return mix, ((i, name, sample) for i, (name, sample) in enumerate(mix))

    def __iter__(self) -> Iterator[dict]:
        """The batches; a set-up error met in a loader worker travels as {"error": ...}, for Loader to raise
        as itself (a DataLoader would wrap it in the worker's traceback)."""
        try:
            yield from self.batches()
        except SET_UP_ERRORS as error:
            yield {"error": error}

    def batches(self) -> Iterator[dict]:
        slot = self.slot()
        buffers = worker_buffers(self.buffer_returns)
        mix, numbered = self.raw_samples(slot)
        skip = self.samples_to_skip(slot)
        for _ in zip(range(skip), numbered):  # fast-forward before decoding
            pass
        position = skip
        dropped = {"over_max_boxes": 0, "crowd_or_difficult": 0, "small": 0}
        pending: list = []
        for ordinal, name, sample in numbered:
            position = ordinal + 1
            decoded = self.decode_or_skip(name, sample)
            if decoded is None:
                continue
            image, target = decoded
            generator = sample_generator(self.cfg.seed, self.epoch, slot.index, ordinal, target["key"])
            pending.append(self.transforms[name](image, target, generator))
            if len(pending) == self.cfg.batch_size:
                yield self.batch_of(pending, slot, mix, dropped, position, buffers)
                pending = []
        if pending:  # only a non-resampled (one-epoch) stream ends: its last, short batch
            yield self.batch_of(pending, slot, mix, dropped, position, buffers)
        yield {"stats": self.stats_of(slot, mix, dropped, position)}  # counters met after the last batch

    def samples_to_skip(self, slot: Slot) -> int:
        """Raw samples this worker's earlier batches used: the saved position, else whole batches before start_step."""
        if self.start_positions is not None:
            return int(self.start_positions.get(slot.worker, 0))
        return batches_before(self.start_step, slot.worker, slot.num_workers) * self.cfg.batch_size

    def decode_or_skip(self, name: str, sample: dict) -> tuple[torch.Tensor, dict] | None:
        """Decode a raw sample; a corrupt one is warned about (key and shard), counted, and skipped; on the device
        path one larger than the configured canvas stops the loader, naming it."""
        try:
            decoded = decode_sample(sample, self.labelmap, pixels=self.cfg.decode_on == "worker")
        except CorruptSampleError as exn:
            counters = self.streams[name].counters
            counters.corrupt_samples += 1
            counters.note(str(exn))
            warnings.warn(f"skipped corrupt sample: {exn}")
            return None
        if self.cfg.augment_on == "device":
            check_canvas(decoded[1]["orig_size"], self.cfg.canvas_max_side,
                         f"sample {sample.get('__key__')} in {sample.get('__url__')}")
        return decoded

    def batch_of(self, pending: list, slot: Slot, mix: Mix, dropped: dict, position: int,
                 buffers: WorkerBuffers | None) -> dict:
        """Collate (in a worker, into a reused shared buffer), add up dropped-box counts, attach the stats."""
        deferred = self.cfg.augment_on == "device"
        numel = canvas_bytes(pending) if deferred else len(pending) * pending[0][0].numel()
        ident, out = buffers.take(numel) if buffers else (None, None)
        batch = (collate_for_warp if deferred else collate)(pending, self.cfg.max_boxes, out)
        for reason, count in batch.pop("dropped").items():
            dropped[reason] += count
        buffer = None if buffers is None else (buffers.worker, ident)
        batch["stats"] = self.stats_of(slot, mix, dropped, position, buffer)
        return batch

    def stats_of(self, slot: Slot, mix: Mix, dropped: dict, position: int, buffer: tuple | None = None) -> dict:
        """This worker's counters so far, and the shared buffer of the batch they travel with."""
        return {
            "worker": slot.worker,
            "position": position,  # raw samples of this worker's stream used so far
            "corrupt_samples": sum(s.counters.corrupt_samples for s in self.streams.values()),
            "unreadable_shards": sum(s.counters.unreadable_shards for s in self.streams.values()),
            "source_counts": dict(mix.counts),
            "dropped_boxes": dict(dropped),
            "buffer": buffer,  # for the main process to hand back
        }


class Loader:
    """Iterates batches of one rank and keeps the summed counters of all its workers in `stats`;
    hands each batch's image buffer back to its worker once the batch is dropped."""

    def __init__(self, cfg: LoaderConfig, labelmap: LabelMap, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, epoch: int = 0, start_positions: dict[int, int] | None = None):
        returns = return_queues(cfg.num_workers if cfg.reuse_buffers else 0)
        self.lent = LentBuffers(returns)
        self.dataset = PipelineDataset(cfg, labelmap, rank, world_size, start_step, epoch, start_positions, returns)
        self.dataloader = DataLoader(
            self.dataset, batch_size=None, num_workers=cfg.num_workers, pin_memory=cfg.pin_memory,
            persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        )
        # Workers that have not delivered a batch since a resume keep their saved position (zeroed counters),
        # so a checkpoint taken that early still records where each of them stands.
        self.per_worker: dict[int, dict] = {
            int(worker): {"worker": int(worker), "position": int(position), "corrupt_samples": 0,
                          "unreadable_shards": 0, "source_counts": {}, "dropped_boxes": {}}
            for worker, position in (start_positions or {}).items()
        }

    @property
    def positions(self) -> dict[int, int]:
        """Raw-sample position of each worker after the batches consumed so far (save it to resume exactly)."""
        return {worker: stats["position"] for worker, stats in self.per_worker.items()}

    @property
    def stats(self) -> dict:
        """Summed counters: corrupt samples, unreadable shards, samples per source, dropped boxes by reason."""
        total: dict = {"corrupt_samples": 0, "unreadable_shards": 0, "source_counts": {}, "dropped_boxes": {}}
        for worker in self.per_worker.values():
            total["corrupt_samples"] += worker["corrupt_samples"]
            total["unreadable_shards"] += worker["unreadable_shards"]
            for group in ("source_counts", "dropped_boxes"):
                for name, count in worker[group].items():
                    total[group][name] = total[group].get(name, 0) + count
        return total

    def __iter__(self) -> Iterator[dict]:
        for batch in self.dataloader:
            if "error" in batch:
                raise batch["error"]
            stats = batch.pop("stats")
            self.per_worker[stats["worker"]] = stats
            if "keys" not in batch:  # a one-epoch stream's last counters, after its last batch
                continue
            self.lent.hand_back(stats["buffer"], batch["jpegs"]["data"] if "jpegs" in batch else batch["images"])
            yield batch
