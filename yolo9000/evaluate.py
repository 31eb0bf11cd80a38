"""Detection and classification metrics: COCO AP through pycocotools, VOC AP, AP per class and per group,
the top-down label of matched objects, hierarchical top-1 / top-5.

    result = evaluate_shards(detector, "shards/coco-val", settings)          # a training loop may call this every N steps
    result = evaluate_coco_images(detector, "instances_val2017.json", "val2017/", settings)
    result = evaluate_results_file("instances_val2017.json", "results.json") # any detector's COCO result rows
    print(summary_table(result)); write_json(result, "eval.json"); plot_pr_curves(result, "pr.png")

Our detections are written as COCO result rows and scored by pycocotools, so the numbers are those users
get elsewhere. With a WordTree, a box's score for a class is objectness × the class's absolute tree
probability (postprocess.label_set_scores), so any label set in the tree can be evaluated. Crowd boxes, and
VOC's difficult boxes, are regions to ignore: `iscrowd` for pycocotools, "difficult" for the VOC AP.
VOC AP follows the VOC devkit (voc_eval.py): detections by descending score, each matched to the truth of
highest IoU in its image; IoU > .5 with a truth not yet taken is a true positive; IoUs are those of
continuous boxes (no +1 pixel).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from tqdm import tqdm

from wordtree.labelsets import label_map
from yolo9000.data.labelmap import LabelMap, manifest_box_wnids, manifest_wnids
from yolo9000.data.loader import Loader, LoaderConfig, SourceConfig
from yolo9000.data.schema import read_manifest
from yolo9000.data.stream import list_shards
from yolo9000.geometry import paired_box_iou, xywh_to_corners
from yolo9000.hierarchy import TreeArrays, absolute_log_probs, group_log_softmax, top_down_decode_logits
from yolo9000.postprocess import (
    Detections,
    PostprocessConfig,
    boxes_and_objectness,
    candidate_logits,
    head_view,
    to_coco_results,
)
from yolo9000.predict import Detector, FileBatches, detections_of, label_set, run_network
from atomicio import write_file

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BOXED, UNBOXED = "boxed", "unboxed"  # classes with and without boxes in the training run's manifests


class EvaluationError(ValueError):
    """Ground truth, detections or groups that cannot be evaluated together; the message names the file."""


@dataclass
class EvaluationSettings:
    """How detections are produced and grouped; defaults are darknet's validate_detector settings."""

    score_threshold: float = 0.005  # darknet's validation threshold; under-trained heads need ~1e-4
    iou_threshold: float = 0.45  # NMS
    max_detections: int = 100  # per image (COCO's maxDets)
    hier_thresh: float = 0.5  # top-down labels
    label_set: str | None = None  # coco | voc | FILE; default: the classes of the validation set
    train_manifests: list[str] = field(default_factory=list)  # boxed vs unboxed classes
    groups_file: str | None = None  # `group<TAB>wnid-or-name` lines
    batch_size: int = 8
    workers: int = 2
    progress: bool = False

    def postprocess_config(self) -> PostprocessConfig:
        return PostprocessConfig(score_threshold=self.score_threshold, iou_threshold=self.iou_threshold,
                                 max_detections=self.max_detections, hier_thresh=self.hier_thresh)


@dataclass
class EvaluationResult:
    """Everything one evaluation measured; `to_dict()` is what the JSON holds (NaN written as null)."""

    images: int = 0
    skipped: int = 0
    detections: int = 0
    coco: dict[str, float] = field(default_factory=dict)
    voc: dict[str, float] = field(default_factory=dict)
    classes: list[dict] = field(default_factory=list)  # per class: wnid, name, truths, detections, APs, groups
    groups: dict[str, dict] = field(default_factory=dict)
    top_down_exact: dict[str, dict] = field(default_factory=dict)  # per group: objects, matched, exact, share
    classification: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)  # class → recall, precision
    rows: list[dict] = field(default_factory=list, repr=False)  # the COCO result rows scored

    def to_dict(self) -> dict:
        """Plain JSON values; NaN (undefined, e.g. a class without truths) becomes None."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("curves", "rows")}
        if UNBOXED in self.top_down_exact:
            values["top_down_exact_unboxed"] = self.top_down_exact[UNBOXED]["share"]
        return _without_nan(values)

    def scalars(self) -> dict[str, float]:
        """The headline numbers as one flat {name: value} dict (for a training loop's metrics report)."""
        flat = {f"coco/{k}": v for k, v in self.coco.items()}
        flat.update({f"voc/{k}": v for k, v in self.voc.items()})
        for group, summary in self.groups.items():
            flat.update({f"{group}/{k}": v for k, v in summary.items() if k in ("AP", "AP50", "voc_ap_area")})
        flat.update({f"top_down_exact/{group}": share["share"] for group, share in self.top_down_exact.items()})
        flat.update({f"classification/{k}": v for k, v in self.classification.items() if k != "images"})
        return {k: float(v) for k, v in flat.items()}


def _without_nan(value):
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------- ground truth


@dataclass
class Categories:
    """The evaluated classes: COCO category ids and, per category, its wnid, name and detector class index."""

    ids: list[int]
    wnids: list[str]
    names: list[str]
    nodes: Tensor | None = None  # (K,) detector class indices; None when scoring a results file


def quiet_coco(dataset: dict) -> COCO:
    """A pycocotools COCO object of an in-memory dataset, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_json(path: str | Path):
    """The JSON value in a file; a missing or malformed file is named."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise EvaluationError(f"{path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not JSON ({error})") from None


def load_coco_json(path: str | Path) -> COCO:
    """A COCO instances file; a missing or malformed file is named."""
    dataset = read_json(path)
    if not isinstance(dataset, dict) or not {"images", "annotations", "categories"} <= set(dataset):
        raise EvaluationError(f"{path}: not a COCO instances file (needs 'images', 'annotations' and 'categories')")
    return quiet_coco(dataset)


def manifest_truth(manifest: str | Path, wnids: Sequence[str],
                   ancestors: dict[str, list[str]] | None = None) -> tuple[COCO, dict[str, int]]:
    """COCO ground truth of the detection rows of a manifest, for these classes (category k + 1 = wnids[k]);
    and the image id of every sample key. Crowd and difficult boxes are `iscrowd` regions.

    With a tree (`ancestors`: wnid -> its ancestors' wnids), a box is also a truth of every evaluated
    ancestor of its label: a right triangle is a triangle (`own: false` marks those copies)."""
    table = read_manifest(manifest, ["key", "width", "height", "boxes", "labels", "crowd", "difficult", "image_label"])
    rows = table.to_pydict()
    detection = [i for i, label in enumerate(rows["image_label"]) if label is None]
    category = {wnid: k + 1 for k, wnid in enumerate(wnids)}
    images, annotations = [], []
    for image_id, row in enumerate(detection, start=1):
        images.append({"id": image_id, "width": rows["width"][row], "height": rows["height"][row],
                       "file_name": rows["key"][row]})
        crowd = rows["crowd"][row] or [False] * len(rows["labels"][row])
        difficult = rows["difficult"][row] or [False] * len(rows["labels"][row])
        for box, wnid, is_crowd, is_difficult in zip(rows["boxes"][row] or [], rows["labels"][row] or [], crowd, difficult):
            x, y, w, h = float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])
            for label in [wnid, *(ancestors or {}).get(wnid, [])]:
                if label in category:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[label],
                                        "bbox": [x, y, w, h], "area": w * h, "own": label == wnid,
                                        "iscrowd": int(bool(is_crowd or is_difficult))})
    categories = [{"id": k + 1, "name": wnid, "wnid": wnid} for k, wnid in enumerate(wnids)]
    keys = {rows["key"][row]: image_id for image_id, row in enumerate(detection, start=1)}
    return quiet_coco({"images": images, "annotations": annotations, "categories": categories}), keys


def tree_ancestors(detector: Detector) -> dict[str, list[str]]:
    """wnid -> the wnids of its ancestors in the detector's tree (nothing for flat classes)."""
    tree = detector.tree
    if tree is None:
        return {}
    return {wnid: [tree.wnids[a] for a in tree.path_to_root(i)[1:]] for i, wnid in enumerate(tree.wnids)}


def coco_category_wnids(gt: COCO) -> list[str | None]:
    """The wnid of each COCO category (a `wnid` field, else its name through wordtree's coco.map), None if unknown."""
    names_to_wnids = label_map("coco")
    return [c.get("wnid") or names_to_wnids.get(c["name"]) for c in gt.dataset["categories"]]


def detector_categories(detector: Detector, gt: COCO) -> Categories:
    """The detector class of each COCO category: by wnid (tree or checkpoint labels) or by name (darknet names)."""
    index = {label: i for i, label in enumerate(detector.labels)}
    categories = gt.dataset["categories"]
    wnids = coco_category_wnids(gt)
    nodes = [index.get(w) if w in index else index.get(c["name"]) for c, w in zip(categories, wnids)]
    missing = [c["name"] for c, node in zip(categories, nodes) if node is None]
    if missing:
        raise EvaluationError(f"{len(missing)} categories are not classes of the detector: {', '.join(missing[:20])}; "
                              "name them as in wordtree's coco.map or give a `wnid` field per category")
    return Categories([c["id"] for c in categories], [w or c["name"] for c, w in zip(categories, wnids)],
                      [c["name"] for c in categories], torch.tensor(nodes))


def evaluated_wnids(detector: Detector, manifest: str | Path, settings: EvaluationSettings) -> tuple[list[str], Tensor, list[str]]:
    """(wnids, detector nodes, names) of the classes to evaluate: the label set, else every class with boxes in the
    validation manifest and, with a tree, their ancestors (all must be classes of the detector)."""
    if settings.label_set is not None:
        chosen = label_set(detector, settings.label_set)
        return chosen.wnids, chosen.nodes, chosen.names
    wnids = sorted(manifest_box_wnids(manifest))
    wnids += sorted({a for w in wnids for a in tree_ancestors(detector).get(w, [])} - set(wnids))
    index = {label: i for i, label in enumerate(detector.labels)}
    missing = [w for w in wnids if w not in index]
    if missing:
        raise EvaluationError(f"{manifest}: {len(missing)} box labels are not classes of the detector: "
                              f"{', '.join(missing[:20])}; evaluate a --label-set the detector knows")
    nodes = torch.tensor([index[w] for w in wnids], dtype=torch.long)
    return wnids, nodes, [detector.names[int(n)] for n in nodes]


# ---------------------------------------------------------------- COCO metrics (pycocotools)


def check_results(gt: COCO, rows: list[dict], where: str = "results") -> None:
    """Refuse result rows whose image or category ids the ground truth does not have, naming them."""
    bad_images = sorted({r["image_id"] for r in rows} - set(gt.getImgIds()))
    if bad_images:
        raise EvaluationError(f"{where}: {len(bad_images)} image ids are not in the ground truth: {bad_images[:10]}")
    bad_categories = sorted({r["category_id"] for r in rows} - set(gt.getCatIds()))
    if bad_categories:
        raise EvaluationError(f"{where}: category ids {bad_categories[:10]} are not in the ground truth")


def coco_evaluation(gt: COCO, rows: list[dict]) -> COCOeval:
    """pycocotools' bbox evaluation of result rows (copied: loadRes writes into them), evaluated and accumulated."""
    with contextlib.redirect_stdout(io.StringIO()):
        if rows:
            results = gt.loadRes([dict(r) for r in rows])
        else:  # loadRes refuses an empty list; no detections is a valid result
            results = quiet_coco({"images": gt.dataset["images"], "annotations": [],
                                  "categories": copy.deepcopy(gt.dataset["categories"])})
        evaluation = COCOeval(gt, results, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def coco_class_ap(evaluation: COCOeval) -> dict[str, np.ndarray]:
    """Per category (in category order): AP over IoU .5:.95, AP50, AP75 from the precision array (NaN: no truths)."""
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (T, R, K) area all, maxDets 100
    valid = precision > -1
    with np.errstate(invalid="ignore"):
        ap = np.where(valid, precision, 0).sum((0, 1)) / valid.sum((0, 1))
        ap50 = np.where(valid[0], precision[0], 0).sum(0) / valid[0].sum(0)
        ap75 = np.where(valid[5], precision[5], 0).sum(0) / valid[5].sum(0)
    return {"AP": ap, "AP50": ap50, "AP75": ap75}


# ---------------------------------------------------------------- VOC metrics


def same_key_pairs(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Every (i, j) with a[i] == b[j] for integer keys, without building an |a| x |b| matrix."""
    order = torch.argsort(b, stable=True)
    sorted_b = b[order]
    start = torch.searchsorted(sorted_b, a, side="left")
    count = torch.searchsorted(sorted_b, a, side="right") - start
    left = torch.repeat_interleave(torch.arange(len(a)), count)
    step = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return left, order[start[left] + step]


def best_truth(det_key: Tensor, det_box: Tensor, gt_key: Tensor, gt_box: Tensor) -> tuple[Tensor, Tensor]:
    """(D,) highest IoU of each detection with a truth of the same key (0 if none) and that truth (first on ties; -1)."""
    det, gt = same_key_pairs(det_key, gt_key)
    iou = paired_box_iou(det_box[det], gt_box[gt])
    best = torch.zeros(len(det_key), dtype=iou.dtype).scatter_reduce(0, det, iou, "amax", include_self=True)
    at_best = iou == best[det]
    first = torch.full((len(det_key),), len(gt_key), dtype=torch.long)
    first = first.scatter_reduce(0, det[at_best], gt[at_best], "amin", include_self=True)
    return best, torch.where(first < len(gt_key), first, -1)


def voc_match(det_key: Tensor, det_score: Tensor, det_box: Tensor, gt_key: Tensor, gt_box: Tensor,
              gt_difficult: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """(D,) true positive, (D,) ignored (matched to a difficult truth) per detection, as voc_eval.py decides.

    Keys join detections and truths of the same image and class. A detection takes the truth of highest IoU;
    IoU > threshold with a truth that is not difficult: the highest-scored such detection of each truth is a
    true positive, later ones are false positives; a difficult truth makes it neither.
    """
    overlap, truth = best_truth(det_key, det_box, gt_key, gt_box)
    matched = (overlap > iou_threshold) & (truth >= 0)
    difficult = gt_difficult[truth.clamp(min=0)] & matched
    claims = matched & ~difficult
    rank = torch.empty_like(det_key)
    rank[torch.argsort(-det_score, stable=True)] = torch.arange(len(det_key))
    first = torch.full((len(gt_key) + 1,), len(det_key), dtype=torch.long)
    first = first.scatter_reduce(0, torch.where(claims, truth, len(gt_key)), rank, "amin", include_self=True)
    return claims & (rank == first[truth.clamp(min=0)]), difficult


def voc_ap(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    """VOC AP of a PR curve: the 2007 11-point mean of interpolated precision, or the area under the envelope."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


@dataclass
class VocClasses:
    """VOC AP per category (category order) and each category's PR curve."""

    ap_11point: np.ndarray
    ap_area: np.ndarray
    truths: np.ndarray  # (K,) truths that count (not difficult / crowd)
    detections: np.ndarray  # (K,)
    curves: list[tuple[np.ndarray, np.ndarray]]


def voc_metrics(gt: COCO, rows: list[dict], iou_threshold: float = 0.5) -> VocClasses:
    """VOC AP of COCO result rows against COCO ground truth (`iscrowd` or `difficult` truths are difficult)."""
    category_ids = [c["id"] for c in gt.dataset["categories"]]
    position = {c: k for k, c in enumerate(category_ids)}
    annotations = gt.dataset["annotations"]
    gt_image = torch.tensor([a["image_id"] for a in annotations], dtype=torch.long)
    gt_class = torch.tensor([position.get(a["category_id"], -1) for a in annotations], dtype=torch.long)
    gt_box = xywh_to_corners(torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64).reshape(-1, 4))
    gt_difficult = torch.tensor([bool(a.get("iscrowd", 0) or a.get("difficult", 0)) for a in annotations],
                                dtype=torch.bool)
    det_image = torch.tensor([r["image_id"] for r in rows], dtype=torch.long)
    det_class = torch.tensor([position[r["category_id"]] for r in rows], dtype=torch.long)
    det_score = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
    det_box = xywh_to_corners(torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4))
    classes = len(category_ids)
    true_positive, ignored = voc_match(det_image * classes + det_class, det_score, det_box,
                                       gt_image * classes + gt_class, gt_box, gt_difficult, iou_threshold)
    counted = torch.bincount(gt_class[(gt_class >= 0) & ~gt_difficult], minlength=classes).numpy()
    order = torch.argsort(-det_score, stable=True)
    order = order[~ignored[order]]
    ap_11, ap_area, curves = np.full(classes, np.nan), np.full(classes, np.nan), []
    for k in range(classes):  # one PR curve per class
        hits = true_positive[order[det_class[order] == k]].numpy()
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        recall = tp / max(counted[k], 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        curves.append((recall, precision))
        if counted[k]:
            ap_11[k], ap_area[k] = voc_ap(recall, precision, True), voc_ap(recall, precision, False)
    detections = torch.bincount(det_class, minlength=classes).numpy()
    return VocClasses(ap_11, ap_area, counted, detections, curves)


# ---------------------------------------------------------------- groups


def read_groups(path: str | Path, wnids: Sequence[str], names: Sequence[str]) -> dict[str, list[int]]:
    """{group: category positions} from `group<TAB>wnid` or `group<TAB>name` lines (# comments allowed)."""
    position = {**{n: k for k, n in enumerate(names)}, **{w: k for k, w in enumerate(wnids)}}
    groups: dict[str, list[int]] = {}
    unknown = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        parts = line.split(None, 1) if "\t" not in line else line.split("\t", 1)
        if len(parts) != 2:
            raise EvaluationError(f"{path}:{number}: expected 'group<TAB>wnid or class name', got {line!r}")
        group, member = parts[0].strip(), parts[1].strip()
        if member not in position:
            unknown.append(f"{member} (line {number})")
            continue
        groups.setdefault(group, []).append(position[member])
    if unknown:
        raise EvaluationError(f"{path}: {len(unknown)} members are not evaluated classes: {', '.join(unknown[:20])}")
    return groups


def class_groups(wnids: Sequence[str], names: Sequence[str], settings: EvaluationSettings) -> dict[str, list[int]]:
    """Category positions per group: boxed / unboxed from the training manifests, plus any groups from a file."""
    groups: dict[str, list[int]] = {}
    if settings.train_manifests:
        boxed = set().union(*(manifest_box_wnids(m) for m in settings.train_manifests))
        groups[BOXED] = [k for k, w in enumerate(wnids) if w in boxed]
        groups[UNBOXED] = [k for k, w in enumerate(wnids) if w not in boxed]
    if settings.groups_file:
        groups.update(read_groups(settings.groups_file, wnids, names))
    return groups


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def group_summary(classes: list[dict], members: list[int]) -> dict:
    """Mean AP of a group's classes that have truths (classes without truths are left out, as pycocotools does)."""
    chosen = [classes[k] for k in members]
    summary = {"classes": len(chosen), "with_truths": sum(1 for c in chosen if c["truths"] > 0)}
    for metric in ("AP", "AP50", "AP75", "voc_ap_11point", "voc_ap_area"):
        summary[metric] = _mean(np.array([c[metric] for c in chosen], dtype=float))
    return summary


# ---------------------------------------------------------------- top-down labels of matched objects


def top_down_exact_share(truth_image: Tensor, truth_box: Tensor, truth_node: Tensor, det_image: Tensor,
                         det_box: Tensor, det_score: Tensor, det_node: Tensor, tree: TreeArrays,
                         iou_threshold: float = 0.5) -> dict[str, float]:
    """Of these objects, how many a detection matches at IoU >= threshold (its highest-scored one), and the share of
    those whose top-down label is exactly the object's class (`coarser`: a proper ancestor of it instead)."""
    truth, det = same_key_pairs(truth_image, det_image)
    overlapping = paired_box_iou(truth_box[truth], det_box[det]) >= iou_threshold
    truth, det = truth[overlapping], det[overlapping]
    best = torch.full((len(truth_image),), -1.0, dtype=det_score.dtype)
    best = best.scatter_reduce(0, truth, det_score[det], "amax", include_self=True)
    top = det_score[det] == best[truth]
    chosen = torch.full((len(truth_image),), len(det_image), dtype=torch.long)
    chosen = chosen.scatter_reduce(0, truth[top], det[top], "amin", include_self=True)
    matched = chosen < len(det_image)
    label = det_node[chosen[matched]]
    exact = int((label == truth_node[matched]).sum())
    paths = tree.paths.cpu()[truth_node[matched]]  # (m, D): the object's class and its ancestors
    coarser = int(((paths[:, 1:] == label[:, None]).any(1)).sum())
    count = int(matched.sum())
    return {"objects": len(truth_image), "matched": count, "exact": exact, "coarser": coarser,
            "share": exact / count if count else float("nan")}


# ---------------------------------------------------------------- classification


def classification_hits(class_logits: Tensor, labels: Tensor, tree: TreeArrays, candidates: Tensor,
                        hier_thresh: float = 0.5) -> dict[str, int]:
    """Hit counts of (N, C) logits for (N,) true nodes: top-1 / top-5 by absolute probability among `candidates`,
    top-down (every ancestor of the truth the most probable of its siblings; the truth within the top 1 / 5 of its
    own siblings), and `top_down_exact`: the label decoded top-down with hier_thresh is the truth."""
    conditional = group_log_softmax(class_logits.float(), tree)
    absolute = absolute_log_probs(conditional, tree)
    ranked = candidates[absolute[:, candidates].topk(min(5, len(candidates)), dim=1).indices]  # (N, k)
    hit = ranked == labels[:, None]
    path = tree.paths[labels]  # (N, D): truth, parent, ..., root
    on_path = path >= 0
    members = tree.members[tree.group[path.clamp(min=0)]]  # (N, D, S)
    values = conditional.gather(1, members.clamp(min=0).flatten(1)).view(members.shape)
    node_value = conditional.gather(1, path.clamp(min=0))[..., None]
    ahead = (members >= 0) & ((values > node_value) | ((values == node_value) & (members < path[..., None])))
    rank = ahead.sum(-1)  # (N, D) siblings ranked before the path node
    ancestors_first = ((rank[:, 1:] == 0) | ~on_path[:, 1:]).all(1)
    decoded, _ = top_down_decode_logits(class_logits.float(), tree, hier_thresh)
    return {
        "images": len(labels),
        "top1": int(hit[:, :1].any(1).sum()),
        "top5": int(hit.any(1).sum()),
        "top1_top_down": int((ancestors_first & (rank[:, 0] == 0)).sum()),
        "top5_top_down": int((ancestors_first & (rank[:, 0] < 5)).sum()),
        "top_down_exact": int((decoded == labels).sum()),
    }


def image_class_logits(detector: Detector, output: Tensor) -> Tensor:
    """(B, C) class logits of each image: a classifier's output, or a detector's at its most confident box."""
    if detector.task == "classify":
        return output
    raw, anchors = head_view(output, detector.anchors.to(output.device))
    _, objectness = boxes_and_objectness(raw, anchors)
    return candidate_logits(raw, torch.arange(len(raw), device=raw.device), objectness.argmax(1))


def accuracy(counts: dict[str, int]) -> dict[str, float]:
    """Shares of the hit counts (NaN without images)."""
    images = counts.get("images", 0)
    return {"images": images, **{k: (v / images if images else float("nan")) for k, v in counts.items() if k != "images"}}


# ---------------------------------------------------------------- runs


@dataclass
class DetectionRun:
    """What a pass over validation images collects: COCO rows, top-down detections, classification counts."""

    rows: list[dict] = field(default_factory=list)
    top_down: list[tuple[int, Detections]] = field(default_factory=list)  # (image id, detections with tree nodes)
    class_counts: dict[str, int] = field(default_factory=dict)

    def add_counts(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            self.class_counts[name] = self.class_counts.get(name, 0) + value


def collect_detections(detector: Detector, run: DetectionRun, output: Tensor, sizes: Tensor, image_ids: list[int],
                       categories: Categories, settings: EvaluationSettings) -> None:
    """Score one batch's outputs for the evaluated categories (COCO rows) and, with a tree, top-down."""
    config = settings.postprocess_config()
    found = detections_of(detector, output, sizes, config, categories.nodes.to(output.device))
    run.rows += to_coco_results(found, image_ids, categories.ids)
    if detector.tree is not None:
        run.top_down += list(zip(image_ids, detections_of(detector, output, sizes, config)))


def with_eval_mode(function):
    """Run `function(detector, ...)` with the network in eval mode, restoring its mode after (training loops)."""
    @functools.wraps(function)
    def wrapper(detector: Detector, *args, **kwargs):
        was_training = detector.model.training
        detector.model.eval()
        try:
            return function(detector, *args, **kwargs)
        finally:
            detector.model.train(was_training)
    return wrapper


@with_eval_mode
def evaluate_shards(detector: Detector, data: str | Path | list[str], settings: EvaluationSettings | None = None,
                    manifest: str | Path | None = None) -> EvaluationResult:
    """Evaluate on validation shards (the loader's evaluation letterbox path) against their manifest.parquet.

    Detection rows give COCO / VOC AP, per class and per group; classification rows (an image_label) give
    hierarchical top-1 / top-5. `data` is a shard folder (its manifest beside the shards) or shard urls.
    """
    settings = settings or EvaluationSettings()
    if manifest is None and not Path(str(data)).is_dir():
        raise EvaluationError(f"{data}: give the manifest.parquet of these shards (--manifest FILE)")
    manifest = Path(manifest) if manifest is not None else Path(data) / "manifest.parquet"
    rows = read_manifest(manifest, ["key", "image_label"]).to_pydict()
    image_label = dict(zip(rows["key"], rows["image_label"]))  # sample key → wnid, None for detection rows
    categories, image_ids, gt = None, {}, None
    if any(label is None for label in image_label.values()):
        if detector.task == "classify":
            raise EvaluationError(f"{manifest}: detection rows (no image_label), but the network is a classifier")
        wnids, nodes, names = evaluated_wnids(detector, manifest, settings)
        gt, image_ids = manifest_truth(manifest, wnids, tree_ancestors(detector))
        categories = Categories(list(range(1, len(wnids) + 1)), wnids, names, nodes)
    node_of = image_label_nodes(detector, image_label.values())
    candidates = classification_candidates(detector, node_of, settings)
    run, loader = DetectionRun(), evaluation_loader(detector, list_shards(data), manifest, settings)
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not settings.progress):
        output = run_network(detector, batch["images"])
        unknown = [key for key in batch["keys"] if key not in image_label]
        if unknown:
            raise EvaluationError(f"samples {unknown[:5]} of the shards are not in {manifest}: give their manifest")
        labels = [image_label[key] for key in batch["keys"]]  # which samples are classification ones: the manifest says
        detection = [i for i, label in enumerate(labels) if label is None]
        if detection:
            index = torch.tensor(detection)
            collect_detections(detector, run, output[index.to(output.device)], batch["orig_sizes"][index],
                               [image_ids[batch["keys"][i]] for i in detection], categories, settings)
        if len(detection) < len(labels):
            index = torch.tensor([i for i, label in enumerate(labels) if label is not None])
            truth = torch.tensor([node_of[labels[i]] for i in index.tolist()], device=output.device)
            logits = image_class_logits(detector, output[index.to(output.device)])
            run.add_counts(classification_hits(logits, truth, detector.tree_arrays, candidates, settings.hier_thresh))
    result = score_run(run, gt, categories, detector, settings)
    result.skipped = loader.stats["corrupt_samples"]
    result.images = sum(loader.stats["source_counts"].values()) - result.skipped
    return result


def image_label_nodes(detector: Detector, image_labels: Iterable[str | None]) -> dict[str, int]:
    """The detector class of every image label of the validation set; an unknown one is an error listing them."""
    index = {label: i for i, label in enumerate(detector.labels)}
    wnids = sorted({w for w in image_labels if w is not None})
    missing = [w for w in wnids if w not in index]
    if missing:
        raise EvaluationError(f"{len(missing)} image labels are not classes of the network: {', '.join(missing[:20])}")
    return {w: index[w] for w in wnids}


def classification_candidates(detector: Detector, image_label_nodes: dict[str, int], settings: EvaluationSettings) -> Tensor:
    """Nodes ranked for top-k: the label set's, else the distinct image labels of the validation set."""
    if settings.label_set is not None:
        return label_set(detector, settings.label_set).nodes.to(detector.device)
    return torch.tensor(sorted(image_label_nodes.values()), dtype=torch.long, device=detector.device)


def evaluation_loader(detector: Detector, shards: list[str], manifest: Path, settings: EvaluationSettings) -> Loader:
    """One pass over the shards through the loader's evaluation letterbox path (no augmentation, no resampling).

    The loader supplies images, sizes and keys; truths and image labels come from the manifest, so its label
    map only has to know every wnid there.
    """
    config = LoaderConfig(sources=[SourceConfig("validation", shards)], batch_size=settings.batch_size,
                          image_size=detector.input_size, num_workers=min(settings.workers, len(shards)),
                          shuffle_buffer=0, augment=False, resampled=False, persistent_workers=False, max_boxes=1)
    return Loader(config, LabelMap.from_classes(sorted(manifest_wnids(manifest))))


@with_eval_mode
def evaluate_coco_images(detector: Detector, annotations: str | Path, images: str | Path,
                         settings: EvaluationSettings | None = None) -> EvaluationResult:
    """Evaluate on a COCO instances file and its image folder (images read as stored: no EXIF rotation, as COCO)."""
    settings = settings or EvaluationSettings()
    if detector.task != "detect":
        raise EvaluationError(f"{annotations} holds boxes, but the network is a {detector.task} network")
    gt = load_coco_json(annotations)
    categories = detector_categories(detector, gt)
    paths = {img["id"]: Path(images) / img["file_name"] for img in gt.dataset["images"]}
    ids = {path: image_id for image_id, path in paths.items()}
    files = FileBatches(detector, list(paths.values()), settings.batch_size, exif=False)
    run = DetectionRun()
    for batch_paths, _, sizes, output in tqdm(files, desc="evaluate", unit="batch", disable=not settings.progress):
        collect_detections(detector, run, output, sizes, [ids[p] for p in batch_paths], categories, settings)
    result = score_run(run, gt, categories, detector, settings)
    result.skipped = len(files.skipped)
    result.images = len(paths) - result.skipped
    return result


def evaluate_results_file(annotations: str | Path, results: str | Path,
                          settings: EvaluationSettings | None = None) -> EvaluationResult:
    """Score an existing COCO result file of any detector against a COCO instances file, as pycocotools does."""
    gt = load_coco_json(annotations)
    rows = read_json(results)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"image_id", "category_id", "bbox", "score"} <= set(r)
                                             for r in rows):
        raise EvaluationError(f"{results}: not COCO detection results (a list of image_id, category_id, bbox, score)")
    check_results(gt, rows, str(results))
    wnids = [w or c["name"] for c, w in zip(gt.dataset["categories"], coco_category_wnids(gt))]
    names = [c["name"] for c in gt.dataset["categories"]]
    categories = Categories([c["id"] for c in gt.dataset["categories"]], wnids, names)
    result = score_run(DetectionRun(rows=rows), gt, categories, None, settings or EvaluationSettings())
    result.images = len(gt.getImgIds())
    return result


# ---------------------------------------------------------------- scoring and reports


def score_run(run: DetectionRun, gt: COCO | None, categories: Categories | None, detector: Detector | None,
              settings: EvaluationSettings) -> EvaluationResult:
    """COCO and VOC AP, per class and per group, top-down shares and classification accuracy of a collected run."""
    result = EvaluationResult(settings={k: v for k, v in asdict(settings).items() if k not in ("progress", "workers")},
                              classification=accuracy(run.class_counts) if run.class_counts else {})
    if gt is None:
        return result
    check_results(gt, run.rows)
    evaluation = coco_evaluation(gt, run.rows)
    per_class = coco_class_ap(evaluation)
    voc = voc_metrics(gt, run.rows)
    result.detections, result.rows = len(run.rows), run.rows
    result.coco = dict(zip(COCO_STATS, (float(v) if v > -1 else float("nan") for v in evaluation.stats)))
    result.voc = {"mAP_11point": _mean(voc.ap_11point), "mAP_area": _mean(voc.ap_area)}
    groups = class_groups(categories.wnids, categories.names, settings)
    groups_of = {k: [name for name, members in groups.items() if k in members] for k in range(len(categories.ids))}
    result.classes = [
        {"wnid": wnid, "name": name, "category_id": cid, "truths": int(voc.truths[k]), "detections": int(voc.detections[k]),
         "AP": per_class["AP"][k], "AP50": per_class["AP50"][k], "AP75": per_class["AP75"][k],
         "voc_ap_11point": voc.ap_11point[k], "voc_ap_area": voc.ap_area[k], "groups": groups_of[k]}
        for k, (wnid, name, cid) in enumerate(zip(categories.wnids, categories.names, categories.ids))
    ]
    result.groups = {name: group_summary(result.classes, members) for name, members in groups.items()}
    result.curves = {name: curve for name, curve in zip(categories.names, voc.curves)}
    if detector is not None and detector.tree is not None:
        result.top_down_exact = top_down_shares(run, gt, categories, groups, detector)
    return result


def top_down_shares(run: DetectionRun, gt: COCO, categories: Categories, groups: dict[str, list[int]],
                    detector: Detector) -> dict[str, dict]:
    """top_down_exact_share for all evaluated classes and for each group (crowd / difficult objects left out)."""
    position = {c: k for k, c in enumerate(categories.ids)}
    objects = [a for a in gt.dataset["annotations"]
               if not a.get("iscrowd", 0) and a.get("own", True) and a["category_id"] in position]
    truth_image = torch.tensor([a["image_id"] for a in objects], dtype=torch.long)
    truth_class = torch.tensor([position[a["category_id"]] for a in objects], dtype=torch.long)
    truth_box = xywh_to_corners(torch.tensor([a["bbox"] for a in objects], dtype=torch.float32).reshape(-1, 4))
    nodes = categories.nodes.cpu()
    dets = [(image_id, d) for image_id, d in run.top_down]
    det_image = torch.cat([torch.full((len(d.scores),), i, dtype=torch.long) for i, d in dets] or [torch.zeros(0, dtype=torch.long)])
    det_box = torch.cat([d.boxes for _, d in dets] or [torch.zeros(0, 4)])
    det_score = torch.cat([d.scores for _, d in dets] or [torch.zeros(0)])
    det_node = torch.cat([d.labels for _, d in dets] or [torch.zeros(0, dtype=torch.long)])
    tree = detector.tree_arrays
    shares = {}
    for name, members in {"all": list(range(len(categories.ids))), **groups}.items():
        chosen = torch.isin(truth_class, torch.tensor(members, dtype=torch.long))
        shares[name] = top_down_exact_share(truth_image[chosen], truth_box[chosen], nodes[truth_class[chosen]],
                                            det_image, det_box, det_score, det_node, tree)
    return shares


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    """The result as JSON (NaN as null), written through a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda p: p.write_text(json.dumps(result.to_dict(), indent=2)))
    return path


def write_rows(result: EvaluationResult, path: str | Path) -> Path:
    """The scored COCO result rows as a results file (what `evaluate --gt --detections` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda p: p.write_text(json.dumps(result.rows)))
    return path


def _cell(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def summary_table(result: EvaluationResult, max_classes: int = 30) -> str:
    """A short terminal table: COCO and VOC numbers, groups, per-class AP (when few classes), accuracy."""
    lines = [f"images {result.images} (skipped {result.skipped}), detections {result.detections}, "
             f"score threshold {result.settings.get('score_threshold')}"]
    if result.coco:
        lines.append("COCO  " + "  ".join(f"{k} {_cell(result.coco[k])}" for k in COCO_STATS[:6]))
        lines.append(f"VOC   mAP(11-point) {_cell(result.voc['mAP_11point'])}  mAP(area) {_cell(result.voc['mAP_area'])}")
    if result.groups:
        lines.append(f"{'group':<16}{'classes':>8}{'AP':>8}{'AP50':>8}{'VOC':>8}")
        for name, g in result.groups.items():
            lines.append(f"{name:<16}{g['classes']:>8}{_cell(g['AP']):>8}{_cell(g['AP50']):>8}{_cell(g['voc_ap_area']):>8}")
    if result.classes and len(result.classes) <= max_classes:
        lines.append(f"{'class':<24}{'truths':>8}{'AP':>8}{'AP50':>8}{'VOC':>8}")
        for c in result.classes:
            lines.append(f"{c['name'][:23]:<24}{c['truths']:>8}{_cell(c['AP']):>8}{_cell(c['AP50']):>8}"
                         f"{_cell(c['voc_ap_area']):>8}")
    for name, share in result.top_down_exact.items():
        lines.append(f"top-down label exact ({name}): {_cell(share['share'])} of {share['matched']} matched objects "
                     f"({share['objects']} in all, {share['coarser']} labelled by an ancestor)")
    if result.classification:
        c = result.classification
        lines.append(f"classification ({c['images']} images): top-1 {_cell(c['top1'])} top-5 {_cell(c['top5'])}; "
                     f"top-down top-1 {_cell(c['top1_top_down'])} top-5 {_cell(c['top5_top_down'])}; "
                     f"top-down exact {_cell(c['top_down_exact'])}")
    return "\n".join(lines)


def plot_pr_curves(result: EvaluationResult, path: str | Path, max_legend: int = 20) -> Path:
    """Precision against recall at IoU .5 (VOC matching) for every class, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for i, (name, (recall, precision)) in enumerate(result.curves.items()):
        if len(recall):
            axes.plot(recall, precision, linewidth=1, label=name if i < max_legend else None)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title=f"PR at IoU .5, VOC mAP(area) {_cell(result.voc.get('mAP_area', float('nan')))}")
    if result.curves:
        axes.legend(fontsize=6, loc="lower left", ncol=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
