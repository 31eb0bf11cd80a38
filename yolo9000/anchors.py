"""Dimension clusters: k-means over box shapes with d(box, centroid) = 1 − IoU (YOLOv2 paper, §"Dimension Clusters").

Boxes are (w, h) pairs, normalised by the image size, compared as if both were centred at the
origin, so only shape matters. Centroids are updated as the **mean** of their assigned boxes, as in
the paper (the median is a common variant). Initialisation is k-means++ with the squared 1 − IoU
distance as weight, from a seeded `numpy.random.Generator`, so a seed always gives the same anchors.
The anchors come back normalised; `to_grid_units` turns them into darknet's `anchors=` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from atomicio import write_file
from yolo9000.data.schema import read_manifest


class AnchorError(ValueError):
    """Boxes or options that cannot be clustered or plotted; the message says which and how to fix.
    (A manifest that cannot be read raises yolo9000.data.schema.SchemaError.)"""


@dataclass(frozen=True)
class AnchorResult:
    """k anchors sorted by area, the mean IoU of every box with its best anchor, and each box's anchor."""

    anchors: np.ndarray  # (k, 2) normalised w, h, ascending area
    mean_iou: float
    assignment: np.ndarray  # (N,) index into anchors of each box's best anchor
    iterations: int


@dataclass(frozen=True)
class BoxSizes:
    """Normalised (w, h) of every usable box read from manifests, with what was left out and why."""

    wh: np.ndarray  # (N, 2)
    skipped_zero_size: int  # boxes with w <= 0 or h <= 0 (or not finite)
    skipped_crowd: int  # COCO iscrowd regions (manifest column `crowd`): one box around many objects
    rows_without_boxes: int  # classification rows (image_label) and detection images with no boxes


def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, k) IoU of boxes and centroids as (w, h) pairs, both centred at the origin."""
    inter = np.minimum(wh[:, None, 0], centroids[None, :, 0]) * np.minimum(wh[:, None, 1], centroids[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (centroids[:, 0] * centroids[:, 1])[None, :] - inter
    return inter / union


def check_box_sizes(wh: np.ndarray) -> np.ndarray:
    """Return `wh` as an (N, 2) float64 array, refusing empty input and boxes without area."""
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise AnchorError(f"box sizes must have shape (N, 2) as (w, h) pairs, got {wh.shape}")
    if len(wh) == 0:
        raise AnchorError("no boxes to cluster: the input holds no box with positive width and height")
    bad = ~np.all(np.isfinite(wh) & (wh > 0), axis=1)
    if bad.any():
        first = int(np.nonzero(bad)[0][0])
        raise AnchorError(
            f"{int(bad.sum())} boxes have zero or negative size (first: row {first}, w, h = {wh[first].tolist()}); "
            "drop them first (`read_manifest_boxes` skips and counts them)"
        )
    return wh


def kmeans_anchors(
    wh: np.ndarray, k: int, seed: int = 0, iterations: int = 300, restarts: int = 1, init: np.ndarray | None = None
) -> AnchorResult:
    """Cluster box shapes into k anchors with d = 1 − IoU; the best of `restarts` seeded runs by mean IoU.

    Each run starts from k-means++ (or from `init`, (k, 2), for the first run) and stops when no box
    changes cluster or after `iterations` steps; it keeps the centroids with the best mean IoU it saw.
    """
    wh = check_box_sizes(wh)
    if not 1 <= k <= len(wh):
        raise AnchorError(f"k must be between 1 and the number of boxes ({len(wh)}), got {k}")
    if restarts < 1:
        raise AnchorError(f"restarts must be at least 1, got {restarts}")
    if seed < 0:
        raise AnchorError(f"seed must be a non-negative integer, got {seed}")
    if init is not None and np.shape(init) != (k, 2):
        raise AnchorError(f"init must hold k = {k} (w, h) pairs, got shape {np.shape(init)}")
    rng = np.random.default_rng(seed)
    best = None
    for run in range(restarts):
        start = init if (init is not None and run == 0) else kmeans_plus_plus_init(wh, k, rng)
        result = _lloyd(wh, np.asarray(start, dtype=np.float64), iterations)
        if best is None or result.mean_iou > best.mean_iou:
            best = result
    return best


def kmeans_plus_plus_init(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre is a box drawn with probability ∝ (1 − best IoU)²."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = 1.0 - wh_iou(wh, np.array(centres)).max(axis=1)
        weight = distance**2
        total = weight.sum()
        pick = rng.choice(len(wh), p=weight / total) if total > 0 else rng.integers(len(wh))
        centres.append(wh[pick])
    return np.array(centres)


def _lloyd(wh: np.ndarray, centroids: np.ndarray, iterations: int) -> AnchorResult:
    """Assign to the nearest centroid, move centroids to the mean; keep the best state seen by mean IoU."""
    k = len(centroids)
    best_anchors, best_iou, best_assignment, done = centroids, -1.0, None, 0
    previous = None
    for step in range(1, iterations + 1):
        iou = wh_iou(wh, centroids)  # (N, k)
        assignment = iou.argmax(axis=1)
        mean_iou = float(iou.max(axis=1).mean())
        if mean_iou > best_iou:
            best_anchors, best_iou, best_assignment = centroids, mean_iou, assignment
        done = step
        if previous is not None and np.array_equal(assignment, previous):
            break
        previous = assignment
        centroids = _mean_of_assigned(wh, assignment, k)
        centroids = _reseed_empty(wh, centroids, iou.max(axis=1))
    order = np.argsort(best_anchors[:, 0] * best_anchors[:, 1], kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return AnchorResult(best_anchors[order].copy(), best_iou, rank[best_assignment], done)


def _mean_of_assigned(wh: np.ndarray, assignment: np.ndarray, k: int) -> np.ndarray:
    """(k, 2) mean (w, h) of each cluster's boxes; NaN rows mark empty clusters."""
    counts = np.bincount(assignment, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(assignment, weights=wh[:, d], minlength=k) for d in (0, 1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def _reseed_empty(wh: np.ndarray, centroids: np.ndarray, best_iou: np.ndarray) -> np.ndarray:
    """Move each empty cluster onto one of the boxes worst covered by the current centroids."""
    empty = np.nonzero(np.isnan(centroids[:, 0]))[0]
    if len(empty) == 0:
        return centroids
    worst = np.argsort(best_iou, kind="stable")[: len(empty)]
    centroids = centroids.copy()
    centroids[empty] = wh[worst]
    return centroids


def mean_iou_curve(wh: np.ndarray, ks: Sequence[int], seed: int = 0, restarts: int = 3) -> list[AnchorResult]:
    """Cluster for each k (ascending); each k also tries the k−1 anchors plus the worst-covered box, so the curve never dips."""
    wh = check_box_sizes(wh)
    results: list[AnchorResult] = []
    for k in sorted(ks):
        result = kmeans_anchors(wh, k, seed=seed, restarts=restarts)
        if results and len(results[-1].anchors) < k:
            grown = _grow_by_worst_box(wh, results[-1].anchors, k)
            warm = kmeans_anchors(wh, k, seed=seed, restarts=1, init=grown)
            result = warm if warm.mean_iou > result.mean_iou else result
        results.append(result)
    return results


def _grow_by_worst_box(wh: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """Add the boxes worst covered by `anchors` as new centres until there are k (mean IoU can only rise)."""
    best_iou = wh_iou(wh, anchors).max(axis=1)
    worst = np.argsort(best_iou, kind="stable")[: k - len(anchors)]
    return np.concatenate([anchors, wh[worst]])


def check_plot_path(path: str | Path) -> Path:
    """Refuse a plot path that cannot be written: a folder, a missing parent folder, an unknown image format."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.is_dir():
        raise AnchorError(f"--plot {path} is a folder; give a file name such as {path / 'anchors.png'}")
    if not path.parent.is_dir():
        raise AnchorError(f"--plot {path}: the folder {path.parent} does not exist; create it first")
    if path.suffix.lstrip(".").lower() not in formats:
        raise AnchorError(f"--plot {path}: unknown image format {path.suffix or '(none)'!r}; end the name with "
                          f"one of {', '.join('.' + f for f in sorted(formats))}")
    return path


def plot_mean_iou_curve(results: Sequence[AnchorResult], path: str | Path) -> Path:
    """Save mean IoU against k as an image (format from the file name), like the paper's Figure 2 (Agg backend)."""
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [len(r.anchors) for r in results]
    fig, ax = plt.subplots(figsize=(4, 3), dpi=120)
    ax.plot(ks, [r.mean_iou for r in results], marker="o")
    ax.set_xlabel("# clusters (k)")
    ax.set_ylabel("mean IoU")
    ax.set_title("Dimension clusters, d = 1 − IoU")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_file(path, lambda temporary: fig.savefig(temporary, format=path.suffix.lstrip(".").lower()))
    plt.close(fig)
    return path


def to_grid_units(anchors_normalised: np.ndarray, input_size: int = 416, stride: int = 32) -> np.ndarray:
    """Normalised (w, h) → grid-cell units, as in darknet's cfg `anchors=` (13×13 cells at 416)."""
    if input_size < 1 or stride < 1:
        raise AnchorError(f"input size and stride must be positive, got size {input_size}, stride {stride}")
    if input_size % stride:
        raise AnchorError(f"input size {input_size} is not a multiple of the stride {stride}")
    return np.asarray(anchors_normalised, dtype=np.float64) * (input_size // stride)


def darknet_anchors_line(anchors_grid: np.ndarray, decimals: int = 4) -> str:
    """Format grid-unit anchors as a darknet cfg line: `anchors = w0,h0, w1,h1, ...`."""
    pairs = [f"{round(float(w), decimals):g},{round(float(h), decimals):g}" for w, h in anchors_grid]
    return "anchors = " + ", ".join(pairs)


def read_manifest_boxes(paths: Iterable[str | Path]) -> BoxSizes:
    """Normalised (w, h) of every box in Parquet manifests (yolo9000.data.schema.MANIFEST_SCHEMA).

    Boxes may be list<list<float>> (the shard writer's schema) or a flat list of 4·n values. Rows with
    an `image_label` and no boxes add nothing; zero-size and crowd boxes are skipped and counted. A manifest
    given twice is refused (its boxes would count twice).
    """
    paths = [Path(p) for p in paths]
    resolved = [p.resolve() for p in paths]
    repeated = sorted({str(p) for p, r in zip(paths, resolved) if resolved.count(r) > 1})
    if repeated:
        raise AnchorError(f"manifest(s) {repeated} given more than once: their boxes would count twice")
    chunks, skipped, crowds, without = [], 0, 0, 0
    for path in paths:
        wh, crowd, rows_without = _manifest_wh(Path(path))
        usable = np.all(np.isfinite(wh) & (wh > 0), axis=1)
        skipped += int((~usable & ~crowd).sum())
        crowds += int(crowd.sum())
        without += rows_without
        chunks.append(wh[usable & ~crowd])
    wh = np.concatenate(chunks) if chunks else np.zeros((0, 2))
    return BoxSizes(wh, skipped, crowds, without)


def _manifest_wh(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(M, 2) normalised w, h of all boxes in one manifest (unfiltered), (M,) crowd flags, rows with no box."""
    table = read_manifest(path, ["width", "height", "boxes"], optional=["crowd"])
    corners, per_row = _box_corners(table.column("boxes").combine_chunks(), path)  # (M, 4), (R,)
    width = np.repeat(table.column("width").to_numpy(zero_copy_only=False).astype(np.float64), per_row)
    height = np.repeat(table.column("height").to_numpy(zero_copy_only=False).astype(np.float64), per_row)
    with np.errstate(invalid="ignore", divide="ignore"):
        wh = np.stack([(corners[:, 2] - corners[:, 0]) / width, (corners[:, 3] - corners[:, 1]) / height], axis=1)
    return wh, _crowd_flags(table, per_row, path), int((per_row == 0).sum())


def _crowd_flags(table, per_row: np.ndarray, path: Path) -> np.ndarray:
    """(M,) bool: the box is a crowd region; all False when the manifest has no `crowd` column."""
    import pyarrow.compute as pc

    if "crowd" not in table.column_names:
        return np.zeros(int(per_row.sum()), dtype=bool)
    crowd = table.column("crowd").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(crowd), 0).to_numpy(zero_copy_only=False)
    if np.any(lengths != per_row):
        row = int(np.nonzero(lengths != per_row)[0][0])
        raise AnchorError(f"{path}: row {row} has {per_row[row]} boxes but {lengths[row]} crowd flags; one per box")
    return pc.fill_null(pc.list_flatten(crowd), False).to_numpy(zero_copy_only=False).astype(bool)


def _box_corners(boxes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(M, 4) x0 y0 x1 y1 from a list<list<float>> or a flat list<float> (4·n values) column, and boxes per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_list(boxes.type) and not pa.types.is_large_list(boxes.type):
        raise AnchorError(f"{path}: column 'boxes' must be a list, got {boxes.type}")
    lengths = pc.fill_null(pc.list_value_length(boxes), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(boxes)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        inner = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if np.any(inner != 4):
            row = int(np.searchsorted(np.cumsum(lengths), int(np.nonzero(inner != 4)[0][0]), side="right"))
            raise AnchorError(f"{path}: row {row} has a box without exactly 4 values (x0, y0, x1, y1)")
        flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float64)
        return flat.reshape(-1, 4), lengths
    if np.any(lengths % 4):
        row = int(np.nonzero(lengths % 4)[0][0])
        raise AnchorError(f"{path}: row {row} has {lengths[row]} box values, not a multiple of 4 (x0, y0, x1, y1)")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(-1, 4), lengths // 4
