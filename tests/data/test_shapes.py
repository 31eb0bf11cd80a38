import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from wordtree.build import build_tree
from wordtree.labelsets import LABEL_MAPS, label_map, read_synsets
from wordtree.wordnet import open_wordnet, synset_of
from yolo9000.data.shapes import (
    COARSE, FIGURES, SPLITS, ShapesError, ShapesSettings, background, make_shapes, render_image, sample_rng,
)

SMALL = ShapesSettings(train_detection=30, train_classification=22, val=24, tune=12, size=96, seed=3)
WNIDS = label_map("shapes")
SPLIT = {split.name: split for split in SPLITS}


def folder_bytes(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "out"
    make_shapes(out, SMALL, WNIDS, workers=2, progress=False)
    return out


def test_the_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path, generated):
    make_shapes(tmp_path / "one", SMALL, WNIDS, workers=1, progress=False)
    assert folder_bytes(tmp_path / "one") == folder_bytes(generated)
    make_shapes(tmp_path / "other", replace(SMALL, seed=4), WNIDS, progress=False)
    other = folder_bytes(tmp_path / "other")
    assert other.keys() == folder_bytes(generated).keys()
    assert other["coco/val/000000000001.jpg"] != folder_bytes(generated)["coco/val/000000000001.jpg"]


@pytest.mark.parametrize("split", [s.name for s in SPLITS])
def test_each_box_is_the_tight_extent_of_the_pixels_its_figure_changed(split):
    for index in range(40):
        pixels, boxes, figures, _ = render_image(SMALL, SPLIT[split], index)
        plain = np.clip(np.rint(background(sample_rng(SMALL.seed, SPLIT[split], index), SMALL.size)), 0, 255)
        ys, xs = np.nonzero((pixels != plain.astype(np.uint8)).any(axis=2))
        owner = np.full(len(xs), -1)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            inside = (xs + 1 > x0) & (xs < x1) & (ys + 1 > y0) & (ys < y1)  # pixel [x, x + 1) meets the box
            assert (owner[inside] == -1).all(), "figures' boxes overlap"
            owner[inside] = k
            # the changed pixels reach each edge of the box to within a pixel
            assert xs[inside].min() <= x0 + 1 and xs[inside].max() + 1 >= x1 - 1
            assert ys[inside].min() <= y0 + 1 and ys[inside].max() + 1 >= y1 - 1
        assert (owner >= 0).all(), f"{split} {index}: pixels changed outside every box"
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / SMALL.size
        assert ((sides > 0.149) & (sides < 0.501)).all() and 1 <= len(figures) <= 4
        assert (boxes >= 0).all() and (boxes <= SMALL.size).all()


def test_coco_files_hold_the_rendered_boxes_and_the_jpegs_the_rendered_images(generated):
    for split in (SPLIT["train_detection"], SPLIT["val"]):
        data = json.loads((generated / "coco" / "annotations" / f"instances_{split.coco_split}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        for image in data["images"][:10]:
            pixels, boxes, figures, _ = render_image(SMALL, split, image["id"] - 1)
            anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            np.testing.assert_allclose([a["bbox"] for a in anns], xywh, atol=0.006)
            expected = [f.coarse if split.coarse_labels else f.name for f in figures]
            assert [names[a["category_id"]] for a in anns] == expected
            decoded = np.asarray(Image.open(generated / "coco" / split.coco_split / image["file_name"]), float)
            assert np.abs(decoded - pixels).mean() < 10  # JPEG loss on noise; another image differs by ~70


def test_detection_boxes_carry_only_coarse_labels_and_validation_every_fine_label(generated):
    annotations = generated / "coco" / "annotations"
    train = COCO(str(annotations / "instances_train.json"))
    assert sorted(c["name"] for c in train.loadCats(train.getCatIds())) == sorted(COARSE)
    used = Counter(a["category_id"] for a in train.loadAnns(train.getAnnIds()))
    assert len(used) == len(COARSE)
    for split in ("val", "tune"):
        coco = COCO(str(annotations / f"instances_{split}.json"))
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {f.name for f in FIGURES}
        assert len(coco.getImgIds()) == getattr(SMALL, split)
    val = COCO(str(annotations / "instances_val.json"))
    assert {val.loadCats(a["category_id"])[0]["name"] for a in val.loadAnns(val.getAnnIds())} == {f.name for f in FIGURES}
    unrelated = [f for f in FIGURES if f.coarse is None]
    assert unrelated, "the demo needs fine classes with no boxed relative"
    drawn = {f.name for i in range(200) for f in render_image(SMALL, SPLIT["train_detection"], i)[2]}
    assert drawn == {f.name for f in FIGURES if f.coarse is not None}


def test_classification_folders_are_wnids_of_every_fine_class_that_resolve_in_wordnet(generated):
    folders = sorted((generated / "imagenet" / "train").iterdir())
    assert {p.name for p in folders} == {WNIDS[f.name] for f in FIGURES}
    wordnet = open_wordnet()
    name_of = {wnid: name for name, wnid in WNIDS.items()}
    for folder in folders:
        assert synset_of(folder.name, wordnet).lemma_names()[0].replace("_", " ") == name_of[folder.name]
    counts = [len(list(p.glob(f"{p.name}_*.JPEG"))) for p in folders]
    assert sum(counts) == SMALL.train_classification and max(counts) - min(counts) <= 1


def test_the_shapes_map_builds_a_labels_only_tree_whose_groups_are_the_coarse_classes():
    tree = build_tree(read_synsets(LABEL_MAPS["shapes"]), root="plane_figure.n.01", shape="labels-only").tree
    parent_of = {tree.wnids[i]: (tree.wnids[p] if p >= 0 else None) for i, p in enumerate(tree.parent.tolist())}
    assert len(parent_of) == len(COARSE) + len(FIGURES)
    for name in COARSE:
        assert parent_of[WNIDS[name]] is None
    for figure in FIGURES:
        assert parent_of[WNIDS[figure.name]] == (WNIDS[figure.coarse] if figure.coarse else None), figure.name
    assert (np.asarray(tree.group_size) >= 2).all(), "a single-child group has P(child | parent) = 1"


def test_classes_json_gives_each_class_its_role_and_labels_map_every_wnid(generated):
    rows = {row["name"]: row for row in json.loads((generated / "classes.json").read_text())}
    assert {name for name, row in rows.items() if row["role"] == "boxed"} == set(COARSE)
    assert {name for name, row in rows.items() if row["role"] == "unrelated"} == {f.name for f in FIGURES if not f.coarse}
    assert all(rows[f.name]["coarse"] == f.coarse for f in FIGURES)
    assert label_map("shapes") == {name: row["wnid"] for name, row in rows.items()}
    lines = (generated / "labels.map").read_text().splitlines()
    assert dict(line.split("\t") for line in lines) == WNIDS


def test_the_same_settings_reuse_the_folder_and_other_settings_replace_it_leaving_nothing_stale(tmp_path):
    out = tmp_path / "out"
    assert make_shapes(out, SMALL, WNIDS, progress=False).reason == "new folder"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = make_shapes(out, SMALL, WNIDS, progress=False)
    assert again.reused and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    fewer = replace(SMALL, train_detection=7, train_classification=5, seed=9)
    assert make_shapes(out, fewer, WNIDS, progress=False).reason == "other settings"
    make_shapes(tmp_path / "fresh", fewer, WNIDS, progress=False)
    assert folder_bytes(out) == folder_bytes(tmp_path / "fresh")
    next(iter((out / "coco" / "val").glob("*.jpg"))).unlink()
    assert make_shapes(out, fewer, WNIDS, progress=False).reason == "incomplete"
    assert folder_bytes(out) == folder_bytes(tmp_path / "fresh")


def test_a_folder_make_shapes_did_not_write_is_refused_and_left_alone(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "mine.txt").write_text("someone's data")
    with pytest.raises(ShapesError, match="settings.json"):
        make_shapes(tmp_path, SMALL, WNIDS, progress=False)
    assert (tmp_path / "coco" / "mine.txt").read_text() == "someone's data"


def test_files_beside_the_outputs_survive_a_regeneration(tmp_path):
    make_shapes(tmp_path, SMALL, WNIDS, progress=False)
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "keep.tar").write_bytes(b"x")
    make_shapes(tmp_path, replace(SMALL, val=3), WNIDS, progress=False)
    assert (tmp_path / "shards" / "keep.tar").read_bytes() == b"x"


@pytest.mark.parametrize("change, message", [({"size": 8}, "--size"), ({"val": -1}, "--val")])
def test_settings_that_cannot_be_rendered_are_refused_naming_the_option(tmp_path, change, message):
    with pytest.raises(ShapesError, match=message):
        make_shapes(tmp_path, replace(SMALL, **change), WNIDS, progress=False)
