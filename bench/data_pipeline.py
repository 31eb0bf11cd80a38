"""Data pipeline throughput: shards -> augmented batch, against decoding alone and a map-style file Dataset.

    python bench/data_pipeline.py                  # builds ~300 416-ish JPEG samples in a temp dir
    python bench/data_pipeline.py --shards DIR     # uses existing shards (extracted to files for baseline b)
    python bench/data_pipeline.py --device cuda    # also the warp, decode_on: device and a YOLOv2-416 step on CUDA

First, the CPU time per sample inside one loader worker process (its process_time from its first
batch to its last, one pass over the shards per pass): JPEG decode alone (TorchCodec, and
torchvision's decode_jpeg that it replaced), the worker path (`augment_on: worker`) and the device
path (`augment_on: device`: read, decode, draw the geometry, pad onto a reused canvas, send), and,
in this process, the training step's cost per batch (`warp.device_batch` at 416, against
the worker path's own device step, float conversion and HSV) on the CPU and on `--device`.

Then, for loader worker counts 0, 1, 2, samples/s of
  pipeline : yolo9000.data.loader.Loader (stream -> mix -> decode -> darknet augmentation -> collate)
  device   : the same Loader with augment_on: device (workers decode, draw, pad; the warp's cost per batch
             in the training process is the line above the table)
  (a)      : decoding the same JPEGs alone (in memory, same worker count; nothing else)
  +ship    : (a) plus each batch of decoded images sent to the main process on one padded canvas,
             not resized (the least any loader that decodes in its workers does; ship/(a) bounds
             pipe/(a) whatever runs on the device)
  +resize+batch: (a) plus a resize to 416 and batches sent to the main process (the floor for
             any pipeline that augments in loader workers; floor/(a) bounds pipe/(a))
  shards+decode: the same shard stream decoded, no augmentation (shows what augmentation + batching cost)
  (b)      : a plain map-style Dataset reading the same images and json from files, same transforms, same collate
             (into fresh shared memory per batch, as a plain DataLoader does; the pipeline reuses its buffers)
  fresh shm: the pipeline with `reuse_buffers=False` (pipe/fresh: what reusing worker buffers gains)
and prints a table: samples/s are medians of `--rounds` repeats, ratios medians of the per-round
ratios; each round measures all columns one after another in an order rotated per round, so load
from other processes hits them alike. One intra-op thread everywhere. Timing starts after each
loader's first batch (worker start-up excluded).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import random
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from torchvision.io import ImageReadMode, decode_jpeg

from yolo9000.data.buffers import LentBuffers, WorkerBuffers, return_queues, worker_buffers
from yolo9000.data.collate import collate
from yolo9000.data.decode import decode_image, decode_sample, decode_target
from yolo9000.data.labelmap import LabelMap
from yolo9000.data.loader import Loader, LoaderConfig, PipelineDataset, sample_generator, transforms_for
from yolo9000.data.warp import device_batch
from yolo9000.data.schema import SampleRecord
from yolo9000.data.shardwriter.write import write_tar
from yolo9000.data.stream import Slot, SourceStream
from yolo9000.data.transforms import resize_image

WNIDS = ["n00007846", "n02084071", "n02958343"]


def textured_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A photo-like JPEG (smooth colour field plus grain), so decoding costs what a real image costs."""
    low = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR), dtype=np.int16)
    grain = rng.integers(-20, 20, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray((field + grain).clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def build_samples(count: int, seed: int = 0) -> list[dict]:
    """`count` detection samples of 400-480 px with 1-6 boxes each."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        width, height = int(rng.integers(400, 481)), int(rng.integers(360, 481))
        n = int(rng.integers(1, 7))
        xy = rng.uniform(0, 0.6, (n, 2)) * [width, height]
        wh = rng.uniform(0.1, 0.4, (n, 2)) * [width, height]
        meta = {"source": "bench", "file": f"images/{i:06d}.jpg", "width": width, "height": height,
                "boxes": np.concatenate([xy, xy + wh], 1).round(1).tolist(),
                "labels": [WNIDS[j] for j in rng.integers(0, len(WNIDS), n)],
                "crowd": [False] * n, "difficult": [False] * n, "image_label": None}
        samples.append({"__key__": f"bench-{i:06d}", "jpg": textured_jpeg(rng, width, height), "meta": meta})
    return samples


def write_shards(samples: list[dict], directory: Path, per_shard: int = 50) -> None:
    """The samples as shards bench-000000.tar, ..., written by the project's shard writer (same tar headers)."""
    directory.mkdir(parents=True, exist_ok=True)
    records = [SampleRecord(key=s["__key__"], jpeg=s["jpg"], **{k: v for k, v in s["meta"].items()})
               for s in samples]
    for start in range(0, len(records), per_shard):
        write_tar(records[start : start + per_shard], directory / f"bench-{start // per_shard:06d}.tar")


def read_shards(directory: Path) -> list[dict]:
    """Samples back from existing shards (for baselines a and b)."""
    samples = []
    for raw in wds.DataPipeline(wds.SimpleShardList(sorted(str(p) for p in directory.glob("*.tar"))),
                                wds.tarfile_to_samples()):
        samples.append({"__key__": raw["__key__"], "jpg": raw["jpg"], "meta": json.loads(raw["json"])})
    return samples


def write_files(samples: list[dict], directory: Path) -> list[Path]:
    """The samples as image files with a json beside each (the map-style baseline's input)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in samples:
        path = directory / f"{s['__key__']}.jpg"
        path.write_bytes(s["jpg"])
        path.with_suffix(".json").write_text(json.dumps(s["meta"]))
        paths.append(path)
    return paths


class DecodeOnly(IterableDataset):
    """Baseline (a): each worker decodes its share of the in-memory JPEGs, `passes` times; yields counts per batch.

    `deliver` adds the least that a loader has to do after decoding: "ship" copies each batch of
    decoded images onto one padded canvas and sends it to the main process; "resize" resizes each
    image to 416 x 416 first (the least any pipeline augmenting in loader workers has to do). Both
    write into shared buffers that the workers reuse, as the pipeline does (`returns`: see `recycled`).
    """

    def __init__(self, jpegs: list[bytes], passes: int, batch_size: int, deliver: str | None = None,
                 returns: list | None = None, decoder=decode_image):
        self.jpegs, self.passes, self.batch_size, self.deliver = jpegs, passes, batch_size, deliver
        self.returns, self.decoder = returns, decoder

    def batch(self, images: list[torch.Tensor], buffers: WorkerBuffers | None):
        """What one batch of decoded images becomes: a count, or a canvas (resized or padded) with its buffer id."""
        if self.deliver is None:
            return len(images)
        if self.deliver == "resize":
            images = [resize_image(image, 416, 416) for image in images]
        shape = (len(images), max(i.shape[1] for i in images), max(i.shape[2] for i in images), 3)
        numel = math.prod(shape)
        ident, out = buffers.take(numel) if buffers else (None, torch.empty(numel, dtype=torch.uint8))
        canvas = out.view(shape)
        for slot, image in zip(canvas, images):  # padding left unwritten: nothing reads it
            slot[: image.shape[1], : image.shape[2]] = image.permute(1, 2, 0)
        return {"images": canvas, "buffer": (buffers.worker, ident) if buffers else None}

    def __iter__(self):
        info = get_worker_info()
        mine = self.jpegs if info is None else self.jpegs[info.id :: info.num_workers]
        buffers = worker_buffers(self.returns)
        images = []
        for _ in range(self.passes):
            for data in mine:
                images.append(self.decoder(data))
                if len(images) == self.batch_size:
                    yield self.batch(images, buffers)
                    images = []
        if images:
            yield self.batch(images, buffers)


def recycled(batches: DataLoader, lent: LentBuffers):
    """DecodeOnly batches, each image buffer handed back to its worker once the batch is dropped (as Loader does)."""
    for batch in batches:
        lent.hand_back(batch["buffer"], batch["images"])
        yield batch


class StreamDecode(IterableDataset):
    """Reference column: the same shard stream decoded, no augmentation or batching (what the rest costs)."""

    def __init__(self, shards: Path, labelmap: LabelMap, total: int, batch_size: int):
        self.shards, self.labelmap, self.total, self.batch_size = shards, labelmap, total, batch_size

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        stream = SourceStream(str(self.shards), resampled=True, shuffle=100)
        samples = stream.iterate(Slot(worker=worker, num_workers=workers))
        for _ in range(self.total // self.batch_size // workers):
            for sample in itertools.islice(samples, self.batch_size):
                decode_sample(sample, self.labelmap)
            yield self.batch_size


class FileDataset(Dataset):
    """Baseline (b): a plain map-style Dataset reading image + json files, same decode and transforms."""

    def __init__(self, paths: list[Path], cfg: LoaderConfig, labelmap: LabelMap):
        self.paths, self.cfg, self.labelmap = paths, cfg, labelmap
        self.transform = transforms_for("detection", cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        image = decode_image(path.read_bytes())
        target = decode_target(json.loads(path.with_suffix(".json").read_text()), self.labelmap, str(path))
        target["key"] = path.stem
        return self.transform(image, target, sample_generator(self.cfg.seed, 0, 0, i, path.stem))


def warped(batches, device: str | torch.device):
    """Each batch after its device step at 416 (warped, for the device path) has finished on `device`."""
    for batch in batches:
        images, _ = device_batch(batch, 416, device)
        images.sum().item()  # waits for the device
        yield batch


def rate(batches, count_of) -> float:
    """Samples/s over an iterator of batches, timed from the first batch on."""
    iterator = iter(batches)
    next(iterator)
    start, samples = time.perf_counter(), 0
    for batch in iterator:
        samples += count_of(batch)
    return samples / (time.perf_counter() - start)


def measure(workers: int, samples: list[dict], shards: Path, paths: list[Path], args, round_index: int) -> dict:
    """Samples/s of the pipeline and the baselines for one worker count, in an order rotated per round."""
    labelmap = LabelMap.from_classes(WNIDS)
    cfg = LoaderConfig(sources=[{"name": "bench", "urls": str(shards)}], batch_size=args.batch_size,
                       image_size=416, num_workers=workers, shuffle_buffer=100, seed=round_index,
                       persistent_workers=False)
    total_batches = args.passes * len(samples) // args.batch_size

    def decode() -> float:
        jpegs = DecodeOnly([s["jpg"] for s in samples], args.passes, args.batch_size)
        return rate(DataLoader(jpegs, batch_size=None, num_workers=workers), lambda n: n)

    def delivered(deliver: str) -> float:
        returns = return_queues(workers)
        jpegs = DecodeOnly([s["jpg"] for s in samples], args.passes, args.batch_size, deliver, returns)
        batches = recycled(DataLoader(jpegs, batch_size=None, num_workers=workers), LentBuffers(returns))
        return rate(batches, lambda b: len(b["images"]))

    def stream() -> float:
        decoded = StreamDecode(shards, labelmap, total_batches * args.batch_size, args.batch_size)
        return rate(DataLoader(decoded, batch_size=None, num_workers=workers), lambda n: n)

    def files() -> float:
        dataset = FileDataset(paths * args.passes, cfg, labelmap)
        return rate(DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                               collate_fn=partial(collate, max_boxes=cfg.max_boxes)), lambda b: len(b["keys"]))

    def pipeline(reuse_buffers: bool = True, augment_on: str = "worker") -> float:
        batches = iter(Loader(replace(cfg, reuse_buffers=reuse_buffers, augment_on=augment_on), labelmap))
        return rate((next(batches) for _ in range(total_batches)), lambda b: len(b["keys"]))

    runs = [("decode", decode), ("ship", partial(delivered, "ship")), ("floor", partial(delivered, "resize")),
            ("stream", stream), ("files", files), ("pipeline", pipeline), ("fresh", partial(pipeline, False)),
            ("device", partial(pipeline, augment_on="device"))]
    shift = round_index % len(runs)
    return {name: run() for name, run in runs[shift:] + runs[:shift]}


class WithWorkerCPU(IterableDataset):
    """The first `limit` items of `dataset`, each with the CPU seconds its loader worker process has used so far."""

    def __init__(self, dataset: IterableDataset, limit: int):
        self.dataset, self.limit = dataset, limit

    def __iter__(self):
        for item in itertools.islice(self.dataset, self.limit):
            yield {"item": item, "cpu": time.process_time()}


def worker_cpu_ms(dataset: IterableDataset, count_of, limit: int, lent: LentBuffers | None = None) -> float:
    """CPU ms per sample of one loader worker running `dataset`, from its first item to its last (start-up
    excluded); batches are dropped at once, their buffers handed back for reuse as the Loader does."""
    first, samples, last = None, 0, None
    for delivered in DataLoader(WithWorkerCPU(dataset, limit), batch_size=None, num_workers=1):
        item = delivered["item"]
        if lent is not None and "stats" in item and "buffer" in item["stats"]:
            lent.hand_back(item["stats"]["buffer"], item["jpegs"]["data"] if "jpegs" in item else item.get("images"))
        if first is None:
            first = delivered["cpu"]
            continue
        samples, last = samples + count_of(item), delivered["cpu"]
    return (last - first) / samples * 1e3


def cpu_per_sample(samples: list[dict], shards: Path, args) -> dict:
    """CPU ms per sample inside one loader worker: decoding alone (TorchCodec; torchvision's decode_jpeg), and
    each path's whole work (stream, decode, augmentation, collate into a reused shared buffer, sending)."""
    jpegs = [s["jpg"] for s in samples]
    labelmap = LabelMap.from_classes(WNIDS)
    cfg = LoaderConfig(sources=[{"name": "bench", "urls": str(shards)}], batch_size=args.batch_size, image_size=416,
                       num_workers=1, shuffle_buffer=100, seed=0)
    batches = args.passes * len(samples) // args.batch_size

    def decode(decoder) -> float:
        return worker_cpu_ms(DecodeOnly(jpegs, args.passes, args.batch_size, decoder=decoder), lambda n: n, batches)

    def path(augment_on: str) -> float:
        returns = return_queues(1)
        dataset = PipelineDataset(replace(cfg, augment_on=augment_on), labelmap, buffer_returns=returns)
        return worker_cpu_ms(dataset, lambda b: len(b["keys"]), batches, LentBuffers(returns))

    def stream() -> float:
        dataset = StreamDecode(shards, labelmap, batches * args.batch_size, args.batch_size)
        return worker_cpu_ms(dataset, lambda n: n, batches)

    runs = {"decode": partial(decode, decode_image), "torchvision": partial(decode, torchvision_decode),
            "stream": stream, "worker": partial(path, "worker"), "device": partial(path, "device")}
    out: dict = {name: [] for name in runs}
    for round_index in range(args.rounds):
        names = list(runs)[round_index % len(runs):] + list(runs)[: round_index % len(runs)]
        for name in names:
            out[name].append(runs[name]())
    return {name: statistics.median(values) for name, values in out.items()}


def torchvision_decode(data: bytes) -> torch.Tensor:
    """The decoder decode.py used before TorchCodec: torchvision's decode_jpeg (libjpeg-turbo)."""
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def warp_cost(samples: list[dict], shards: Path, args, device: str) -> dict:
    """ms per batch of the training process's device step at 416: the worker path's (float, HSV) and the warp's."""
    labelmap = LabelMap.from_classes(WNIDS)
    cfg = LoaderConfig(sources=[{"name": "bench", "urls": str(shards)}], batch_size=args.batch_size, image_size=416,
                       num_workers=0, shuffle_buffer=100, seed=0)
    out = {}
    for name, augment_on in (("worker step", "worker"), ("warp", "device")):
        batch = next(PipelineDataset(replace(cfg, augment_on=augment_on), labelmap).batches())
        timings = []
        for _ in range(max(5, args.rounds * 3)):
            start = time.perf_counter()
            next(warped([batch], device))
            timings.append(time.perf_counter() - start)
        out[name] = statistics.median(timings[1:]) * 1e3
    return out


def cuda_feed(shards: Path, count: int, args) -> None:
    """--device cuda: samples/s of the loader with decode_on: device (bytes → nvJPEG → warp) against the
    consumption of a YOLOv2-416 bf16 training step (fwd + bwd + SGD step on a stand-in loss), same batch size."""
    from yolo9000.model import build_detector

    device = torch.device(args.device)
    labelmap = LabelMap.from_classes(WNIDS)
    for workers in args.workers:
        cfg = LoaderConfig(sources=[{"name": "bench", "urls": str(shards)}], batch_size=args.batch_size,
                           image_size=416, num_workers=workers, shuffle_buffer=100, seed=0, persistent_workers=False,
                           augment_on="device", decode_on="device", pin_memory=device.type == "cuda")
        fed = warped(iter(Loader(cfg, labelmap)), device)
        total = args.passes * count // args.batch_size
        fed_rate = rate((next(fed) for _ in range(total)), lambda b: len(b["keys"]))
        print(f"decode_on: device, {workers} loader workers, warp on {device}: {fed_rate:.0f} samples/s")
    model = build_detector("yolov2", 80, 5).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x = torch.rand(args.batch_size, 3, 416, 416, device=device).contiguous(memory_format=torch.channels_last)
    timings = []
    for _ in range(5 + 3 * args.rounds):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(x).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # waits for the device
        timings.append(time.perf_counter() - start)
    print(f"YOLOv2-416 bf16 step on {device} consumes {args.batch_size / statistics.median(timings[5:]):.0f} samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, help="existing shard directory (default: build one)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--passes", type=int, default=2, help="passes over the samples per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats; the median is shown")
    parser.add_argument("--device", default="cpu", help="where the warp runs besides the CPU (cuda: also decode_on: device)")
    args = parser.parse_args()
    # DataLoader workers run with one intra-op thread; the main process (workers=0) is set to match,
    # since oversubscribed OpenMP threads on a shared 2-core machine run several times slower.
    torch.set_num_threads(1)
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.shards:
            shards, samples = args.shards, read_shards(args.shards)
        else:
            samples, shards = build_samples(args.samples), tmp / "shards"
            write_shards(samples, shards)
        paths = write_files(samples, tmp / "files")
        mean_kb = sum(len(s["jpg"]) for s in samples) / len(samples) / 1e3
        print(f"{len(samples)} samples, mean JPEG {mean_kb:.0f} kB, batch {args.batch_size}, 416x416 output, "
              f"torch threads {torch.get_num_threads()}")
        cpu = cpu_per_sample(samples, shards, args)
        print(f"CPU ms per sample in one loader worker: decode {cpu['decode']:.2f} (torchvision's decode_jpeg "
              f"{cpu['torchvision']:.2f}), shards+decode {cpu['stream']:.2f}, worker path {cpu['worker']:.2f}, "
              f"device path {cpu['device']:.2f}; TorchCodec/torchvision {cpu['decode'] / cpu['torchvision']:.2f}, "
              f"shards+decode/decode {cpu['stream'] / cpu['decode']:.2f}, worker/decode {cpu['worker'] / cpu['decode']:.2f}, "
              f"device/decode {cpu['device'] / cpu['decode']:.2f}")
        for device in dict.fromkeys(["cpu", args.device]):
            cost = warp_cost(samples, shards, args, device)
            print(f"training-process step per batch of {args.batch_size} at 416 on {device}: worker path "
                  f"{cost['worker step']:.1f} ms, device warp {cost['warp']:.1f} ms")
        if args.device.startswith("cuda"):
            cuda_feed(shards, len(samples), args)
        columns = [("(a) decode/s", "decode"), ("+ship/s", "ship"), ("+resize+batch/s", "floor"),
                   ("shards+decode/s", "stream"), ("(b) files/s", "files"), ("pipeline/s", "pipeline"),
                   ("fresh shm/s", "fresh"), ("device/s", "device")]
        ratios = [("pipe/(a)", "pipeline", "decode"), ("dev/(a)", "device", "decode"), ("ship/(a)", "ship", "decode"),
                  ("floor/(a)", "floor", "decode"), ("pipe/(b)", "pipeline", "files"),
                  ("pipe/fresh", "pipeline", "fresh")]
        print("workers " + " ".join(f"{title:>{len(title) + 1}}" for title, *_ in columns + ratios))
        for workers in args.workers:
            rounds = [measure(workers, samples, shards, paths, args, i) for i in range(args.rounds)]
            r = {name: statistics.median(x[name] for x in rounds) for name in rounds[0]}
            cells = [f"{r[name]:>{len(title) + 1}.0f}" for title, name in columns]
            cells += [f"{statistics.median(x[top] / x[bottom] for x in rounds):>{len(title) + 1}.2f}"
                      for title, top, bottom in ratios]
            print(f"{workers:>7} " + " ".join(cells))


if __name__ == "__main__":
    main()
