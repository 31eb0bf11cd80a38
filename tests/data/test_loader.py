import dataclasses
import itertools
import random

import pytest
import torch

from shards import ALL_WNIDS, classification_shards, detection_record, detection_shards, write_shards
from yolo9000.data.collate import CanvasError
from yolo9000.data.labelmap import LabelMap, UnknownLabelError
from yolo9000.data.loader import Loader, LoaderConfig, batches_before, transforms_for
from yolo9000.data.warp import device_batch

LABELMAP = LabelMap.from_classes(ALL_WNIDS)
BOTH_PATHS = pytest.mark.parametrize("augment_on", ["worker", "device"])  # geometry in the workers, or as numbers


def config(tmp_path, **overrides) -> LoaderConfig:
    values = dict(
        sources=[{"name": "coco", "urls": str(tmp_path / "coco"), "weight": 1, "kind": "detection"},
                 {"name": "imagenet", "urls": str(tmp_path / "imagenet"), "weight": 3, "kind": "classification"}],
        batch_size=4, image_size=64, num_workers=2, shuffle_buffer=8, seed=11, max_boxes=5,
        persistent_workers=False,
    )
    values.update(overrides)
    return LoaderConfig(**values)


@pytest.fixture
def two_sources(tmp_path):
    detection_shards(tmp_path / "coco", count=16, per_shard=4)
    classification_shards(tmp_path / "imagenet", count=16, per_shard=4)
    return tmp_path


def take(loader: Loader, steps: int) -> list[dict]:
    return list(itertools.islice(iter(loader), steps))


def assert_same_batches(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for name in ("images", "hsv"):
            assert torch.equal(x[name], y[name]), name
        for name in ("boxes", "labels", "is_classification", "image_label"):
            assert torch.equal(getattr(x["targets"], name), getattr(y["targets"], name)), name
        assert ("warp" in x) == ("warp" in y)
        if "warp" in x:
            for name in ("affine", "box_map", "clamp_box", "fill", "min_size", "box_clip"):
                assert torch.equal(getattr(x["warp"], name), getattr(y["warp"], name)), name


@BOTH_PATHS
def test_batches_follow_the_contract_and_mix_both_sources(two_sources, augment_on):
    loader = Loader(config(two_sources, augment_on=augment_on), LABELMAP)
    batches = take(loader, 6)
    for batch in batches:
        assert batch["images"].dtype == torch.uint8 and batch["images"].is_contiguous(memory_format=torch.channels_last)
        if augment_on == "worker":
            assert batch["images"].shape == (4, 3, 64, 64)
        else:  # the decoded images unchanged on a canvas of the batch's largest sides (shards: 96 x 80 and 64 x 64)
            assert batch["images"].shape == (4, 3, batch["orig_sizes"][:, 0].max(), batch["orig_sizes"][:, 1].max())
        images, targets = device_batch(batch, 48, "cpu")
        assert images.shape == (4, 3, 48, 48) and images.dtype == torch.float32
        assert targets.boxes.shape == (4, 5, 4) and targets.labels.shape == (4, 5)
        assert (targets.boxes >= 0).all() and (targets.boxes <= 1).all()
        classification = targets.is_classification
        assert classification.tolist() == [s == "imagenet" for s in batch["sources"]]
        assert (targets.image_label[classification] >= 3).all() and (targets.image_label[~classification] == -1).all()
        assert ((targets.labels >= 0).sum(1)[classification] == 0).all()
    assert sum(loader.stats["source_counts"].values()) >= 24


def test_both_paths_read_the_same_samples_in_the_same_order_and_give_the_same_boxes(two_sources):
    worker = take(Loader(config(two_sources), LABELMAP), 4)
    device = take(Loader(config(two_sources, augment_on="device"), LABELMAP), 4)
    for x, y in zip(worker, device):
        assert x["keys"] == y["keys"] and torch.equal(x["hsv"], y["hsv"])
        targets = device_batch(y, 64, "cpu")[1]
        assert torch.equal(x["targets"].labels, targets.labels)
        assert (x["targets"].boxes - targets.boxes).abs().max() <= 1e-4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_image_larger_than_the_canvas_stops_the_loader_naming_sample_and_shard(two_sources, num_workers):
    cfg = config(two_sources, augment_on="device", canvas_max_side=80, num_workers=num_workers,
                 sources=[{"name": "coco", "urls": str(two_sources / "coco")}])  # its images are 96 x 80
    with pytest.raises(CanvasError, match=r"sample coco-\d{6} in .*coco-\d{6}\.tar is 80x96 \(H x W\), larger than the "
                                          r"loader's canvas of 80 px") as error:
        take(Loader(cfg, LABELMAP), 2)
    assert "Traceback" not in str(error.value)


@BOTH_PATHS
def test_same_seed_gives_the_same_batches_and_another_seed_does_not(two_sources, augment_on):
    first = take(Loader(config(two_sources, augment_on=augment_on), LABELMAP), 5)
    again = take(Loader(config(two_sources, augment_on=augment_on), LABELMAP), 5)
    other = take(Loader(config(two_sources, seed=12, augment_on=augment_on), LABELMAP), 5)
    assert_same_batches(first, again)
    assert [b["keys"] for b in first] != [b["keys"] for b in other]


@BOTH_PATHS
@pytest.mark.parametrize("num_workers, start_step", [(2, 3), (2, 4), (0, 3)])
def test_resuming_at_a_step_yields_exactly_the_following_batches(two_sources, num_workers, start_step, augment_on):
    cfg = config(two_sources, num_workers=num_workers, augment_on=augment_on)
    uninterrupted = take(Loader(cfg, LABELMAP), 8)
    resumed = take(Loader(cfg, LABELMAP, start_step=start_step), 8 - start_step)
    assert_same_batches(uninterrupted[start_step:], resumed)


@BOTH_PATHS
def test_resuming_from_saved_positions_is_exact_even_after_corrupt_samples(tmp_path, augment_on):
    rng = random.Random(0)
    records = [detection_record("coco", i, rng) for i in range(24)]
    for i in (1, 6, 13):
        records[i]["jpg"] = b"\xff\xd8 broken"
    write_shards(tmp_path / "coco", "coco", records, per_shard=6)
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}], batch_size=3,
                 augment_on=augment_on)
    uninterrupted = take(Loader(cfg, LABELMAP), 9)
    first = Loader(cfg, LABELMAP)
    take(first, 5)
    assert first.stats["corrupt_samples"] >= 1  # skipped on the way, in the loader workers
    resumed = take(Loader(cfg, LABELMAP, start_step=5, start_positions=first.positions), 4)
    assert_same_batches(uninterrupted[5:], resumed)


@BOTH_PATHS
def test_two_resumes_taken_before_every_worker_delivered_are_still_exact(two_sources, augment_on):
    cfg = config(two_sources, num_workers=2, augment_on=augment_on)
    uninterrupted = take(Loader(cfg, LABELMAP), 8)
    first = Loader(cfg, LABELMAP)
    take(first, 3)
    second = Loader(cfg, LABELMAP, start_step=3, start_positions=first.positions)
    assert_same_batches(uninterrupted[3:4], take(second, 1))  # only one worker delivers before the next save
    assert set(second.positions) == {0, 1}
    third = Loader(cfg, LABELMAP, start_step=4, start_positions=second.positions)
    assert_same_batches(uninterrupted[4:8], take(third, 4))


def test_batches_before_counts_each_workers_share_of_earlier_steps():
    for start, workers in itertools.product(range(12), range(1, 4)):
        for worker in range(workers):
            slow = sum(1 for step in range(start) if step % workers == worker)
            assert batches_before(start, worker, workers) == slow


@BOTH_PATHS
def test_one_epoch_over_two_ranks_sees_every_sample_once(tmp_path, augment_on):
    _, records = detection_shards(tmp_path / "coco", count=20, per_shard=2)
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}], resampled=False,
                 augment=False, augment_on=augment_on)
    keys = [key for rank in range(2) for batch in Loader(cfg, LABELMAP, rank=rank, world_size=2)
            for key in batch["keys"]]
    assert sorted(keys) == sorted(r["__key__"] for r in records)


@BOTH_PATHS
def test_evaluation_batches_keep_boxes_on_their_rectangles(tmp_path, augment_on):
    _, records = detection_shards(tmp_path / "coco", count=8, per_shard=4)
    by_key = {r["__key__"]: r for r in records}
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}], resampled=False,
                 augment=False, num_workers=0, image_size=96, augment_on=augment_on)
    for batch in Loader(cfg, LABELMAP):
        images, targets = device_batch(batch, 96, "cpu")
        for i, key in enumerate(batch["keys"]):
            count = int((targets.labels >= 0).sum(1)[i])
            assert count == len(by_key[key]["meta"]["boxes"])
            gray = images[i].mean(0) * 255
            for x0, y0, x1, y1 in (targets.boxes[i, :count] * 96).round().int().tolist():
                assert gray[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].min() > 180


@pytest.mark.parametrize("augment_on, decode_on", [("worker", "worker"), ("device", "worker"), ("device", "device")])
def test_a_corrupt_jpeg_and_a_bad_json_are_skipped_and_counted(tmp_path, augment_on, decode_on):
    rng = random.Random(0)
    records = [detection_record("coco", i, rng) for i in range(8)]
    records[2]["jpg"] = b"\xff\xd8\xff\xe0 this is not a jpeg"
    records[5]["json_bytes"] = b"{not json"
    write_shards(tmp_path / "coco", "coco", records, per_shard=4)
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}], resampled=False,
                 num_workers=0, batch_size=3, augment_on=augment_on, decode_on=decode_on)
    loader = Loader(cfg, LABELMAP)
    with pytest.warns(UserWarning) as caught:
        keys = [key for batch in loader for key in batch["keys"]]
    skipped = sorted(str(w.message) for w in caught if "skipped corrupt sample" in str(w.message))
    assert len(skipped) == 2 and "coco-000002" in skipped[0] and "bad JPEG" in skipped[0]
    assert "coco-000005" in skipped[1] and "bad json" in skipped[1]
    assert sorted(keys) == sorted(r["__key__"] for i, r in enumerate(records) if i not in (2, 5))
    assert loader.stats["corrupt_samples"] == 2


def test_an_unknown_wnid_in_a_shard_stops_the_loader_naming_it(tmp_path):
    rng = random.Random(0)
    records = [detection_record("coco", i, rng) for i in range(4)]
    records[1]["meta"]["labels"][0] = "n09999999"
    write_shards(tmp_path / "coco", "coco", records, per_shard=4)
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}], num_workers=0)
    with pytest.raises(UnknownLabelError, match="n09999999"):
        take(Loader(cfg, LABELMAP), 2)


def test_bad_config_is_refused_with_the_field():
    with pytest.raises(ValueError, match="sources is empty"):
        LoaderConfig(sources=[])
    with pytest.raises(ValueError, match="kind 'segmentation'"):
        LoaderConfig(sources=[{"name": "x", "urls": "x", "kind": "segmentation"}])


def test_resampled_loader_with_more_workers_than_shards_keeps_delivering(tmp_path):
    detection_shards(tmp_path / "coco", count=4, per_shard=4)  # one shard, 2 ranks x 2 workers
    cfg = config(tmp_path, sources=[{"name": "coco", "urls": str(tmp_path / "coco")}])
    for rank in range(2):
        batches = take(Loader(cfg, LABELMAP, rank=rank, world_size=2), 6)
        assert len(batches) == 6 and all(len(b["keys"]) == 4 for b in batches)


@BOTH_PATHS
def test_each_rank_repeats_its_own_sequence_and_ranks_differ(two_sources, augment_on):
    cfg = config(two_sources, augment_on=augment_on)
    keys = {rank: [b["keys"] for b in take(Loader(cfg, LABELMAP, rank=rank, world_size=2), 4)] for rank in range(2)}
    again = [b["keys"] for b in take(Loader(cfg, LABELMAP, rank=1, world_size=2), 4)]
    assert again == keys[1] and keys[0] != keys[1]


@BOTH_PATHS
def test_workers_reuse_image_buffers_the_consumer_dropped_and_never_those_it_holds(two_sources, augment_on):
    cfg = config(two_sources, num_workers=2, batch_size=2, augment_on=augment_on)
    held, copies, dropped_copies, buffers = [], [], [], set()
    loader = Loader(cfg, LABELMAP)
    for step, batch in zip(range(40), loader):
        if step < 4:  # kept for the whole run: their memory must never be written again
            held.append(batch)
            copies.append(batch["images"].clone())
        else:
            dropped_copies.append(batch["images"].clone())
        buffers |= {(stats["buffer"][0], tuple(stats["buffer"][1])) for stats in loader.per_worker.values()}
    assert len(buffers) < 24  # the 40 batches came from far fewer buffers
    for batch, copy in zip(held, copies):
        assert torch.equal(batch["images"], copy)
    fresh = Loader(dataclasses.replace(cfg, reuse_buffers=False), LABELMAP)
    reference = take(fresh, 40)
    assert all(stats["buffer"] is None for stats in fresh.per_worker.values())
    for batch, copy in zip(reference, copies + dropped_copies):
        assert torch.equal(batch["images"], copy)


@pytest.mark.parametrize("recipe,same", [("detection", True), ("classifier", False)])
def test_classification_images_take_the_detection_recipe_when_asked(tmp_path, recipe, same):
    cfg = dataclasses.replace(config(tmp_path), classification_augment=recipe, image_size=64)
    image = torch.randint(0, 256, (3, 80, 120), dtype=torch.uint8)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "crowd": torch.zeros(0, dtype=torch.bool), "difficult": torch.zeros(0, dtype=torch.bool)}
    as_classification = transforms_for("classification", cfg)(image, dict(target), torch.Generator().manual_seed(3))
    as_detection = transforms_for("detection", cfg)(image, dict(target), torch.Generator().manual_seed(3))
    assert torch.equal(as_classification[0], as_detection[0]) == same


def test_an_unknown_classification_recipe_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"classification_augment 'imagenet' is not one of \('classifier', 'detection'\)"):
        LoaderConfig(sources=[{"name": "x", "urls": "x"}], classification_augment="imagenet")
def test_jpegs_decoded_on_the_device_give_the_batches_of_images_decoded_in_the_workers(two_sources):
    decoded = take(Loader(config(two_sources, augment_on="device"), LABELMAP), 3)
    shipped = take(Loader(config(two_sources, augment_on="device", decode_on="device"), LABELMAP), 3)
    for x, y in zip(decoded, shipped):
        assert "jpegs" in y and "images" not in y and x["keys"] == y["keys"]
        assert torch.equal(x["orig_sizes"], y["orig_sizes"])  # from the JPEG headers alone, in the workers
        (x_images, x_targets), (y_images, y_targets) = device_batch(x, 64, "cpu"), device_batch(y, 64, "cpu")
        assert torch.equal(x_images, y_images) and torch.equal(x_targets.boxes, y_targets.boxes)


def test_decoding_on_the_device_needs_the_device_warp():
    with pytest.raises(ValueError, match="decode_on='device' needs augment_on='device' and hsv_on_device"):
        LoaderConfig(sources=[{"name": "x", "urls": "x"}], decode_on="device")
    with pytest.raises(ValueError, match="decode_on='device' needs"):
        LoaderConfig(sources=[{"name": "x", "urls": "x"}], decode_on="device", augment_on="device", hsv_on_device=False)
    with pytest.raises(ValueError, match="augment_on='gpu' is not one of"):
        LoaderConfig(sources=[{"name": "x", "urls": "x"}], augment_on="gpu")
