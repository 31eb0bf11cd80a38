import functools
import http.server
import io
import itertools
import json
import random
import threading

import pytest
import torch
from PIL import Image

from shards import ALL_WNIDS, classification_record, detection_record, detection_shards, jpeg_bytes
from yolo9000.data.decode import decode_image, decode_sample
from yolo9000.data.labelmap import LabelMap
from yolo9000.data.schema import SampleRecord
from yolo9000.data.shardwriter.write import write_tar
from yolo9000.data.stream import Slot, SourceStream, StreamError, list_shards


def keys_of(stream: SourceStream, slot: Slot = Slot()) -> list[str]:
    return [s["__key__"] for s in stream.iterate(slot)]


def test_every_record_decodes_into_its_boxes_and_labels(tmp_path):
    paths, records = detection_shards(tmp_path, count=12, per_shard=5)
    labelmap = LabelMap.from_classes(ALL_WNIDS)
    stream = SourceStream([str(p) for p in paths], resampled=False, shardshuffle=False, shuffle=0)
    decoded = {}
    for sample in stream.iterate(Slot()):
        image, target = decode_sample(sample, labelmap)
        decoded[target["key"]] = (image, target)
    assert sorted(decoded) == sorted(r["__key__"] for r in records)
    for record in records:
        image, target = decoded[record["__key__"]]
        meta = record["meta"]
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, meta["height"], meta["width"])
        assert torch.equal(target["boxes"], torch.tensor(meta["boxes"], dtype=torch.float32))
        assert target["labels"].tolist() == [ALL_WNIDS.index(w) for w in meta["labels"]]
        assert target["image_label"] == -1 and not target["is_classification"]
        assert target["source"] == "coco" and target["orig_size"] == (meta["height"], meta["width"])


def test_url_forms_list_brace_pattern_and_directory_name_the_same_shards(tmp_path):
    paths, _ = detection_shards(tmp_path, count=12, per_shard=4)
    pattern = str(tmp_path / "coco-{000000..000002}.tar")
    assert list_shards(pattern) == list_shards(str(tmp_path)) == [str(p) for p in paths]


def test_two_nodes_by_two_workers_cover_every_sample_exactly_once(tmp_path):
    paths, records = detection_shards(tmp_path, count=30, per_shard=3)  # 10 shards over 4 readers
    stream = SourceStream(str(tmp_path), resampled=False, shardshuffle=True, shuffle=8, seed=3)
    seen = []
    for rank, worker in itertools.product(range(2), range(2)):
        seen += keys_of(stream, Slot(rank=rank, world_size=2, worker=worker, num_workers=2))
    assert sorted(seen) == sorted(r["__key__"] for r in records)


def test_resampled_streams_never_run_dry_with_more_readers_than_shards(tmp_path):
    detection_shards(tmp_path, count=6, per_shard=3)  # 2 shards, 6 readers
    stream = SourceStream(str(tmp_path), resampled=True, shuffle=4)
    for rank, worker in itertools.product(range(2), range(3)):
        samples = list(itertools.islice(stream.iterate(Slot(rank, 2, worker, 3)), 40))
        assert len(samples) == 40


def test_one_epoch_stream_with_fewer_shards_than_readers_is_refused_clearly(tmp_path):
    detection_shards(tmp_path, count=6, per_shard=3)
    stream = SourceStream(str(tmp_path), resampled=False, shuffle=0)
    with pytest.raises(StreamError, match="2 shard.*4 readers.*resampled=True"):
        keys_of(stream, Slot(rank=1, world_size=2, worker=1, num_workers=2))


def test_one_epoch_sample_order_repeats_with_the_seed_and_changes_without(tmp_path):
    detection_shards(tmp_path, count=30, per_shard=5)
    first = keys_of(SourceStream(str(tmp_path), resampled=False, shuffle=10, seed=7))
    again = keys_of(SourceStream(str(tmp_path), resampled=False, shuffle=10, seed=7))
    other = keys_of(SourceStream(str(tmp_path), resampled=False, shuffle=10, seed=8))
    assert first == again and first != other and sorted(first) == sorted(other)


def test_shards_stream_over_http_from_a_loopback_server(tmp_path):
    paths, records = detection_shards(tmp_path, count=8, per_shard=4)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        urls = f"http://127.0.0.1:{port}/coco-{{000000..000001}}.tar"
        keys = keys_of(SourceStream(urls, resampled=False, shuffle=0))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert sorted(keys) == sorted(r["__key__"] for r in records)


def test_shards_stream_through_a_pipe_command(tmp_path):
    paths, records = detection_shards(tmp_path, count=8, per_shard=4)
    urls = [f"pipe:cat {p}" for p in paths]
    samples = list(SourceStream(urls, resampled=False, shardshuffle=False, shuffle=0).iterate(Slot()))
    assert [s["__key__"] for s in samples] == [r["__key__"] for r in records]
    assert json.loads(samples[0]["json"]) == records[0]["meta"]


def test_a_truncated_shard_is_reported_by_name_and_the_rest_streams(tmp_path):
    paths, records = detection_shards(tmp_path, count=12, per_shard=4)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2 + 100])  # cut in the middle of a member
    stream = SourceStream([str(p) for p in paths], resampled=False, shardshuffle=False, shuffle=0)
    with pytest.warns(UserWarning, match=f"shard {paths[1]} could not be read"):
        keys = keys_of(stream)
    assert stream.counters.unreadable_shards == 1
    assert str(paths[1]) in stream.counters.examples[0]
    expected_whole = [r["__key__"] for r in records[:4] + records[8:]]
    assert set(expected_whole) <= set(keys) and len(keys) < len(records)


def test_a_resampled_source_whose_shards_are_all_unreadable_fails_instead_of_spinning(tmp_path):
    (tmp_path / "bad-000000.tar").write_bytes(b"not a tar file at all" * 40)
    stream = SourceStream(str(tmp_path), name="bad", resampled=True, shuffle=0)
    with pytest.warns(UserWarning, match="bad-000000.tar could not be read"):
        with pytest.raises(StreamError, match="source 'bad'.*gave no sample"):
            next(stream.iterate(Slot()))


def test_cmyk_jpeg_decodes_to_rgb_of_the_same_colour():
    rgb = Image.new("RGB", (24, 16), (200, 40, 30))
    out = io.BytesIO()
    rgb.convert("CMYK").save(out, format="JPEG", quality=95)
    image = decode_image(out.getvalue())
    assert image.shape == (3, 16, 24) and image.dtype == torch.uint8
    assert (image.float().mean((1, 2)) - torch.tensor([200.0, 40.0, 30.0])).abs().max() < 12


def test_greyscale_jpeg_decodes_to_three_channels():
    image = decode_image(jpeg_bytes(20, 10, [[0, 0, 10, 10]], mode="L"))
    assert image.shape == (3, 10, 20) and torch.equal(image[0], image[1])
    assert image[:, :, :8].float().mean() > 200 and image[:, :, 12:].float().mean() < 60


def test_shards_from_the_project_shard_writer_stream_and_decode(tmp_path):
    rng = random.Random(5)
    raw = [detection_record("coco", i, rng) for i in range(3)] + [classification_record("imagenet", 3, rng)]
    records = [SampleRecord(key=r["__key__"], jpeg=r["jpg"], **r["meta"]) for r in raw]
    write_tar(records, tmp_path / "mixed-000000.tar")
    labelmap = LabelMap.from_classes(ALL_WNIDS)
    stream = SourceStream(str(tmp_path), resampled=False, shardshuffle=False, shuffle=0)
    decoded = [decode_sample(sample, labelmap) for sample in stream.iterate(Slot())]
    assert [t["key"] for _, t in decoded] == [r["__key__"] for r in raw]
    for (image, target), r in zip(decoded, raw):
        assert torch.equal(target["boxes"], torch.tensor(r["meta"]["boxes"], dtype=torch.float32).reshape(-1, 4))
        assert target["is_classification"] == (r["meta"]["image_label"] is not None)
        assert image.shape == (3, r["meta"]["height"], r["meta"]["width"])
