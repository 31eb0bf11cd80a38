import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasets import IMAGENET_WNIDS, build_imagenet_folders, build_imagenet_tars, imagenet_box_xml, read_shards
from yolo9000.data.prepare.imagenet import read_imagenet
from yolo9000.data.prepare.items import PrepareError
from yolo9000.data.shardwriter.write import WriterConfig, write_shards


def prepare(out: Path, items, workers: int = 2) -> dict:
    config = WriterConfig(out_dir=out, prefix="imagenet", shard_size=20_000, workers=workers, show_progress=False)
    return write_shards(items, config)


def assert_classification_records_match(records: dict, truths: dict) -> None:
    assert sorted(records) == sorted(truths)
    for file, (_, record) in records.items():
        truth = truths[file]
        assert record.key == "imagenet-" + Path(file).stem and record.source == "imagenet"
        assert record.image_label == truth.image_label == file[:9]
        assert record.boxes.shape == (0, 4) and record.labels == [] and record.crowd == [] and record.difficult == []
        assert (record.width, record.height) == (truth.width, truth.height)
        assert record.jpeg == truth.data


def test_class_folder_layout_gives_classification_records_with_the_folder_wnid(tmp_path):
    truths = build_imagenet_folders(tmp_path / "train")
    summary = prepare(tmp_path / "shards", read_imagenet(tmp_path / "train"))
    assert_classification_records_match(read_shards(tmp_path / "shards", "imagenet"), truths)
    assert summary["classification_samples"] == len(truths) and summary["shards"] > 1
    assert {w: v["images"] for w, v in summary["labels"].items()} == dict(
        Counter(t.image_label for t in truths.values()))
    rows = pq.read_table(tmp_path / "shards" / "manifest.parquet").to_pylist()
    assert {r["file"]: r["image_label"] for r in rows} == {f: t.image_label for f, t in truths.items()}


def test_one_tar_per_synset_layout_reads_images_from_inside_the_tars(tmp_path):
    truths = build_imagenet_tars(tmp_path / "fall11")
    prepare(tmp_path / "shards", read_imagenet(tmp_path / "fall11"))
    assert_classification_records_match(read_shards(tmp_path / "shards", "imagenet"), truths)


def test_box_files_make_detection_samples_with_the_xml_wnids(tmp_path):
    truths = build_imagenet_folders(tmp_path / "train", per_class=3)
    boxed = sorted(truths)[:2]
    expected = {}
    for n, file in enumerate(boxed):
        truth, stem = truths[file], Path(file).stem
        objects = [(IMAGENET_WNIDS[n], [1, 2, truth.width - 3, truth.height - 1]), ("n02084071", [0, 0, 10, 12])]
        (tmp_path / "boxes" / file[:9]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "boxes" / file[:9] / f"{stem}.xml").write_text(
            imagenet_box_xml(stem, truth.width, truth.height, objects))
        expected[file] = objects
    summary = prepare(tmp_path / "shards", read_imagenet(tmp_path / "train", boxes_dir=tmp_path / "boxes"), workers=1)
    records = read_shards(tmp_path / "shards", "imagenet")
    for file, (_, record) in records.items():
        if file in expected:
            assert record.image_label is None
            assert record.labels == [name for name, _ in expected[file]]
            np.testing.assert_allclose(record.boxes, [box for _, box in expected[file]])
            assert record.crowd == record.difficult == [False, False]
        else:
            assert record.image_label == file[:9] and len(record.boxes) == 0
    assert summary["detection_samples"] == 2 and summary["boxes"] == 4


def test_folder_that_is_not_a_wnid_stops_the_run_listing_every_offender(tmp_path):
    build_imagenet_folders(tmp_path / "train", per_class=1)
    (tmp_path / "train" / "goldfish").mkdir()
    (tmp_path / "train" / "n123").mkdir()
    with pytest.raises(PrepareError, match=r"\['goldfish', 'n123'\] are not WordNet ids"):
        read_imagenet(tmp_path / "train")


def test_wnids_outside_the_allowed_list_stop_the_run_listing_them(tmp_path):
    build_imagenet_folders(tmp_path / "train", per_class=1)
    with pytest.raises(PrepareError, match=r"\['n01443537', 'n02084071'\]"):
        read_imagenet(tmp_path / "train", allowed_wnids={"n01440764"})


def test_box_file_with_a_non_wnid_name_or_malformed_box_is_an_error_naming_it(tmp_path):
    build_imagenet_folders(tmp_path / "train", per_class=1)
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "a.xml").write_text(imagenet_box_xml("a", 50, 50, [("goldfish", [1, 1, 5, 5])]))
    with pytest.raises(PrepareError, match=r"\['goldfish'\] are not WordNet ids"):
        read_imagenet(tmp_path / "train", boxes_dir=tmp_path / "boxes")
    (tmp_path / "boxes" / "a.xml").write_text("<annotation><object><name>n01440764</name></object></annotation>")
    with pytest.raises(PrepareError, match=r"a\.xml: object 0 \(n01440764\)"):
        read_imagenet(tmp_path / "train", boxes_dir=tmp_path / "boxes")


def test_corrupt_image_inside_a_synset_tar_is_skipped_and_named(tmp_path):
    truths = build_imagenet_tars(tmp_path / "fall11", per_class=2)
    with tarfile.open(tmp_path / "fall11" / "n02084071.tar", "a") as tar:
        info = tarfile.TarInfo("n02084071_999.JPEG")
        info.size = 100
        tar.addfile(info, io.BytesIO(b"\xff\xd8\xff" + bytes(97)))
    summary = prepare(tmp_path / "shards", read_imagenet(tmp_path / "fall11"), workers=1)
    assert sorted(read_shards(tmp_path / "shards", "imagenet")) == sorted(truths)
    assert summary["skipped"]["corrupt_image"] == {"count": 1, "examples": ["n02084071.tar/n02084071_999.JPEG"]}


def test_shards_are_byte_identical_whatever_the_number_of_workers(tmp_path):
    build_imagenet_tars(tmp_path / "fall11", per_class=8)
    items = read_imagenet(tmp_path / "fall11")
    prepare(tmp_path / "one", items, workers=1)
    prepare(tmp_path / "two", items, workers=2)
    one, two = sorted((tmp_path / "one").glob("*.tar")), sorted((tmp_path / "two").glob("*.tar"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) > 1
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert pq.read_table(tmp_path / "one" / "manifest.parquet").equals(pq.read_table(tmp_path / "two" / "manifest.parquet"))


def test_unreadable_synset_tar_is_an_error_naming_it(tmp_path):
    build_imagenet_tars(tmp_path / "fall11", per_class=1)
    (tmp_path / "fall11" / "n09999999.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(PrepareError, match=r"n09999999\.tar: cannot read synset tar"):
        read_imagenet(tmp_path / "fall11")


def test_classes_are_spread_over_the_shards_not_written_one_after_another(tmp_path):
    build_imagenet_folders(tmp_path / "train", per_class=12)
    items = read_imagenet(tmp_path / "train")
    summary = prepare(tmp_path / "shards", items)
    rows = pq.read_table(tmp_path / "shards" / "manifest.parquet").to_pylist()
    classes_per_shard = Counter(shard for shard, _ in {(r["shard"], r["image_label"]) for r in rows})
    assert summary["shards"] > 1  # written class by class, each shard would hold one or two classes
    assert all(count == len(IMAGENET_WNIDS) for count in classes_per_shard.values()), classes_per_shard
    prepare(tmp_path / "again", list(reversed(items)))  # the same shards whatever order the items come in
    assert (tmp_path / "again" / "manifest.parquet").read_bytes() == (tmp_path / "shards" / "manifest.parquet").read_bytes()
