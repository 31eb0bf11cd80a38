from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasets import VOC_MAP, build_voc, read_shards, voc_xml
from yolo9000.data.prepare.voc import read_voc
from yolo9000.data.prepare.items import PrepareError
from yolo9000.data.shardwriter.write import WriterConfig, write_shards


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    return root, build_voc(root)


def test_prepared_records_match_the_xml_with_one_based_pixels_made_zero_based(tmp_path, voc):
    root, truths = voc
    out = tmp_path / "shards"
    config = WriterConfig(out_dir=out, prefix="voc", shard_size=15_000, workers=2, show_progress=False)
    summary = write_shards(read_voc(root, VOC_MAP, split="trainval"), config)
    records = read_shards(out, "voc")
    assert sorted(records) == sorted(truths) and summary["shards"] > 1
    for file, (_, record) in records.items():
        truth = truths[file]
        assert record.key == "voc-" + Path(file).stem and record.source == "voc"
        assert (record.width, record.height) == (truth.width, truth.height)
        np.testing.assert_allclose(record.boxes, np.reshape(truth.boxes, (-1, 4)))
        assert record.labels == truth.labels and record.difficult == truth.difficult
        assert not any(record.crowd) and record.image_label is None
        assert record.jpeg == truth.data
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {r["file"]: r["difficult"] for r in rows} == {f: t.difficult for f, t in truths.items()}
    assert summary["noticed"] == {} and summary["changed"] == {}
    assert summary["difficult_boxes"] == sum(sum(t.difficult) for t in truths.values()) > 0
    assert {w: v["boxes"] for w, v in summary["labels"].items()} == dict(
        Counter(w for t in truths.values() for w in t.labels))


def test_only_the_images_of_the_split_are_read(tmp_path, voc):
    root, truths = voc
    (root / "ImageSets" / "Main" / "val.txt").write_text("2008_000003\n2008_000001\n")
    items = read_voc(root, VOC_MAP, split="val")
    assert [i.key for i in items] == ["voc-2008_000001", "voc-2008_000003"]


def test_missing_split_file_says_which_file_and_options_to_check(tmp_path, voc):
    with pytest.raises(PrepareError, match=r"ImageSets/Main/test\.txt.*--split"):
        read_voc(voc[0], VOC_MAP, split="test")


def copy_with_annotation(tmp_path: Path, voc, xml_text: str) -> Path:
    """A VOC folder whose only image has the given annotation text."""
    root = tmp_path / "VOCbad"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("2008_000000\n")
    (root / "Annotations" / "2008_000000.xml").write_text(xml_text)
    return root


@pytest.mark.parametrize("xml_text, message", [
    ("<annotation><object><name>dog</name>", "cannot read VOC annotation"),
    ("<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
     r"object 0 \(dog\): <bndbox> needs xmin, ymin, xmax, ymax as finite numbers"),
    ("<annotation><object><name>dog</name><difficult>maybe</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
     "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>", "<difficult> must be 0 or 1"),
])
def test_malformed_annotation_is_an_error_naming_the_file_and_object(tmp_path, voc, xml_text, message):
    root = copy_with_annotation(tmp_path, voc, xml_text)
    with pytest.raises(PrepareError, match=message) as error:
        read_voc(root, VOC_MAP)
    assert "2008_000000.xml" in str(error.value)


def test_unknown_class_names_stop_the_run_listing_every_offender(tmp_path, voc):
    xml = voc_xml("2008_000000.jpg", 50, 40, [("dog", [1, 1, 9, 9], False), ("griffin", [2, 2, 8, 8], False),
                                              ("yeti", [2, 2, 8, 8], True)])
    root = copy_with_annotation(tmp_path, voc, xml)
    with pytest.raises(PrepareError, match=r"\['griffin', 'yeti'\]"):
        read_voc(root, VOC_MAP)


def test_label_map_giving_a_non_wnid_stops_the_run_naming_it(voc):
    with pytest.raises(PrepareError, match=r"\['n123'\].*not WordNet ids"):
        read_voc(voc[0], {**VOC_MAP, "dog": "n123", "cat": "n123"})
