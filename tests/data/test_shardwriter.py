import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image, ImageFile

from datasets import image_bytes, shapes_image
from yolo9000.data.prepare.items import PrepareError, SourceItem
from yolo9000.data.schema import SampleRecord, wds_to_record
from yolo9000.data.shardwriter.encode import clip_boxes, decoded_format_and_size, materialise
from yolo9000.data.shardwriter.plan import PARTS_DIR, plan_shards
from yolo9000.data.shardwriter.write import WriterConfig, write_shards, write_tar


def test_shard_plan_is_consecutive_greedy_and_within_the_target_size():
    sizes = list(np.random.default_rng(0).integers(1, 400, 200))
    plan = plan_shards(sizes, 1000)
    assert [i for shard in plan for i in shard] == list(range(200))
    for shard, following in zip(plan, plan[1:] + [None]):
        total = sum(sizes[i] for i in shard)
        assert total <= 1000 or len(shard) == 1
        if following:
            assert total + sizes[following[0]] > 1000  # greedy: the next item would not have fitted
    assert plan_shards([5000, 10, 10], 1000) == [[0], [1, 2]]
    assert plan_shards([], 1000) == []


def test_clip_boxes_matches_a_box_by_box_reference():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(-30, 130, (500, 4)).astype(np.float32)
    clipped, keep, changed = clip_boxes(boxes, 100, 80)
    for box, out, kept, was_changed in zip(boxes, clipped, keep, changed):
        expected = [min(max(box[0], 0), 100), min(max(box[1], 0), 80), min(max(box[2], 0), 100), min(max(box[3], 0), 80)]
        assert list(out) == pytest.approx(expected)
        assert kept == (expected[2] > expected[0] and expected[3] > expected[1])
        assert was_changed == (list(box) != expected)


def item_for(path: Path, **changes) -> SourceItem:
    fields = dict(key="t-1", source="t", file=path.name, path=str(path), boxes=np.array([[1, 1, 10, 10]], np.float32),
                  labels=["n02084071"], crowd=[False], difficult=[True])
    return SourceItem(**{**fields, **changes})


def test_jpeg_that_pil_cannot_verify_but_can_decode_is_reencoded_and_counted(tmp_path, monkeypatch):
    path = tmp_path / "a.jpg"
    path.write_bytes(image_bytes(shapes_image(40, 30, 0)))

    def refuse(self):
        raise SyntaxError("broken marker")

    monkeypatch.setattr(ImageFile.ImageFile, "verify", refuse)
    record, events = materialise(item_for(path))
    assert events == [("reencoded_unverifiable_jpeg", 1, "a.jpg")]
    assert record.jpeg != path.read_bytes() and Image.open(io.BytesIO(record.jpeg)).size == (40, 30)
    assert record.difficult == [True]


def test_valid_grayscale_jpeg_keeps_its_original_bytes(tmp_path):
    path = tmp_path / "g.jpg"
    path.write_bytes(image_bytes(shapes_image(40, 30, 0).convert("L")))
    record, events = materialise(item_for(path))
    assert events == [] and record.jpeg == path.read_bytes()


def test_missing_image_is_skipped_and_named(tmp_path):
    record, events = materialise(item_for(tmp_path / "gone.jpg"))
    assert record is None and events[0][0] == "unreadable_image" and "gone.jpg" in events[0][2]


def test_same_records_give_byte_identical_tars_that_webdataset_reads_back(tmp_path):
    records = [SampleRecord(key=f"k-{i}", source="t", file=f"{i}.jpg", width=8, height=8, jpeg=bytes([i]) * 50,
                            boxes=[[0, 0, 4, 4]], labels=["n02084071"], crowd=[False], difficult=[False])
               for i in range(3)]
    write_tar(records, tmp_path / "a.tar")
    write_tar(records, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    back = [wds_to_record(s) for s in wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False)]
    assert [r.key for r in back] == ["k-0", "k-1", "k-2"] and back[1].jpeg == records[1].jpeg


def test_duplicate_keys_are_refused_naming_them(tmp_path):
    items = [item_for(tmp_path / "a.jpg", key="t-1"), item_for(tmp_path / "b.jpg", key="t-1")]
    with pytest.raises(PrepareError, match=r"1 sample keys are shared by several images \(t-1: a.jpg, b.jpg\)"):
        write_shards(items, WriterConfig(out_dir=tmp_path / "out", workers=1, show_progress=False))


def test_shard_whose_manifest_part_is_missing_is_written_again(tmp_path):
    items = []
    for i in range(6):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(image_bytes(shapes_image(40, 30, i)))
        items.append(item_for(path, key=f"t-{i}", size_estimate=path.stat().st_size))
    config = WriterConfig(out_dir=tmp_path / "out", shard_size=2 * items[0].size_estimate + 10, workers=1,
                          show_progress=False)
    first = write_shards(items, config)
    shard = tmp_path / "out" / "shard-000001.tar"
    before = shard.read_bytes()
    (tmp_path / "out" / PARTS_DIR / "shard-000001.tar.parquet").unlink()
    second = write_shards(items, config)
    assert shard.read_bytes() == before and first == second
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["samples"] == 6


def full_decode_fails(data: bytes) -> bool:
    """Reference: decode every pixel at full size."""
    try:
        Image.open(io.BytesIO(data)).load()
        return False
    except Exception:
        return True


@pytest.mark.parametrize("progressive", [False, True])
def test_draft_decode_check_finds_the_same_corrupt_jpegs_as_a_full_decode(progressive):
    out = io.BytesIO()
    shapes_image(320, 240, 3).save(out, format="JPEG", quality=90, progressive=progressive)
    data = out.getvalue()
    rng = np.random.default_rng(4)
    variants = [data[:n] for n in np.linspace(10, len(data) - 1, 25).astype(int)]
    for position in rng.integers(100, len(data), 25):
        damaged = bytearray(data)
        damaged[position : position + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        variants.append(bytes(damaged))
    for variant in variants:
        assert (decoded_format_and_size(variant) is None) == full_decode_fails(variant)
    assert decoded_format_and_size(data) == ("JPEG", (320, 240))
    assert sum(full_decode_fails(v) for v in variants) >= 20


def test_empty_item_list_writes_an_empty_manifest_and_summary(tmp_path):
    summary = write_shards([], WriterConfig(out_dir=tmp_path / "out", workers=2, show_progress=False))
    assert summary["samples"] == summary["shards"] == summary["items"] == 0 and summary["labels"] == {}
    assert pq.read_table(tmp_path / "out" / "manifest.parquet").num_rows == 0


def test_multi_picture_jpeg_from_a_camera_keeps_its_original_bytes(tmp_path):
    path = tmp_path / "camera.jpg"
    shapes_image(40, 30, 0).save(path, format="MPO", save_all=True, append_images=[shapes_image(40, 30, 1)])
    assert Image.open(path).format == "MPO"
    record, events = materialise(item_for(path))
    assert events == [] and record.jpeg == path.read_bytes() and (record.width, record.height) == (40, 30)
