"""Images → letterbox → network → postprocess: detections in each image's own pixels, batched, on CPU or CUDA.

    detector = load_detector("runs/x/checkpoint")                                    # a checkpoint folder of ours
    detector = load_detector(weights="yolo9000.weights", arch="yolo9000", tree="9k.tree", input_size=544)
    detections = predict(detector, [read_image("photo.jpg")], DISPLAY)
    run = predict_files(detector, image_paths(["photos/"]), batch_size=8)
    for item in run: ...                                                              # run.skipped names bad files

The letterbox is transforms.letterbox_image and the float conversion collate.to_network_input, the very
functions of the loader's evaluation path, so training-side evaluation and inference see the same pixels.
On CUDA the network runs under bf16 autocast; postprocessing always runs in float32.
"""

from __future__ import annotations

import glob
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn
from torchvision.io import ImageReadMode, decode_image

from wordtree.darknet_files import load_tree, read_lines_file
from wordtree.labelsets import LABEL_MAPS, label_map, read_label_map
from wordtree.tree import WordTree
from yolo9000.data.collate import to_network_input
from yolo9000.data.transforms import letterbox_image
from yolo9000.hierarchy import TreeArrays
from yolo9000.model import WeightsError, build_detector, load_darknet_weights
from yolo9000.model.weights import count_darknet_floats, darknet_convs, read_header
from yolo9000.postprocess import DISPLAY, Detections, PostprocessConfig, postprocess
from yolo9000.train.checkpoint import LoadedModel, load_model, resolve_checkpoint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# anchors (grid cells) of darknet's cfgs, by (arch, head, classes); darknet-notes.md "Detection cfgs"
DARKNET_ANCHORS = {
    ("yolov2", "paper", 20): [1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52],  # yolo-voc.cfg
    ("yolov2", "paper", 80): [0.738768, 0.874946, 2.42204, 2.65704, 4.30971, 7.04493, 10.246, 4.59428,
                              12.6868, 11.8741],  # yolo.cfg
    ("yolov2", "final", 20): [1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053,
                              11.2364, 10.0071],  # yolov2-voc.cfg
    ("yolov2", "final", 80): [0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778,
                              9.77052, 9.16828],  # yolov2.cfg
    ("yolo9000", "paper", 9418): [0.77871, 1.14074, 3.00525, 4.31277, 9.22725, 9.61974],  # yolo9000.cfg
    ("tiny-yolov2", "paper", 20): [1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52],  # tiny-yolo-voc
}


class PredictError(ValueError):
    """A network, weights file, tree or input that cannot be used for prediction; the message names it."""


class UnreadableImageError(PredictError):
    """An image file that cannot be read or decoded."""


@dataclass
class Detector:
    """A network in eval mode with what it takes to letterbox its input and name its outputs."""

    model: nn.Module
    anchors: Tensor  # (A, 2) grid cells; (0, 2) for a classifier
    input_size: int
    labels: list[str]  # per class index: the wnid (tree node, classes.labels) or, for darknet names, the name
    names: list[str]  # per class index: a human name
    tree: WordTree | None = None
    task: str = "detect"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def tree_arrays(self) -> TreeArrays:
        """The tree as tensors on the network's device; a flat class list is a tree of roots."""
        parent = self.tree.parent if self.tree is not None else [-1] * len(self.labels)
        return TreeArrays.from_parent(parent).to(self.device)

    def to(self, device: str | torch.device) -> "Detector":
        """This detector with the network on `device`."""
        self.model.to(device)
        self.__dict__.pop("tree_arrays", None)
        return self


@dataclass
class LabelSet:
    """A fixed set of class nodes to score every box for (darknet's `map=`): COCO's 80, VOC's 20, a file's."""

    nodes: Tensor  # (L,) class / tree node indices of the detector
    wnids: list[str]
    names: list[str]


def parse_anchors(text: str | Sequence[float]) -> Tensor:
    """(A, 2) anchors from darknet's `w0,h0, w1,h1, ...` (or a flat list of numbers)."""
    try:
        values = [float(v) for v in text.replace(",", " ").split()] if isinstance(text, str) else [float(v) for v in text]
    except ValueError:
        raise PredictError(f"anchors {text!r}: expected numbers like '1.08,1.19, 3.42,4.41'") from None
    if not values or len(values) % 2 or min(values) <= 0:
        raise PredictError(f"anchors {text!r}: expected positive w,h pairs in grid cells like '1.08,1.19, 3.42,4.41'")
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 2)


def detector_from_checkpoint(directory: str | Path, input_size: int | None = None) -> Detector:
    """The network of one of our checkpoint folders (train/checkpoint.py), with its labels and tree."""
    loaded: LoadedModel = load_model(directory)
    spec = loaded.spec
    where = resolve_checkpoint(directory)
    if len(loaded.labels) != spec.num_classes:
        raise PredictError(f"{where / 'classes.labels'} has {len(loaded.labels)} lines but the network's head "
                           f"predicts {spec.num_classes} classes: the checkpoint is damaged")
    if loaded.tree is not None and len(loaded.tree) != spec.num_classes:
        raise PredictError(f"{where / 'wordtree.tree'} has {len(loaded.tree)} nodes but the network's head predicts "
                           f"{spec.num_classes} classes: use the tree the network was trained with")
    names = loaded.tree.names if loaded.tree is not None else list(loaded.labels)
    anchors = torch.tensor(spec.anchors, dtype=torch.float32).reshape(-1, 2)
    return Detector(loaded.model.eval(), anchors, input_size or spec.input_size, list(loaded.labels), names,
                    loaded.tree, spec.task)


def classes_of(tree: str | Path | None, names: str | Path | None) -> tuple[list[str], list[str], WordTree | None]:
    """(labels, names, tree) of darknet weights from `--tree FILE` (its .names beside it) or `--names FILE`."""
    if tree is not None and names is not None:
        raise PredictError("give --tree FILE (a WordTree head) or --names FILE (flat classes), not both")
    if tree is not None:
        wordtree = load_tree(tree)
        return list(wordtree.wnids), list(wordtree.names), wordtree
    if names is not None:
        lines = read_lines_file(names)
        if not lines:
            raise PredictError(f"{names}: no class names in it (one name per line, as darknet's coco.names)")
        return lines, lines, None
    raise PredictError("darknet --weights need --tree FILE (e.g. 9k.tree) or --names FILE (e.g. coco.names) "
                       "to know the classes")


def detector_from_darknet(weights: str | Path, arch: str, head: str = "paper", tree: str | Path | None = None,
                          names: str | Path | None = None, anchors: str | Sequence[float] | None = None,
                          width: float = 1.0, input_size: int = 416) -> Detector:
    """A detector from a darknet .weights file, its architecture, its classes and its anchors."""
    if arch is None:
        raise PredictError("darknet --weights need --arch (yolov2, yolo9000 or tiny-yolov2)")
    labels, class_names, wordtree = classes_of(tree, names)
    if anchors is None:
        key = (arch, "paper" if arch != "yolov2" else head, len(labels))
        if key not in DARKNET_ANCHORS:
            raise PredictError(f"no darknet cfg has anchors for {arch} (head {head}) with {len(labels)} classes: "
                               "pass --anchors 'w0,h0, w1,h1, ...' from the cfg the weights were trained with")
        anchors = DARKNET_ANCHORS[key]
    anchor_tensor = parse_anchors(anchors)
    try:
        model = build_detector(arch, len(labels), len(anchor_tensor), head=head, width=width)
    except ValueError as error:
        raise PredictError(str(error)) from None
    try:
        load_darknet_weights(model, weights)
    except FileNotFoundError:
        raise PredictError(f"{weights}: no such weights file") from None
    except WeightsError as error:
        raise PredictError(f"{error}{head_hint(model, weights, len(labels), tree or names)}") from None
    return Detector(model.eval(), anchor_tensor, input_size, labels, class_names, wordtree)


def head_hint(model: nn.Module, weights: str | Path, classes: int, classes_file) -> str:
    """'; it fits N classes, but FILE gives M' when only the class count of the last conv is off."""
    with open(weights, "rb") as handle:
        header = handle.read(20)
    try:
        _, _, header_size = read_header(header, Path(weights))
    except WeightsError:
        return ""
    available = (Path(weights).stat().st_size - header_size) // 4
    last, _ = darknet_convs(model)[-1]
    anchors = model.num_anchors
    per_class = anchors * (last.in_channels + 1)  # weights and bias of one more output channel per anchor
    without_classes = count_darknet_floats(model) - per_class * (5 + classes)
    fits, remainder = divmod(available - without_classes, per_class)
    if remainder or fits <= 5:
        return ""
    return (f"; it fits a head of {fits - 5} classes with {anchors} anchors, but {classes_file} gives {classes}: "
            "use the tree or names file the weights were trained with")


def load_detector(checkpoint: str | Path | None = None, *, weights: str | Path | None = None, arch: str | None = None,
                  head: str = "paper", tree: str | Path | None = None, names: str | Path | None = None,
                  anchors: str | Sequence[float] | None = None, width: float = 1.0, input_size: int | None = None,
                  device: str | torch.device = "cpu") -> Detector:
    """A detector from a checkpoint folder of ours, or from darknet `weights` with `arch` and `tree` or `names`."""
    if (checkpoint is None) == (weights is None):
        raise PredictError("give a checkpoint folder (--checkpoint DIR) or darknet weights (--weights FILE --arch NAME)")
    if checkpoint is not None:
        detector = detector_from_checkpoint(checkpoint, input_size)
    else:
        detector = detector_from_darknet(weights, arch, head, tree, names, anchors, width, input_size or 416)
    if detector.input_size % 32:
        raise PredictError(f"input size {detector.input_size} is not a multiple of 32 (the network's stride)")
    return detector.to(device)


def label_set(detector: Detector, spec: str | Path) -> LabelSet:
    """The detector's nodes of a label set: "coco" or "voc" (wordtree's maps), a `name<TAB>wnid` / `wnid` file,
    or a darknet `.map` file of node indices (coco9k.map). Unknown wnids are listed in the error."""
    key = str(spec)
    if key not in LABEL_MAPS and not Path(key).is_file():
        raise PredictError(f"label set {key!r} is neither a file nor one of {', '.join(sorted(LABEL_MAPS))}")
    lines = [] if key in LABEL_MAPS else Path(key).read_text().split()
    if lines and all(line.lstrip("-").isdigit() for line in lines):  # darknet .map: a node index per line
        nodes = [int(line) for line in lines]
        bad = [n for n in nodes if not 0 <= n < len(detector.labels)]
        if bad:
            raise PredictError(f"{key}: node indices {bad[:10]} are outside the detector's {len(detector.labels)} classes")
        return LabelSet(torch.tensor(nodes), [detector.labels[n] for n in nodes], [detector.names[n] for n in nodes])
    mapping = label_map(key) if key in LABEL_MAPS else read_label_map(key)
    names_of: dict[str, list[str]] = {}  # wnid → its names, official first (coco.map lists darknet's spellings too)
    for name, wnid in mapping.items():
        names_of.setdefault(wnid, []).append(name)
    index = {label: i for i, label in enumerate(detector.labels)}
    nodes = [next((index[n] for n in [wnid, *names] if n in index), None) for wnid, names in names_of.items()]
    missing = [f"{names[0]} ({wnid})" for (wnid, names), node in zip(names_of.items(), nodes) if node is None]
    if missing:
        raise PredictError(f"label set {key}: {len(missing)} classes are not among the detector's "
                           f"{len(detector.labels)}: {', '.join(missing[:20])}")
    return LabelSet(torch.tensor(nodes), list(names_of), [names[0] for names in names_of.values()])


def read_image(path: str | Path, exif: bool = True) -> Tensor:
    """(3, H, W) uint8 RGB as displayed (EXIF orientation applied unless `exif=False`, the pixels as stored, which
    dataset annotations refer to); grey, palette, CMYK and alpha images converted."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"{path}: {error.strerror or error}") from None
    try:  # libjpeg-turbo / libpng through torchvision, like the loader's decode
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                            apply_exif_orientation=exif)
    except RuntimeError:
        pass
    try:  # what torchvision does not decode (BMP, TIFF, ...), or a JPEG it refuses
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray((ImageOps.exif_transpose(image) if exif else image).convert("RGB"))
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{path}: not an image format torchvision or PIL can read") from None
    except Exception as error:  # PIL raises many types for broken files
        raise UnreadableImageError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named, the images in folders (recursively, sorted), and glob matches; a name matching nothing is an error."""
    paths: list[Path] = []
    for item in map(str, inputs):
        if Path(item).is_dir():
            paths += sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif Path(item).exists():
            paths.append(Path(item))
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                raise PredictError(f"{item}: the pattern matches no file")
            paths += matches
        else:
            raise PredictError(f"{item}: no such file or folder")
    return paths


def letterbox_batch(images: Sequence[Tensor], input_size: int) -> tuple[Tensor, Tensor]:
    """(B, 3, S, S) uint8 letterboxed images and (B, 2) their original (height, width)."""
    boxed = torch.stack([letterbox_image(image, input_size) for image in images])
    sizes = torch.tensor([tuple(image.shape[1:]) for image in images], dtype=torch.long)
    return boxed, sizes


@torch.inference_mode()
def run_network(detector: Detector, images: Tensor) -> Tensor:
    """Raw head output (float32) of (B, 3, S, S) uint8 letterboxed images; bf16 autocast on CUDA."""
    device = detector.device
    x = to_network_input(images.to(device, non_blocking=True), images.shape[-1])
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return detector.model(x).float()


def detections_of(detector: Detector, output: Tensor, image_sizes: Tensor, config: PostprocessConfig = DISPLAY,
                  label_nodes: Tensor | None = None) -> list[Detections]:
    """Postprocess a raw output of letterboxed images of these (height, width) sizes; results on the CPU."""
    tree = detector.tree_arrays if detector.tree is not None else None
    found = postprocess(output, detector.anchors.to(output.device), image_sizes.to(output.device),
                        detector.input_size, config, tree=tree, label_nodes=label_nodes)
    return [Detections(d.boxes.float().cpu(), d.scores.float().cpu(), d.labels.cpu()) for d in found]


def predict(detector: Detector, images: Sequence[Tensor], config: PostprocessConfig = DISPLAY,
            label_nodes: Tensor | None = None) -> list[Detections]:
    """Detections of (3, H, W) uint8 images of any sizes, in each image's own pixels."""
    if detector.task != "detect":
        raise PredictError(f"the network is a {detector.task} network, not a detector")
    boxed, sizes = letterbox_batch(images, detector.input_size)
    return detections_of(detector, run_network(detector, boxed), sizes, config, label_nodes)


@dataclass
class ImagePrediction:
    """One image file's detections, with the image as read (for drawing)."""

    path: Path
    image: Tensor  # (3, H, W) uint8
    detections: Detections


@dataclass
class FileBatches:
    """Iterate for (paths, images, (B, 2) sizes, raw output) of the readable files, `batch_size` at a time;
    `skipped` names each unreadable file and why."""

    detector: Detector
    paths: Sequence[Path]
    batch_size: int = 8
    exif: bool = True
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise PredictError(f"batch size must be >= 1, got {self.batch_size}")

    def __iter__(self) -> Iterator[tuple[list[Path], list[Tensor], Tensor, Tensor]]:
        pending: list[tuple[Path, Tensor]] = []
        for path in self.paths:
            try:
                pending.append((Path(path), read_image(path, self.exif)))
            except UnreadableImageError as error:
                self.skipped.append((Path(path), str(error)))
                continue
            if len(pending) == self.batch_size:
                yield self.run(pending)
                pending = []
        if pending:
            yield self.run(pending)

    def run(self, pending: list[tuple[Path, Tensor]]) -> tuple[list[Path], list[Tensor], Tensor, Tensor]:
        images = [image for _, image in pending]
        boxed, sizes = letterbox_batch(images, self.detector.input_size)
        return [path for path, _ in pending], images, sizes, run_network(self.detector, boxed)


@dataclass
class FilePredictions:
    """Iterate for the detections of each readable file; `skipped` names each unreadable one and why."""

    batches: FileBatches
    config: PostprocessConfig = DISPLAY
    label_nodes: Tensor | None = None

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return self.batches.skipped

    def __iter__(self) -> Iterator[ImagePrediction]:
        for paths, images, sizes, output in self.batches:
            found = detections_of(self.batches.detector, output, sizes, self.config, self.label_nodes)
            yield from (ImagePrediction(*item) for item in zip(paths, images, found))


def predict_files(detector: Detector, paths: Sequence[str | Path], batch_size: int = 8,
                  config: PostprocessConfig = DISPLAY, label_nodes: Tensor | None = None) -> FilePredictions:
    """Detections of image files, `batch_size` at a time; unreadable files are skipped and listed in `.skipped`."""
    if detector.task != "detect":
        raise PredictError(f"the network is a {detector.task} network, not a detector")
    return FilePredictions(FileBatches(detector, [Path(p) for p in paths], batch_size), config, label_nodes)
