import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from inference_fixtures import CAT, DOG, POODLE, TERRIER, TREE_PARENT, TREE_WNIDS, FixedHead, save_network, small_tree, \
    write_validation_shards
from yolo9000.cli import main
from yolo9000.evaluate import (
    BOXED,
    UNBOXED,
    Categories,
    DetectionRun,
    EvaluationError,
    EvaluationSettings,
    classification_hits,
    collect_detections,
    evaluate_results_file,
    evaluate_shards,
    image_class_logits,
    top_down_exact_share,
    voc_metrics,
)
from yolo9000.hierarchy import TreeArrays
from yolo9000.predict import Detector, load_detector

CATEGORIES = [{"id": 3, "name": "dog", "wnid": TREE_WNIDS[DOG]}, {"id": 7, "name": "cat", "wnid": TREE_WNIDS[CAT]},
              {"id": 9, "name": "poodle", "wnid": TREE_WNIDS[POODLE]}]


def instances(annotations: list[tuple[int, int, list[float], int]], images: int = 4) -> dict:
    """A COCO instances dict from (image id, category id, xywh, iscrowd) tuples."""
    return {
        "images": [{"id": i, "width": 200, "height": 150, "file_name": f"{i}.jpg"} for i in range(1, images + 1)],
        "annotations": [{"id": k + 1, "image_id": image, "category_id": category, "bbox": box, "iscrowd": crowd,
                         "area": box[2] * box[3]} for k, (image, category, box, crowd) in enumerate(annotations)],
        "categories": CATEGORIES,
    }


def pycocotools_stats(gt_dict: dict, rows: list[dict], category: int | None = None) -> np.ndarray:
    """pycocotools run directly, the reference: stats, restricted to one category when given."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(gt_dict))
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(json.loads(json.dumps(rows))), "bbox")
        if category is not None:
            evaluation.params.catIds = [category]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.fixture
def coco_case(tmp_path):
    """Truths with crowd boxes, an image without truths (4), a class without detections (cat), and noisy detections."""
    rng = np.random.default_rng(0)
    truths = [(1, 3, [10, 10, 50, 40], 0), (1, 3, [100, 20, 60, 60], 0), (1, 3, [0, 0, 200, 150], 1),
              (2, 3, [30, 30, 20, 20], 0), (2, 7, [120, 60, 40, 50], 0), (2, 9, [5, 80, 30, 30], 0),
              (3, 9, [60, 40, 90, 100], 0), (3, 3, [50, 30, 100, 100], 1), (3, 7, [10, 10, 15, 15], 0)]
    rows = []
    for image, category, (x, y, w, h), _ in truths:
        if category == 7:
            continue
        for _ in range(3):
            jitter = rng.normal(0, 4, 4)
            rows.append({"image_id": image, "category_id": category, "score": float(rng.uniform(0.05, 1)),
                         "bbox": [float(x + jitter[0]), float(y + jitter[1]), float(max(1, w + jitter[2])),
                                  float(max(1, h + jitter[3]))]})
    rows += [{"image_id": 4, "category_id": 3, "score": 0.9, "bbox": [0.0, 0.0, 30.0, 30.0]},
             {"image_id": 1, "category_id": 9, "score": 0.4, "bbox": [10.0, 10.0, 50.0, 40.0]}]
    gt_dict = instances(truths)
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "results.json").write_text(json.dumps(rows))
    return tmp_path, gt_dict, rows


def test_coco_numbers_equal_pycocotools_with_crowds_images_without_truths_and_classes_without_detections(coco_case):
    folder, gt_dict, rows = coco_case
    result = evaluate_results_file(folder / "gt.json", folder / "results.json")
    reference = pycocotools_stats(gt_dict, rows)
    assert 0 < reference[0] < 1
    np.testing.assert_allclose([result.coco[k] for k in ("AP", "AP50", "AP75", "APs", "APm")], reference[:5], atol=1e-6)
    per_class = {c["name"]: c for c in result.classes}
    for category in CATEGORIES:
        alone = pycocotools_stats(gt_dict, rows, category["id"])
        assert per_class[category["name"]]["AP"] == pytest.approx(alone[0], abs=1e-6)
        assert per_class[category["name"]]["AP50"] == pytest.approx(alone[1], abs=1e-6)
    assert per_class["cat"]["AP"] == 0 and per_class["cat"]["detections"] == 0


def test_the_cli_scores_a_results_file_like_pycocotools_and_writes_json(coco_case, capsys):
    folder, gt_dict, rows = coco_case
    code = main(["evaluate", "--gt", str(folder / "gt.json"), "--detections", str(folder / "results.json"),
                 "--json", str(folder / "out.json")])
    assert code == 0 and "AP50" in capsys.readouterr().out
    written = json.loads((folder / "out.json").read_text())
    assert written["coco"]["AP"] == pytest.approx(pycocotools_stats(gt_dict, rows)[0], abs=1e-6)


def test_a_results_file_with_unknown_image_ids_is_refused_naming_them(coco_case):
    folder, _, rows = coco_case
    (folder / "bad.json").write_text(json.dumps(rows + [{**rows[0], "image_id": 77}, {**rows[0], "image_id": 78}]))
    with pytest.raises(EvaluationError, match=r"bad.json: 2 image ids are not in the ground truth: \[77, 78\]"):
        evaluate_results_file(folder / "gt.json", folder / "bad.json")
    done = subprocess.run([sys.executable, "-m", "yolo9000.cli", "evaluate", "--gt", str(folder / "gt.json"),
                           "--detections", str(folder / "bad.json")], capture_output=True, text=True)
    assert done.returncode == 2 and "[77, 78]" in done.stderr and "Traceback" not in done.stderr


def box(x0, y0, x1, y1):
    return [x0, y0, x1 - x0, y1 - y0]


def test_voc_ap_equals_a_hand_computed_case():
    # one class; image 1: truths A and D (difficult); image 2: truth C
    truths = [(1, 3, box(0, 0, 10, 10), 0), (1, 3, box(20, 0, 30, 10), 1), (2, 3, box(0, 0, 10, 10), 0),
              (1, 3, box(50, 50, 60, 60), 0)]  # E: only overlapped by a detection whose best truth is A
    gt = COCO()
    gt.dataset = instances(truths, images=2)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    detections = [
        (0.9, 1, box(0, 0, 10, 9)),  # A, IoU .9: true positive
        (0.8, 1, box(0, 0, 10, 8)),  # A again: false positive (A is taken)
        (0.7, 1, box(20, 0, 30, 10)),  # the difficult truth: neither
        (0.6, 2, box(0, 0, 9, 10)),  # C: true positive
        (0.5, 2, box(40, 40, 50, 50)),  # nothing: false positive
    ]
    rows = [{"image_id": i, "category_id": 3, "score": s, "bbox": b} for s, i, b in detections]
    voc = voc_metrics(gt, rows)
    # 3 truths count (A, C, E); after dropping the difficult match: TP FP TP FP
    recall, precision = voc.curves[0]
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    assert voc.ap_11point[0] == pytest.approx((4 * 1 + 3 * (2 / 3)) / 11)  # t = 0 .. .3 → 1; .4 .. .6 → 2/3; rest 0
    assert voc.ap_area[0] == pytest.approx(1 / 3 * 1 + 1 / 3 * (2 / 3))
    assert voc.truths.tolist() == [3, 0, 0] and math.isnan(voc.ap_area[1])


def test_voc_takes_the_best_truth_even_when_it_is_taken_as_the_devkit_does():
    truths = [(1, 3, box(0, 0, 10, 10), 0), (1, 3, box(0, 0, 10, 14), 0)]
    gt = COCO()
    gt.dataset = instances(truths, images=1)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    rows = [{"image_id": 1, "category_id": 3, "score": 0.9, "bbox": box(0, 0, 10, 10)},
            {"image_id": 1, "category_id": 3, "score": 0.8, "bbox": box(0, 0, 10, 11)}]  # IoU .91 with A, .79 with B
    recall, precision = voc_metrics(gt, rows).curves[0]
    np.testing.assert_allclose(precision, [1, 0.5])  # voc_eval.py: the second is a false positive; COCO would match B


def tiny_tree_logits(conditional: dict[int, float]) -> torch.Tensor:
    """Logits whose group softmax gives these conditional probabilities (log-probs are such logits)."""
    return torch.tensor([math.log(conditional[n]) for n in range(6)], dtype=torch.float64)


# conditional P: animal .9 / artifact .1; dog .8 / cat .2 (of animal); terrier .55 / poodle .45 (of dog)
CONDITIONAL = {0: 0.9, 1: 0.1, 2: 0.8, 3: 0.2, 4: 0.55, 5: 0.45}


def test_hierarchical_top_k_by_hand_on_a_small_tree():
    tree = TreeArrays.from_parent(small_tree().parent)
    logits = tiny_tree_logits(CONDITIONAL).expand(3, -1)
    labels = torch.tensor([POODLE, DOG, CAT])
    candidates = torch.tensor([TERRIER, POODLE, CAT, DOG])  # absolute .396, .324, .18, .72
    hits = classification_hits(logits, labels, tree, candidates, hier_thresh=0.5)
    # absolute ranking dog, terrier, poodle, cat: poodle 3rd, dog 1st, cat 4th
    assert hits["top1"] == 1 and hits["top5"] == 3
    # top-down: poodle's ancestors lead their groups but poodle is 2nd of 2 → top-5 only; dog leads; cat 2nd of 2
    assert hits["top1_top_down"] == 1 and hits["top5_top_down"] == 3
    # decoded with hier_thresh .5: dog (.72), not terrier (.396): only the dog image is exact
    assert hits["top_down_exact"] == 1 and hits["images"] == 3


def test_a_tree_detector_scores_a_box_for_each_class_by_objectness_times_absolute_probability():
    tree = small_tree()
    output = torch.zeros(1, 5 + 6, 1, 1, dtype=torch.float64)
    output[0, 4] = 2.0  # σ = .8808
    output[0, 5:] = tiny_tree_logits(CONDITIONAL).view(6, 1, 1)
    head = FixedHead(output.float())
    detector = Detector(head, torch.ones(1, 2), 32, tree.wnids, tree.names, tree)
    categories = Categories([1, 2, 3], [TREE_WNIDS[n] for n in (POODLE, CAT, DOG)], ["poodle", "cat", "dog"],
                            torch.tensor([POODLE, CAT, DOG]))
    run = DetectionRun()
    collect_detections(detector, run, output.float(), torch.tensor([[100, 120]]), [5], categories,
                       EvaluationSettings(score_threshold=1e-4))
    scores = {row["category_id"]: row["score"] for row in run.rows}
    objectness = 1 / (1 + math.exp(-2.0))
    assert scores == pytest.approx({1: objectness * 0.9 * 0.8 * 0.45, 2: objectness * 0.9 * 0.2,
                                    3: objectness * 0.9 * 0.8}, rel=1e-5)
    assert [d.labels.tolist() for _, d in run.top_down] == [[DOG]]  # top-down: .72 > .5, terrier .396 is not


def manifest_with_boxes_for(path, box_wnids, image_label_wnids):
    """A training manifest: one detection row per wnid with a box, one classification row per image label."""
    rows = len(box_wnids) + len(image_label_wnids)
    pq.write_table(pa.table({
        "key": [f"k{i}" for i in range(rows)],
        "labels": pa.array([[w] for w in box_wnids] + [[] for _ in image_label_wnids], pa.list_(pa.string())),
        "image_label": pa.array([None] * len(box_wnids) + list(image_label_wnids), pa.string()),
    }), path)
    return path


def test_classes_split_into_boxed_and_unboxed_by_the_training_manifests_and_ap_per_group(tmp_path):
    truths = [(1, 3, box(0, 0, 50, 50), 0), (2, 7, box(10, 10, 60, 60), 0)]  # a dog, a cat; no poodle truth
    (tmp_path / "gt.json").write_text(json.dumps(instances(truths, images=2)))
    rows = [{"image_id": 1, "category_id": 3, "score": 0.9, "bbox": box(0, 0, 50, 50)},  # the dog, found
            {"image_id": 2, "category_id": 7, "score": 0.9, "bbox": box(100, 100, 150, 140)}]  # the cat, missed
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    train = manifest_with_boxes_for(tmp_path / "train.parquet", [TREE_WNIDS[DOG]], [TREE_WNIDS[CAT]])
    (tmp_path / "groups.txt").write_text("pets\tdog\npets\tcat\n# a comment\ntoys\tpoodle\n")
    settings = EvaluationSettings(train_manifests=[str(train)], groups_file=str(tmp_path / "groups.txt"))
    result = evaluate_results_file(tmp_path / "gt.json", tmp_path / "rows.json", settings)
    assert [c["groups"] for c in result.classes] == [[BOXED, "pets"], [UNBOXED, "pets"], [UNBOXED, "toys"]]  # the cat had image labels only
    assert result.groups[BOXED]["AP50"] == pytest.approx(1.0) and result.groups[BOXED]["classes"] == 1
    assert result.groups[UNBOXED]["AP50"] == pytest.approx(0.0)  # cat 0; poodle has no truths and is left out
    assert result.groups[UNBOXED]["with_truths"] == 1
    assert result.groups["pets"]["AP50"] == pytest.approx(0.5) and math.isnan(result.groups["toys"]["AP50"])


def test_top_down_exact_share_counts_matched_objects_by_their_best_detection():
    tree = TreeArrays.from_parent(small_tree().parent)
    truth_box = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]], dtype=torch.float)
    truth_image = torch.tensor([1, 1, 1, 2])
    truth_node = torch.tensor([DOG, POODLE, CAT, CAT])
    det_box = torch.tensor([[0, 0, 10, 9], [0, 0, 10, 10], [20, 20, 30, 29], [50, 50, 56, 60], [0, 0, 10, 10]],
                           dtype=torch.float)
    det_image = torch.tensor([1, 1, 1, 1, 2])
    det_score = torch.tensor([0.9, 0.3, 0.8, 0.9, 0.5])
    det_node = torch.tensor([DOG, CAT, DOG, CAT, DOG])
    share = top_down_exact_share(truth_image, truth_box, truth_node, det_image, det_box, det_score, det_node, tree)
    # dog: its best (.9, dog) is exact; poodle: labelled dog (an ancestor); cat 1: IoU .6 with a cat → exact;
    # cat 2 (other image): labelled dog, which is not on its path
    assert share == {"objects": 4, "matched": 4, "exact": 2, "coarser": 1, "share": 0.5}


def test_shard_evaluation_scores_its_rows_like_pycocotools_on_the_manifests_truths(tmp_path):
    detection = [
        {"file": "a.jpg", "width": 120, "height": 80, "boxes": [[10, 10, 60, 70], [70, 5, 118, 40]],
         "labels": [TREE_WNIDS[DOG], TREE_WNIDS[CAT]], "crowd": [False, True]},
        {"file": "b.jpg", "width": 64, "height": 96, "boxes": [[5, 5, 60, 90], [0, 0, 20, 20]],
         "labels": [TREE_WNIDS[POODLE], TREE_WNIDS[DOG]], "difficult": [False, True]},
        {"file": "c.jpg", "width": 70, "height": 70},  # no truths
    ]
    classification = [{"file": "d.jpg", "width": 50, "height": 60, "image_label": TREE_WNIDS[TERRIER]},
                      {"file": "e.jpg", "width": 60, "height": 50, "image_label": TREE_WNIDS[CAT]}]
    shards = write_validation_shards(tmp_path, detection, classification)
    detector = load_detector(save_network(tmp_path / "net"))
    train = manifest_with_boxes_for(tmp_path / "train.parquet", [TREE_WNIDS[DOG]], [])
    settings = EvaluationSettings(score_threshold=1e-4, workers=1, batch_size=2, train_manifests=[str(train)])
    result = evaluate_shards(detector, shards, settings)
    assert result.images == 5 and result.detections > 0
    # the reference: pycocotools on truths written here from the samples, in the order the manifest holds them
    keys = pq.read_table(shards / "manifest.parquet").column("file").to_pylist()
    samples = {s["file"]: s for s in detection}
    def lineage(wnid):  # the label and its ancestors, from TREE_PARENT: a poodle box is a dog and an animal truth too
        node = TREE_WNIDS.index(wnid)
        while node >= 0:
            yield TREE_WNIDS[node]
            node = TREE_PARENT[node]

    labels = sorted({w for s in detection for w in s.get("labels", [])})
    wnids = labels + sorted({a for w in labels for a in lineage(w)} - set(labels))
    images, annotations = [], []
    for file in [k for k in keys if k in samples]:
        sample, image_id = samples[file], len(images) + 1
        images.append({"id": image_id, "width": sample["width"], "height": sample["height"]})
        for k, ((x0, y0, x1, y1), wnid) in enumerate(zip(sample.get("boxes", []), sample.get("labels", []))):
            crowd = sample.get("crowd", [False] * 9)[k] or sample.get("difficult", [False] * 9)[k]
            for label in lineage(wnid):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": wnids.index(label) + 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(crowd)})
    reference = pycocotools_stats({"images": images, "annotations": annotations,
                                   "categories": [{"id": k + 1, "name": w} for k, w in enumerate(wnids)]}, result.rows)
    np.testing.assert_allclose([result.coco[k] for k in ("AP", "AP50", "AP75")], reference[:3], atol=1e-6)
    assert [c["groups"] for c in result.classes] == [[BOXED if w == TREE_WNIDS[DOG] else UNBOXED] for w in wnids]
    assert result.classification["images"] == 2 and set(result.top_down_exact) == {"all", BOXED, UNBOXED}
    scalars = result.scalars()  # what a training loop reports
    assert scalars["coco/AP50"] == result.coco["AP50"] and "top_down_exact/unboxed" in scalars


def test_the_evaluate_command_on_shards_writes_json_plot_and_a_table(tmp_path, capsys):
    detection = [{"file": f"{i}.jpg", "width": 96, "height": 64, "boxes": [[8, 8, 48, 56]],
                  "labels": [TREE_WNIDS[[DOG, CAT][i % 2]]]} for i in range(6)]
    shards = write_validation_shards(tmp_path, detection)
    checkpoint = save_network(tmp_path / "net")
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(shards), "--score-threshold", "1e-4",
                 "--workers", "0", "--device", "cpu", "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "pr.png"),
                 "--save-detections", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    assert code == 0 and "COCO  AP" in out and "dog" in out
    written = json.loads((tmp_path / "e.json").read_text())
    assert written["images"] == 6 and [c["name"] for c in written["classes"]] == ["dog", "cat", "animal"]
    assert [c["truths"] for c in written["classes"]] == [3, 3, 6]  # dogs and cats are animals
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows) == written["detections"] > 0


def test_a_detector_classifies_an_image_by_its_most_confident_box():
    output = torch.zeros(1, 2 * (5 + 6), 1, 2)
    output[0, 4, 0, 1] = 1.0  # anchor 0, column 1
    output[0, 11 + 4, 0, 0] = 3.0  # anchor 1, column 0: the most confident box
    output[0, 11 + 5 + CAT, 0, 0] = 7.0
    tree = small_tree()
    detector = Detector(FixedHead(output), torch.ones(2, 2), 32, tree.wnids, tree.names, tree)
    assert image_class_logits(detector, output).argmax(1).tolist() == [CAT]


def test_classification_shards_give_hierarchical_accuracy_for_a_classifier_checkpoint(tmp_path):
    from yolo9000.train.checkpoint import ModelSpec, save_checkpoint

    tree = small_tree()
    spec = ModelSpec(task="classify", arch="tiny-yolov2", num_classes=len(tree), width=0.25, input_size=64)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "net", {"model": spec.build().state_dict()}, spec, "", tree.wnids, tree)
    samples = [{"file": f"{i}.jpg", "width": 70, "height": 50, "image_label": TREE_WNIDS[[TERRIER, CAT, POODLE][i % 3]]}
               for i in range(6)]
    shards = write_validation_shards(tmp_path, [], samples)
    result = evaluate_shards(load_detector(tmp_path / "net"), shards, EvaluationSettings(workers=0))
    assert result.classification["images"] == 6 and not result.coco
    assert 0 <= result.classification["top1"] <= result.classification["top5"] == 1.0  # 3 candidates: always in the top 5
