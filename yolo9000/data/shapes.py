"""Synthetic plane-figure scenes for the embedded demo, written in the real COCO and ImageNet layouts.

YOLO9000's claim (paper, section 4) is that boxes with coarse labels plus images with only fine
labels teach a detector to find the fine classes. `make_shapes` renders that situation:

    OUT/coco/annotations/instances_train.json, OUT/coco/train/   boxes named by their coarse class
    OUT/imagenet/train/<wnid>/<wnid>_NNNNNN.JPEG                 one fine-class figure per image
    OUT/coco/annotations/instances_val.json, OUT/coco/val/       every object named by its fine class
    OUT/coco/annotations/instances_tune.json, OUT/coco/tune/     as val, its own seed: choose configs here
    OUT/labels.map      `name<TAB>wnid` of every class (prepare_coco.py --label-map, wordtree --synsets)
    OUT/classes.json    each class's wnid, COCO category id, coarse class and role
    OUT/settings.json   the settings the folder holds; the same settings again reuse it

Roles: `boxed` (the coarse classes the detection set names), `unboxed` (fine classes under a boxed
one: drawn in detection scenes but named only by their parent) and `unrelated` (fine classes with
no boxed relative below the root: never drawn in detection scenes). Every image comes from its own
generator seeded by (seed, split, index), so the output is byte-identical for a seed whatever the
number of worker processes. A box is the exact extent of its figure's polygon in COCO pixels (the
image spans [0, size]); figures are anti-aliased, lie wholly inside the image and never overlap.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from atomicio import write_file
from yolo9000.data.shardwriter.encode import encode_jpeg
from yolo9000.data.shardwriter.write import process_pool

FORMAT_VERSION = 1  # bump when a change alters what a given setting renders: old folders then regenerate
OBJECTS_PER_SCENE = (1, 4)  # detection, val and tune scenes; classification images hold one figure
OBJECT_SIDE = (0.15, 0.50)  # the longer side of a figure's box, as a share of the image side
JPEG_QUALITY = 90
SUPERSAMPLE = 4  # figures are drawn at 4x and box-filtered down: anti-aliased edges
GAP = 2.0  # pixels between the boxes of two figures
PLACEMENT_TRIES = 20  # a figure that finds no free place in this many draws is left out
MIN_CONTRAST = 110.0  # RGB distance between a figure's colour and the mean background under it
CHUNK = 250  # images per process-pool task
SETTINGS_FILE = "settings.json"
OUTPUTS = ("coco", "imagenet", "labels.map", "classes.json", SETTINGS_FILE)


class ShapesError(ValueError):
    """Settings or an output folder that make_shapes cannot use; the message says how to fix it."""


# ---------------------------------------------------------------- the figures


def regular_star(points: int, inner: float) -> np.ndarray:
    """(2 * points, 2) outline of a star whose inner vertices lie at `inner` times the outer radius."""
    angles = np.pi / points * np.arange(2 * points) - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def arc(start: float, stop: float, count: int) -> np.ndarray:
    """(count, 2) points of the unit circle from angle start to stop (radians)."""
    angles = np.linspace(start, stop, count, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def right_triangle(rng: np.random.Generator) -> np.ndarray:
    """Legs in ratio 0.5-0.75 (never isosceles)."""
    return np.array([[0, 0], [1, 0], [0, rng.uniform(0.5, 0.75)]])


def equilateral_triangle(rng: np.random.Generator) -> np.ndarray:
    return arc(-np.pi / 2, 3 * np.pi / 2, 3)


def isosceles_triangle(rng: np.random.Generator) -> np.ndarray:
    """Apex angle 28-40 degrees: tall and narrow, far from equilateral's 60."""
    half_base = math.tan(math.radians(rng.uniform(28, 40)) / 2)
    return np.array([[0, 0], [half_base, 1], [-half_base, 1]])


def square(rng: np.random.Generator) -> np.ndarray:
    return np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)


def rhombus(rng: np.random.Generator) -> np.ndarray:
    """Acute angle 45-65 degrees, far from the square's 90."""
    angle = math.radians(rng.uniform(45, 65))
    dx, dy = math.cos(angle), math.sin(angle)
    return np.array([[0, 0], [1, 0], [1 + dx, dy], [dx, dy]])


def trapezoid(rng: np.random.Generator) -> np.ndarray:
    """Isosceles: top 0.45-0.65 of the base (a short top looks like a triangle), height 0.5-0.75 of it."""
    top, height = rng.uniform(0.45, 0.65), rng.uniform(0.5, 0.75)
    return np.array([[0, 0], [1, 0], [0.5 + top / 2, height], [0.5 - top / 2, height]])


def pentacle(rng: np.random.Generator) -> np.ndarray:
    """The regular five-pointed star (inner radius 0.382, the pentagram's)."""
    return regular_star(5, 0.382)


def hexagram(rng: np.random.Generator) -> np.ndarray:
    """Two equilateral triangles (inner radius 1/sqrt(3))."""
    return regular_star(6, 1 / math.sqrt(3))


def circle(rng: np.random.Generator) -> np.ndarray:
    return arc(0, 2 * np.pi, 48)


def semicircle(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([arc(0, np.pi, 32), [[-1.0, 0.0]]])


def heart(rng: np.random.Generator) -> np.ndarray:
    """The classic parametric heart curve, point down."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y], axis=1) / 16


@dataclass(frozen=True)
class Figure:
    """A fine class: its outline drawer and the boxed coarse class that names it in detection scenes."""

    name: str
    coarse: str | None  # None: an unrelated class, never drawn in detection scenes
    outline: Callable[[np.random.Generator], np.ndarray]  # (N, 2) polygon at any scale


COARSE = ("triangle", "quadrilateral", "star")
FIGURES = (
    Figure("right triangle", "triangle", right_triangle),
    Figure("equilateral triangle", "triangle", equilateral_triangle),
    Figure("isosceles triangle", "triangle", isosceles_triangle),
    Figure("square", "quadrilateral", square),
    Figure("rhombus", "quadrilateral", rhombus),
    Figure("trapezoid", "quadrilateral", trapezoid),
    Figure("pentacle", "star", pentacle),
    Figure("hexagram", "star", hexagram),
    Figure("circle", None, circle),
    Figure("semicircle", None, semicircle),
    Figure("heart", None, heart),
)
CLASS_NAMES = COARSE + tuple(f.name for f in FIGURES)  # COCO category id = position + 1
DETECTION_FIGURES = tuple(f for f in FIGURES if f.coarse is not None)


# ---------------------------------------------------------------- splits and settings


@dataclass(frozen=True)
class Split:
    """One generated split: where it goes, what it draws and what it names its objects by."""

    name: str  # settings field holding the image count
    stream: int  # seed stream: splits never share a generator
    figures: tuple[Figure, ...]
    layout: str  # "coco" (boxes) or "imagenet" (one figure, an image label)
    coco_split: str = ""  # instances_<coco_split>.json and the image folder coco/<coco_split>/
    coarse_labels: bool = False  # detection scenes name each box by its figure's coarse class


SPLITS = (
    Split("train_detection", 1, DETECTION_FIGURES, "coco", "train", coarse_labels=True),
    Split("train_classification", 2, FIGURES, "imagenet"),
    Split("val", 3, FIGURES, "coco", "val"),
    Split("tune", 4, FIGURES, "coco", "tune"),
)


@dataclass(frozen=True)
class ShapesSettings:
    """Everything the generated data depends on; settings.json holds these (plus the fixed constants)."""

    train_detection: int = 4000
    train_classification: int = 4000
    val: int = 300
    tune: int = 300
    size: int = 128
    seed: int = 0

    def check(self) -> None:
        """A ShapesError naming the setting that cannot be rendered."""
        for split in SPLITS:
            if getattr(self, split.name) < 0:
                raise ShapesError(f"--{split.name.replace('_', '-')} must be 0 or more images, "
                                  f"got {getattr(self, split.name)}")
        if not 32 <= self.size <= 4096:
            raise ShapesError(f"--size must be 32 to 4096 pixels, got {self.size}")
        if self.seed < 0:
            raise ShapesError(f"--seed must be 0 or more, got {self.seed}")

    def key(self) -> dict:
        """What settings.json records and a second run compares."""
        return {"format_version": FORMAT_VERSION, **asdict(self), "objects_per_scene": list(OBJECTS_PER_SCENE),
                "object_side": list(OBJECT_SIDE), "jpeg_quality": JPEG_QUALITY}


def sample_rng(seed: int, split: Split, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the worker drawing it."""
    return np.random.default_rng([seed, split.stream, index])


# ---------------------------------------------------------------- drawing


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 background: a gradient, soft colour blotches or flat colour, plus grey noise."""
    kind = rng.integers(3)
    if kind == 0:  # linear gradient between two colours at a random angle
        start, stop = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.linspace(0, 1, size, dtype=np.float32)
        t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = start + t[..., None] * (stop - start)
    elif kind == 1:  # a coarse grid of colours, smoothly upsampled
        cells = int(rng.integers(2, 7))
        grid = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        image = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), np.float32)
    else:
        image = np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (size, size, 3))
    sigma = np.float32(rng.uniform(2, 18))
    return image + sigma * rng.standard_normal((size, size, 1), dtype=np.float32)  # grey noise: a third of the cost


def place(outline: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The outline turned and mirrored at random, scaled so its box's longer side is 15-50 % of the image
    side, at a random position wholly inside the image: (N, 2) points in COCO pixels."""
    angle = rng.uniform(0, 2 * np.pi)
    mirror = 1.0 if rng.random() < 0.5 else -1.0
    cos, sin = math.cos(angle), math.sin(angle)
    points = (outline * [mirror, 1.0]) @ np.array([[cos, sin], [-sin, cos]])
    points = points - points.min(axis=0)
    points *= rng.uniform(*OBJECT_SIDE) * size / points.max()
    room = size - 2.0 - points.max(axis=0)  # one pixel clear of each border
    return points + 1.0 + rng.uniform(0, 1, 2) * room


def coverage(points: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(x, y, alpha): the share of each pixel of the polygon's pixel window (h, w), whose top-left pixel is
    (x, y), that the polygon covers, from a SUPERSAMPLE-times finer mask."""
    x, y = np.floor(points.min(axis=0)).astype(int)
    width, height = np.ceil(points.max(axis=0)).astype(int) - (x, y)
    mask = Image.new("L", (int(width) * SUPERSAMPLE, int(height) * SUPERSAMPLE), 0)
    # PIL puts integer coordinates at pixel centres; COCO pixel i spans [i, i + 1): shift by half a pixel.
    fine = (points - (x, y)) * SUPERSAMPLE - 0.5
    ImageDraw.Draw(mask).polygon([tuple(p) for p in fine], fill=255)
    return int(x), int(y), np.asarray(mask.reduce(SUPERSAMPLE), np.float32) / 255.0


def contrasting_colour(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """(3,) a random colour far from the region's mean colour (the farthest of 8 candidates if none is)."""
    local = region.reshape(-1, 3).mean(axis=0)
    candidates = rng.uniform(0, 255, (8, 3)).astype(np.float32)
    distance = np.linalg.norm(candidates - local, axis=1)
    far = np.flatnonzero(distance >= MIN_CONTRAST)
    return candidates[far[0] if far.size else int(distance.argmax())]


def overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """True when the box comes within GAP pixels of any of the boxes."""
    if not boxes:
        return False
    others = np.stack(boxes)
    apart = ((box[0] >= others[:, 2] + GAP) | (others[:, 0] >= box[2] + GAP)
             | (box[1] >= others[:, 3] + GAP) | (others[:, 1] >= box[3] + GAP))
    return not apart.all()


def draw_figures(rng: np.random.Generator, image: np.ndarray, figures: list[Figure]
                 ) -> tuple[np.ndarray, np.ndarray, list[Figure], np.ndarray]:
    """(image (H, W, 3) uint8, boxes (K, 4) x0 y0 x1 y1, the K figures drawn, their areas (K,) in pixels).

    Draws into the float background `image`. A figure that finds no free place after
    PLACEMENT_TRIES draws is left out.
    """
    boxes, drawn, areas = [], [], []
    for figure in figures:
        for _ in range(PLACEMENT_TRIES):
            points = place(figure.outline(rng), rng, image.shape[0])
            box = np.concatenate([points.min(axis=0), points.max(axis=0)])
            if not overlaps(box, boxes):
                break
        else:
            continue
        x, y, alpha = coverage(points)
        region = image[y:y + alpha.shape[0], x:x + alpha.shape[1]]  # a view: blending draws into the image
        colour = contrasting_colour(rng, region)
        region += alpha[..., None] * (colour - region)
        boxes.append(box)
        drawn.append(figure)
        areas.append(float(alpha.sum()))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return pixels, np.array(boxes, np.float64).reshape(-1, 4), drawn, np.array(areas)


def scene_figures(rng: np.random.Generator, split: Split, index: int) -> list[Figure]:
    """The figures one image of the split asks for: one per classification image, in class order so
    every class gets the same number of images; 1-4 drawn at random per scene."""
    if split.layout == "imagenet":
        return [split.figures[index % len(split.figures)]]
    count = int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))
    return [split.figures[i] for i in rng.integers(0, len(split.figures), count)]


def render_image(settings: ShapesSettings, split: Split, index: int
                 ) -> tuple[np.ndarray, np.ndarray, list[Figure], np.ndarray]:
    """Image `index` of a split, as `draw_figures` returns it, from the image's own generator.

    The background is drawn first, so `background(sample_rng(seed, split, index), size)` is the image
    without its figures.
    """
    rng = sample_rng(settings.seed, split, index)
    image = background(rng, settings.size)
    return draw_figures(rng, image, scene_figures(rng, split, index))


# ---------------------------------------------------------------- files


def image_file(split: Split, index: int, wnids: dict[str, str]) -> str:
    """The image's path under its split's image folder (COCO: 000000000001.jpg; ImageNet: wnid/wnid_000000.JPEG)."""
    if split.layout == "imagenet":
        wnid = wnids[split.figures[index % len(split.figures)].name]
        return f"{wnid}/{wnid}_{index // len(split.figures):06d}.JPEG"
    return f"{index + 1:012d}.jpg"


def image_folder(out: Path, split: Split) -> Path:
    return out / "imagenet" / "train" if split.layout == "imagenet" else out / "coco" / split.coco_split


def annotation_file(out: Path, split: Split) -> Path:
    return out / "coco" / "annotations" / f"instances_{split.coco_split}.json"


def render_chunk(task: tuple[ShapesSettings, Split, int, int, Path, dict[str, str]]) -> list[dict]:
    """Render and write images [start, stop) of a split; one annotation entry per image."""
    settings, split, start, stop, out, wnids = task
    folder = image_folder(out, split)
    entries = []
    for index in range(start, stop):
        pixels, boxes, figures, areas = render_image(settings, split, index)
        file = image_file(split, index, wnids)
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).write_bytes(encode_jpeg(Image.fromarray(pixels), JPEG_QUALITY))
        names = [f.coarse if split.coarse_labels else f.name for f in figures]
        entries.append({"index": index, "file": file, "boxes": boxes.tolist(), "names": names,
                        "areas": areas.tolist()})
    return entries


def coco_json(split: Split, entries: list[dict], size: int) -> dict:
    """A COCO instances file of the split's images; category ids are CLASS_NAMES positions + 1."""
    names = [f.coarse for f in split.figures] if split.coarse_labels else [f.name for f in split.figures]
    categories = [{"id": CLASS_NAMES.index(n) + 1, "name": n, "supercategory": "plane figure"}
                  for n in dict.fromkeys(names)]
    images, annotations = [], []
    for entry in entries:
        image_id = entry["index"] + 1
        images.append({"id": image_id, "file_name": entry["file"], "width": size, "height": size})
        for (x0, y0, x1, y1), name, area in zip(entry["boxes"], entry["names"], entry["areas"]):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": CLASS_NAMES.index(name) + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round(area, 2), "iscrowd": 0,
            })
    return {"info": {"description": "yolo9000 synthetic plane figures (pipelines/make_shapes.py)",
                     "version": str(FORMAT_VERSION)},
            "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def class_table(wnids: dict[str, str]) -> list[dict]:
    """classes.json: name, wnid, COCO category id, coarse class and role of every class."""
    rows = [{"name": n, "wnid": wnids[n], "id": i + 1, "coarse": None, "role": "boxed"}
            for i, n in enumerate(COARSE)]
    for figure in FIGURES:
        rows.append({"name": figure.name, "wnid": wnids[figure.name], "id": CLASS_NAMES.index(figure.name) + 1,
                     "coarse": figure.coarse, "role": "unboxed" if figure.coarse else "unrelated"})
    return rows


def write_json(path: Path, data, indent: int | None = None) -> None:
    """JSON written under a temporary name, then renamed (compact unless an indent is given)."""
    text = json.dumps(data, indent=indent, separators=None if indent else (",", ":"))
    write_file(path, lambda p: p.write_text(text + "\n"))


# ---------------------------------------------------------------- the whole run


@dataclass
class ShapesResult:
    """What a make_shapes call did: reused the folder, or generated it (with how many boxes)."""

    out: Path
    reused: bool
    reason: str  # why it generated: "new folder", "other settings", "incomplete"; "" when reused
    images: dict[str, int]  # split name → images
    boxes: dict[str, int]  # split name → boxes (COCO splits)


def expected_files(out: Path, settings: ShapesSettings) -> dict[Path, int]:
    """{image folder: number of images} of a complete folder."""
    return {image_folder(out, split): getattr(settings, split.name) for split in SPLITS}


def count_images(folder: Path) -> int:
    """JPEG files in a split's folder (class folders included)."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.suffix in (".jpg", ".JPEG"))


def read_previous(out: Path) -> dict | None:
    """The settings.json of an earlier run, or None when there is none; {} when it is unreadable."""
    path = out / SETTINGS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def reuse_check(out: Path, settings: ShapesSettings) -> str:
    """"" when the folder already holds these settings' complete output, else why it must be generated."""
    if out.exists() and not out.is_dir():
        raise ShapesError(f"{out} is a file: --out must be a folder (new, empty, or written by make_shapes)")
    previous = read_previous(out)
    if previous is None:
        if out.exists() and any(out.iterdir()):
            raise ShapesError(f"{out} is not empty and has no {SETTINGS_FILE}, so make_shapes did not write it; "
                              "give a new or empty --out folder (make_shapes replaces what it wrote there)")
        return "new folder"
    if {k: v for k, v in previous.items() if k != "complete"} != settings.key():
        return "other settings"
    if not previous.get("complete") or any(count_images(folder) != n
                                           for folder, n in expected_files(out, settings).items()):
        return "incomplete"
    return ""


def clear_outputs(out: Path) -> None:
    """Remove everything an earlier make_shapes run wrote into the folder, and nothing else."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_wnids(wnids: dict[str, str]) -> None:
    """A ShapesError listing the classes the label map does not name."""
    missing = [name for name in CLASS_NAMES if name not in wnids]
    if missing:
        raise ShapesError(f"the label map names no wnid for {missing}; add 'name<TAB>wnid' lines for them")


def render_splits(out: Path, settings: ShapesSettings, wnids: dict[str, str], workers: int,
                  progress: bool) -> dict[str, list[dict]]:
    """Render every split's images, in a process pool when workers > 1; annotation entries per split."""
    tasks = [(settings, split, start, min(start + CHUNK, getattr(settings, split.name)), out, wnids)
             for split in SPLITS for start in range(0, getattr(settings, split.name), CHUNK)]
    total = sum(getattr(settings, split.name) for split in SPLITS)
    entries = {split.name: [] for split in SPLITS}
    with tqdm(total=total, unit="img", desc="rendering shapes", disable=not progress) as bar:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                entries[task[1].name].extend(render_chunk(task))
                bar.update(task[3] - task[2])
        else:
            with process_pool(min(workers, len(tasks))) as pool:
                futures = {pool.submit(render_chunk, task): task for task in tasks}
                for done in as_completed(futures):
                    task = futures[done]
                    entries[task[1].name].extend(done.result())
                    bar.update(task[3] - task[2])
    return {name: sorted(items, key=lambda e: e["index"]) for name, items in entries.items()}


def make_shapes(out: str | Path, settings: ShapesSettings, wnids: dict[str, str], workers: int = 2,
                progress: bool = True) -> ShapesResult:
    """Generate the demo's data into `out`, or reuse it when `out` already holds these settings' output."""
    out = Path(out)
    settings.check()
    check_wnids(wnids)
    if workers < 1:
        raise ShapesError(f"--workers must be at least 1, got {workers}")
    reason = reuse_check(out, settings)
    if not reason:
        return ShapesResult(out, True, "", {s.name: getattr(settings, s.name) for s in SPLITS}, {})
    clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS_FILE, {**settings.key(), "complete": False}, indent=1)
    for split in SPLITS:
        image_folder(out, split).mkdir(parents=True, exist_ok=True)
    (out / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    entries = render_splits(out, settings, wnids, workers, progress)
    boxes = {}
    for split in SPLITS:
        if split.layout == "coco":
            write_json(annotation_file(out, split), coco_json(split, entries[split.name], settings.size))
            boxes[split.name] = sum(len(e["boxes"]) for e in entries[split.name])
    (out / "labels.map").write_text("".join(f"{name}\t{wnids[name]}\n" for name in CLASS_NAMES))
    write_json(out / "classes.json", class_table(wnids), indent=1)
    write_json(out / SETTINGS_FILE, {**settings.key(), "complete": True}, indent=1)
    return ShapesResult(out, False, reason, {s.name: len(entries[s.name]) for s in SPLITS}, boxes)
