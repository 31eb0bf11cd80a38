"""Detections → what a user reads: boxes with their WordTree label, path to the root and probability, drawn on
the image and written as one JSON.

    summary = detect_files(detector, ["photos/"], "out/", config=DISPLAY)   # out/<image>, out/detections.json

The label of a box is its top-down WordTree label (postprocess, hier_thresh), or with a label set (darknet's
`map=`: COCO's 80, VOC's 20) the label-set class it was scored for. `probability` is the box's score,
objectness × the label's absolute probability. Labels are drawn as text on a filled tag of the box's
colour, black or white whichever contrasts more, so they read on any background.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from tqdm import tqdm

from yolo9000.postprocess import DISPLAY, Detections, PostprocessConfig
from yolo9000.predict import Detector, LabelSet, image_paths, predict_files
from atomicio import write_file

ANNOTATED_SUFFIXES = (".jpg", ".jpeg", ".png")


def box_records(detector: Detector, detections: Detections, labels: LabelSet | None = None) -> list[dict]:
    """One dict per box: box (x0 y0 x1 y1 pixels), label, wnid, node, path (names up to the root), probability."""
    nodes = detections.labels if labels is None else labels.nodes[detections.labels]
    records = []
    for box, score, node in zip(detections.boxes.tolist(), detections.scores.tolist(), nodes.tolist()):
        path = detector.tree.path_to_root(node) if detector.tree is not None else [node]
        records.append({"box": [round(v, 2) for v in box], "label": detector.names[node], "wnid": detector.labels[node],
                        "node": node, "path": [detector.names[n] for n in path], "probability": round(score, 6)})
    return records


def label_colour(node: int) -> tuple[int, int, int]:
    """A distinct, stable, saturated colour per class (golden-ratio hues)."""
    red, green, blue = colorsys.hsv_to_rgb((node * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tags, white on dark ones (ITU-R BT.601 luma)."""
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def draw_boxes(image: Tensor, records: Sequence[dict], min_side: int = 0) -> Image.Image:
    """The (3, H, W) uint8 image with each box outlined and tagged `label probability%` above it (inside at the top
    edge); enlarged first so its short side is at least `min_side`, where tags would not fit a small image."""
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    scale = max(1.0, min_side / min(picture.size))
    if scale > 1:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.BILINEAR)
    draw = ImageDraw.Draw(picture)
    side = min(picture.size)
    width = max(2, round(side / 200))
    font = ImageFont.load_default(size=max(11, round(side / 32)))
    for record in records:
        colour = label_colour(record["node"])
        x0, y0, x1, y1 = (value * scale for value in record["box"])
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{record['label']} {record['probability']:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tag_height = bottom - top + 2 * width
        tag_top = y0 - tag_height if y0 - tag_height >= 0 else y0
        tag_left = min(x0, max(0, picture.width - (right - left) - 2 * width))
        draw.rectangle([tag_left, tag_top, tag_left + right - left + 2 * width, tag_top + tag_height], fill=colour)
        draw.text((tag_left + width - left, tag_top + width - top), text, fill=text_colour(colour), font=font)
    return picture


def output_name(path: Path, taken: set[str]) -> str:
    """The annotated file's name: the input's (as .jpg unless .png), made unique among `taken`."""
    suffix = path.suffix.lower() if path.suffix.lower() in ANNOTATED_SUFFIXES else ".jpg"
    name, number = f"{path.stem}{suffix}", 1
    while name in taken:
        name, number = f"{path.stem}-{number}{suffix}", number + 1
    taken.add(name)
    return name


def save_picture(picture: Image.Image, path: Path) -> None:
    """Write through a temporary name (JPEG quality 90 unless the name ends in .png)."""
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    write_file(path, lambda p: picture.save(p, format=fmt, **({"quality": 90} if fmt == "JPEG" else {})))


@dataclass
class DetectSummary:
    """What detect_files wrote and what it skipped."""

    json_path: Path
    images: list[dict] = field(default_factory=list)  # per image: file, width, height, output, detections
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        return sum(len(image["detections"]) for image in self.images)


def detect_files(detector: Detector, inputs: Sequence[str | Path], output: str | Path,
                 config: PostprocessConfig = DISPLAY, labels: LabelSet | None = None, json_path: str | Path | None = None,
                 batch_size: int = 8, progress: bool = True, draw_min_side: int = 0) -> DetectSummary:
    """Detect in images, folders and globs; write annotated images (short side at least `draw_min_side`) and one
    JSON of boxes (in the input's pixels).

    `output` is a folder (OUT/<image name>, OUT/detections.json), or, for a single input image, the annotated
    image's file name (its JSON beside it). Unreadable files are skipped and listed in the JSON and summary.
    """
    paths = image_paths(inputs)
    output = Path(output)
    single_file = len(paths) == 1 and output.suffix.lower() in ANNOTATED_SUFFIXES
    folder = output.parent if single_file else output
    folder.mkdir(parents=True, exist_ok=True)
    summary = DetectSummary(Path(json_path) if json_path else (output.with_suffix(".json") if single_file
                                                                else folder / "detections.json"))
    run = predict_files(detector, paths, batch_size, config, None if labels is None else labels.nodes.to(detector.device))
    taken: set[str] = set()
    for item in tqdm(run, total=len(paths), unit="image", desc="detect", disable=not progress or len(paths) < 2):
        records = box_records(detector, item.detections, labels)
        target = output if single_file else folder / output_name(item.path, taken)
        save_picture(draw_boxes(item.image, records, draw_min_side), target)
        summary.images.append({"file": str(item.path), "width": int(item.image.shape[2]), "height": int(item.image.shape[1]),
                               "output": str(target), "detections": records})
    summary.skipped = list(run.skipped)
    document = {"images": summary.images, "skipped": [{"file": str(p), "reason": r} for p, r in summary.skipped],
                "settings": {"thresh": config.score_threshold, "hier_thresh": config.hier_thresh,
                             "nms": config.iou_threshold}}
    write_file(summary.json_path, lambda p: p.write_text(json.dumps(document, indent=1)))
    return summary
