import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from atomicio import TEMPORARY_GLOB, temporary_path
from datasets import COCO_MAP, build_coco, image_bytes, read_shards, shapes_image
from yolo9000.data.prepare.coco import read_coco
from yolo9000.data.prepare.items import PrepareError
from yolo9000.data.shardwriter.write import WriterConfig, write_shards


def prepare(tmp_path: Path, ann: Path, images: Path, workers: int = 2, **options) -> tuple[Path, dict]:
    out = tmp_path / "shards"
    items = read_coco(ann, images, COCO_MAP, keep_empty=options.pop("keep_empty", True))
    config = WriterConfig(out_dir=out, prefix="coco", shard_size=12_000, workers=workers, show_progress=False,
                          **options)
    return out, write_shards(items, config)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    ann, images, truths = build_coco(root)
    return ann, images, truths


def test_prepared_records_match_the_source_boxes_labels_flags_and_jpeg_bytes(tmp_path, coco):
    ann, images, truths = coco
    out, summary = prepare(tmp_path, ann, images)
    records = read_shards(out, "coco")
    assert sorted(records) == sorted(truths)
    assert summary["shards"] == len(list(out.glob("coco-*.tar"))) > 2
    for file, (shard, record) in records.items():
        truth = truths[file]
        assert record.key == "coco-" + Path(file).stem and record.source == "coco"
        assert (record.width, record.height) == (truth.width, truth.height)
        np.testing.assert_allclose(record.boxes, np.reshape(truth.boxes, (-1, 4)), atol=1e-4)
        assert record.labels == truth.labels
        assert record.crowd == truth.crowd and record.difficult == truth.difficult
        assert record.image_label is None
        assert record.jpeg == truth.data


def test_manifest_rows_equal_the_shard_records_and_summary_counts_the_source(tmp_path, coco):
    ann, images, truths = coco
    out, summary = prepare(tmp_path, ann, images)
    records = read_shards(out, "coco")
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["shard"] for r in rows] == sorted(r["shard"] for r in rows)  # shard by shard, in order
    assert len(rows) == len(records)
    for row in rows:
        shard, record = records[row["file"]]
        assert row["shard"] == shard and row["key"] == record.key
        assert (row["width"], row["height"]) == (record.width, record.height)
        np.testing.assert_allclose(np.reshape(row["boxes"], (-1, 4)), record.boxes)
        assert row["labels"] == record.labels and row["crowd"] == record.crowd
        assert row["image_label"] is None
    assert summary == json.loads((out / "summary.json").read_text())
    label_boxes = Counter(w for t in truths.values() for w in t.labels)
    assert summary["samples"] == len(truths) == summary["detection_samples"]
    assert summary["boxes"] == sum(label_boxes.values())
    assert summary["crowd_boxes"] == 1
    assert {w: v["boxes"] for w, v in summary["labels"].items()} == dict(label_boxes)
    empty = [file for file, truth in truths.items() if not truth.boxes]
    assert summary["skipped"] == {} and summary["changed"] == {}
    assert summary["noticed"] == {"no_boxes": {"count": 1, "examples": empty}}


def test_image_without_annotations_is_an_empty_detection_sample_unless_dropped(tmp_path, coco):
    ann, images, truths = coco
    empty = [file for file, t in truths.items() if not t.boxes]
    assert len(empty) == 1
    kept = read_coco(ann, images, COCO_MAP)
    dropped = read_coco(ann, images, COCO_MAP, keep_empty=False)
    assert [i.file for i in kept if len(i.boxes) == 0] == empty
    assert {i.file for i in kept} - {i.file for i in dropped} == set(empty)


def test_resume_keeps_finished_shards_and_rewrites_a_missing_one_identically(tmp_path, coco):
    ann, images, _ = coco
    out, _ = prepare(tmp_path, ann, images)
    shards = sorted(out.glob("coco-*.tar"))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in shards}
    manifest = (out / "manifest.parquet").read_bytes()
    shards[1].unlink()
    temporary_path(shards[2]).write_bytes(b"stale half-written shard")
    _, summary = prepare(tmp_path, ann, images)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("coco-*.tar")}
    assert after.keys() == before.keys()
    for name in before:
        if name == shards[1].name:
            assert after[name][2] == before[name][2]
        else:
            assert after[name] == before[name]
    assert not list(out.rglob(TEMPORARY_GLOB))
    assert pq.read_table(out / "manifest.parquet").equals(pq.read_table(io.BytesIO(manifest)))


def test_resume_into_a_folder_of_other_options_is_refused(tmp_path, coco):
    ann, images, _ = coco
    prepare(tmp_path, ann, images, workers=1)
    with pytest.raises(PrepareError, match="different input or options"):
        prepare(tmp_path, ann, images, workers=1, max_side=50)


def bad_copy(tmp_path: Path, coco, edit) -> tuple[Path, Path]:
    """A copy of the dataset's annotation file edited by `edit(data)`, over the same images."""
    ann, images, _ = coco
    data = json.loads(ann.read_text())
    edit(data)
    path = tmp_path / "instances_bad.json"
    path.write_text(json.dumps(data))
    return path, images


def test_corrupt_image_is_skipped_and_png_is_reencoded_both_counted_and_named(tmp_path, coco):
    ann, _, truths = coco
    images = tmp_path / "images"
    images.mkdir()
    for file, truth in truths.items():
        (images / file).write_bytes(truth.data)
    corrupt, png = sorted(truths)[2], sorted(truths)[5]
    (images / corrupt).write_bytes(truths[corrupt].data[: len(truths[corrupt].data) // 2])
    (images / png).write_bytes(image_bytes(shapes_image(truths[png].width, truths[png].height, 7), "PNG"))
    out, summary = prepare(tmp_path, ann, images)
    records = read_shards(out, "coco")
    assert corrupt not in records and len(records) == len(truths) - 1
    assert summary["skipped"]["corrupt_image"] == {"count": 1, "examples": [corrupt]}
    assert summary["changed"]["reencoded_non_jpeg"] == {"count": 1, "examples": [png]}
    reencoded = records[png][1]
    assert Image.open(io.BytesIO(reencoded.jpeg)).format == "JPEG"
    assert (reencoded.width, reencoded.height) == (truths[png].width, truths[png].height)
    assert summary["samples"] == len(truths) - 1 and summary["items"] == len(truths)


def test_boxes_are_clipped_to_the_image_and_degenerate_ones_dropped_and_counted(tmp_path, coco):
    _, _, truths = coco
    first = sorted(truths)[0]
    truth = truths[first]
    image_id = int(Path(first).stem)

    def edit(data):
        ann = {"image_id": image_id, "category_id": 10, "iscrowd": 0}
        data["annotations"] += [
            {**ann, "id": 90001, "bbox": [-5.0, 2.0, truth.width + 20.0, 4.0]},  # sticks out both sides
            {**ann, "id": 90002, "bbox": [3.0, 3.0, 0.0, 5.0]},  # zero width
            {**ann, "id": 90003, "bbox": [truth.width + 1.0, 1.0, 5.0, 5.0]},  # wholly outside
        ]

    out, summary = prepare(tmp_path, *bad_copy(tmp_path, coco, edit), workers=1)
    record = read_shards(out, "coco")[first][1]
    np.testing.assert_allclose(record.boxes[-1], [0.0, 2.0, truth.width, 6.0])
    assert len(record.boxes) == len(truth.boxes) + 1
    assert summary["changed"]["boxes_clipped"] == {"count": 1, "examples": [first]}
    assert summary["changed"]["degenerate_boxes_dropped"] == {"count": 2, "examples": [first]}


def test_image_whose_size_differs_from_the_annotation_is_kept_and_noticed(tmp_path, coco):
    def edit(data):
        data["images"][3]["width"] += 10

    ann, images = bad_copy(tmp_path, coco, edit)
    file = json.loads(ann.read_text())["images"][3]["file_name"]
    _, summary = prepare(tmp_path, ann, images, workers=1)
    assert summary["samples"] == len(coco[2])
    assert summary["noticed"]["size_differs_from_annotation"]["count"] == 1
    assert summary["noticed"]["size_differs_from_annotation"]["examples"][0].startswith(file + ": annotation says")


@pytest.mark.parametrize("bad_field, value, message", [
    ("bbox", [1.0, 2.0, 3.0], "bbox' must be 4 finite numbers"),
    ("bbox", "oops", "bbox' must be 4 finite numbers"),
    ("image_id", 424242, "image_id is not among"),
    ("category_id", 99, "category_id 99"),
])
def test_malformed_annotation_names_the_file_and_the_annotation(tmp_path, coco, bad_field, value, message):
    def edit(data):
        data["annotations"][4][bad_field] = value

    ann, images = bad_copy(tmp_path, coco, edit)
    with pytest.raises(PrepareError, match=message) as error:
        read_coco(ann, images, COCO_MAP)
    assert str(ann) in str(error.value) and "annotation 5 " in str(error.value)


def test_missing_image_folder_is_an_error_naming_it(tmp_path, coco):
    with pytest.raises(PrepareError, match="val2017 is not a folder"):
        read_coco(coco[0], tmp_path / "val2017", COCO_MAP)


def test_unreadable_annotation_file_is_an_error_naming_it(tmp_path, coco):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(PrepareError, match="broken.json"):
        read_coco(path, coco[1], COCO_MAP)


def test_unknown_categories_stop_the_run_before_writing_listing_every_offender(tmp_path, coco):
    def edit(data):
        data["categories"][0]["name"] = "hovercraft"
        data["categories"][2]["name"] = "unicorn"

    with pytest.raises(PrepareError, match=r"\['hovercraft', 'unicorn'\]"):
        prepare(tmp_path, *bad_copy(tmp_path, coco, edit))
    assert not (tmp_path / "shards").exists()


def test_max_side_downsizes_large_images_and_scales_their_boxes(tmp_path, coco):
    ann, images, truths = coco
    out, summary = prepare(tmp_path, ann, images, workers=1, max_side=64)
    records = read_shards(out, "coco")
    resized = 0
    for file, (_, record) in records.items():
        truth = truths[file]
        scale = min(1.0, 64 / max(truth.width, truth.height))
        assert max(record.width, record.height) <= 64
        assert record.width == max(1, round(truth.width * scale)) and record.height == max(1, round(truth.height * scale))
        sx, sy = record.width / truth.width, record.height / truth.height
        np.testing.assert_allclose(record.boxes, np.reshape(truth.boxes, (-1, 4)) * [sx, sy, sx, sy], atol=1e-3)
        if scale < 1:
            resized += 1
            assert Image.open(io.BytesIO(record.jpeg)).size == (record.width, record.height)
        else:
            assert record.jpeg == truth.data
    assert resized > 0 and summary["changed"]["resized"]["count"] == resized


def test_label_map_giving_a_non_wnid_stops_the_run_naming_it(tmp_path, coco):
    ann, images, _ = coco
    with pytest.raises(PrepareError, match=r"\['dog'\].*not WordNet ids"):
        read_coco(ann, images, {**COCO_MAP, "cat": "dog"})
