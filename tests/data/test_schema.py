import json

import numpy as np
import pyarrow as pa
import pytest

from yolo9000.data.schema import MANIFEST_SCHEMA, SampleRecord, SchemaError, record_to_wds, validate_record, wds_to_record

CONTRACT_JSON_KEYS = {"source", "file", "width", "height", "boxes", "labels", "crowd", "difficult", "image_label"}


def detection(**changes) -> SampleRecord:
    fields = dict(key="coco-000000000042", source="coco", file="000000000042.jpg", width=64, height=48,
                  jpeg=b"\xff\xd8jpeg bytes", boxes=[[1.5, 2.0, 30.0, 40.0], [0.0, 0.0, 64.0, 48.0]],
                  labels=["n02084071", "n00007846"], crowd=[False, True], difficult=[False, False])
    return SampleRecord(**{**fields, **changes})


def classification(**changes) -> SampleRecord:
    fields = dict(key="imagenet-n01440764_10026", source="imagenet", file="n01440764/n01440764_10026.JPEG",
                  width=500, height=375, jpeg=b"\xff\xd8x", image_label="n01440764")
    return SampleRecord(**{**fields, **changes})


@pytest.mark.parametrize("record", [detection(), classification()])
def test_record_survives_the_webdataset_sample_round_trip(record):
    sample = record_to_wds(record)
    assert sample["__key__"] == record.key and sample["jpg"] == record.jpeg
    meta = json.loads(sample["json"])
    assert set(meta) == CONTRACT_JSON_KEYS
    back = wds_to_record(sample)
    np.testing.assert_array_equal(back.boxes, record.boxes)
    assert back.boxes.dtype == np.float32 and back.boxes.shape == (len(record.labels), 4)
    for name in ("key", "source", "file", "width", "height", "jpeg", "labels", "crowd", "difficult", "image_label"):
        assert getattr(back, name) == getattr(record, name)


def test_classification_json_has_empty_box_lists_and_a_wnid_image_label():
    meta = json.loads(record_to_wds(classification())["json"])
    assert meta["boxes"] == meta["labels"] == meta["crowd"] == meta["difficult"] == []
    assert meta["image_label"] == "n01440764"
    assert json.loads(record_to_wds(detection())["json"])["image_label"] is None


def test_manifest_row_has_the_manifest_columns_and_types():
    table = pa.Table.from_pylist([detection().manifest_row("coco-000000.tar"), classification().manifest_row("x.tar")],
                                 schema=MANIFEST_SCHEMA)
    assert table.schema.field("width").type == pa.int32()
    assert table.schema.field("boxes").type == pa.list_(pa.list_(pa.float32()))
    rows = table.to_pylist()
    assert rows[0]["shard"] == "coco-000000.tar" and rows[0]["crowd"] == [False, True]
    assert rows[1]["image_label"] == "n01440764" and rows[0]["image_label"] is None


def test_valid_records_pass_validation():
    validate_record(detection())
    validate_record(classification())
    validate_record(detection(boxes=np.zeros((0, 4)), labels=[], crowd=[], difficult=[]))


@pytest.mark.parametrize("record, message", [
    (detection(boxes=[[1, 2, 65, 40], [0, 0, 5, 5]]), "outside"),
    (detection(boxes=[[-1, 2, 30, 40], [0, 0, 5, 5]]), "outside"),
    (detection(boxes=[[10, 2, 10, 40], [0, 0, 5, 5]]), "empty"),
    (detection(labels=["n02084071"]), "2 boxes but 1 labels"),
    (detection(crowd=[False]), "2 boxes but 1 crowd"),
    (detection(labels=["dog", "n0000784"]), "WordNet ids"),
    (classification(boxes=[[0, 0, 5, 5]], labels=["n01440764"], crowd=[False], difficult=[False]), "no boxes"),
    (classification(image_label="goldfish"), "image_label must be a WordNet id"),
    (detection(key="coco.42"), "no dots"),
    (detection(width=0), "positive"),
])
def test_invalid_records_are_refused_naming_the_record(record, message):
    with pytest.raises(SchemaError, match=message) as error:
        validate_record(record)
    assert record.key in str(error.value)
