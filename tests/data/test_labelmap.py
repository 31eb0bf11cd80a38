from pathlib import Path

import pytest

from shards import ALL_WNIDS, classification_record, detection_record, write_manifest
from wordtree.darknet_files import load_tree
from yolo9000.data.labelmap import LabelMap, UnknownLabelError

DARKNET = Path(__file__).resolve().parents[2] / "wordtree" / "data" / "darknet"


def test_tree_labelmap_gives_node_indices_of_the_tree():
    tree = load_tree(DARKNET / "9k.tree")
    labelmap = LabelMap.from_tree(tree)
    wnids = ["n00007846", "n01440764", "n02084071"]
    assert labelmap.indices(wnids).tolist() == [tree.index(w) for w in wnids]


def test_flat_class_list_gives_positions():
    assert LabelMap.from_classes(ALL_WNIDS).indices(["n01443537", "n00007846"]).tolist() == [4, 0]


def test_unknown_wnids_are_refused_listing_all_of_them():
    labelmap = LabelMap.from_classes(ALL_WNIDS)
    with pytest.raises(UnknownLabelError, match="2 wnid.*n09999998, n09999999"):
        labelmap.check(["n00007846", "n09999999", "n09999998", "n09999999"])
    labelmap.check(ALL_WNIDS)


def test_manifest_check_lists_offenders_with_their_manifest(tmp_path):
    import random
    rng = random.Random(0)
    good = [detection_record("coco", i, rng) for i in range(3)] + [classification_record("imagenet", 3, rng)]
    bad = [detection_record("coco", 4, rng), classification_record("imagenet", 5, rng)]
    bad[0]["meta"]["labels"][0] = "n09999999"
    bad[1]["meta"]["image_label"] = "n09999998"
    good_path = write_manifest(tmp_path / "good.parquet", good)
    bad_path = write_manifest(tmp_path / "bad.parquet", bad)
    labelmap = LabelMap.from_tree(load_tree(DARKNET / "9k.tree"))
    labelmap.check_manifests([good_path])
    with pytest.raises(UnknownLabelError) as error:
        labelmap.check_manifests([good_path, bad_path])
    message = str(error.value)
    assert f"{bad_path}: n09999998, n09999999" in message and str(good_path) not in message
