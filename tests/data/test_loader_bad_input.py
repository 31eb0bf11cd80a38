"""The loader on bad shards: missing ones refused at once, unreadable ones counted (or refused when nothing else
is left), and a label the tree lacks raised as its own message, not inside a DataLoader worker's traceback."""

import itertools
import random

import pytest

from shards import ALL_WNIDS, detection_record, detection_shards, write_shards
from yolo9000.data.labelmap import LabelMap, UnknownLabelError
from yolo9000.data.loader import Loader, LoaderConfig
from yolo9000.data.stream import Slot, StreamError, shards_for_slot

LABELMAP = LabelMap.from_classes(ALL_WNIDS)


def config(urls, **overrides) -> LoaderConfig:
    values = dict(sources=[{"name": "coco", "urls": urls}], batch_size=2, image_size=64, num_workers=0,
                  shuffle_buffer=0, resampled=False, persistent_workers=False)
    return LoaderConfig(**{**values, **overrides})


def junk_shard(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a tar file" * 100)
    return path


@pytest.mark.parametrize("resampled", [False, True])
def test_shards_that_do_not_exist_are_refused_at_once_naming_them(tmp_path, resampled):
    urls = str(tmp_path / "coco-{000000..000003}.tar")
    with pytest.raises(StreamError, match=r"shard .*coco-000000\.tar does not exist, nor do 3 more of the 4 shards"):
        Loader(config(urls, resampled=resampled), LABELMAP)


def test_one_missing_shard_among_good_ones_is_refused_naming_it(tmp_path):
    paths, _ = detection_shards(tmp_path / "coco", count=4, per_shard=4)
    with pytest.raises(StreamError, match=r"shard .*missing\.tar does not exist; check"):
        Loader(config([str(paths[0]), str(tmp_path / "missing.tar")]), LABELMAP)


@pytest.mark.parametrize("augment_on", ["worker", "device"])
def test_an_unreadable_shard_read_after_the_last_batch_is_still_counted(tmp_path, augment_on):
    paths, records = detection_shards(tmp_path / "coco", count=4, per_shard=4)
    urls = [str(paths[0]), str(junk_shard(tmp_path / "coco" / "junk.tar"))]
    seed = next(s for s in itertools.count() if shards_for_slot(urls, Slot(), s, 0, True)[-1] == urls[1])
    loader = Loader(config(urls, seed=seed, augment_on=augment_on), LABELMAP)
    with pytest.warns(UserWarning, match="junk.tar could not be read"):
        keys = [key for batch in loader for key in batch["keys"]]
    assert sorted(keys) == sorted(r["__key__"] for r in records)  # two full batches, then the unreadable shard
    assert loader.stats["unreadable_shards"] == 1


def test_a_reader_whose_shards_are_all_unreadable_fails_naming_them(tmp_path):
    junk = junk_shard(tmp_path / "coco" / "junk-000000.tar")
    loader = Loader(config(str(tmp_path / "coco")), LABELMAP)
    with pytest.warns(UserWarning), pytest.raises(StreamError, match="no shard of this reader could be read") as error:
        list(loader)
    assert str(junk) in str(error.value)


@pytest.mark.parametrize("augment_on", ["worker", "device"])
def test_a_label_not_in_the_tree_met_in_a_worker_is_raised_as_its_message_alone(tmp_path, augment_on):
    rng = random.Random(0)
    records = [detection_record("coco", i, rng) for i in range(8)]
    records[5]["meta"]["labels"][0] = "n09999999"
    write_shards(tmp_path / "coco", "coco", records, per_shard=4)
    loader = Loader(config(str(tmp_path / "coco"), num_workers=2, resampled=True, augment_on=augment_on), LABELMAP)
    with pytest.raises(UnknownLabelError) as error:
        list(itertools.islice(loader, 40))
    message = str(error.value)
    assert message.startswith("1 wnid(s) in sample coco-000005 in ") and "n09999999" in message
    assert "Traceback" not in message and "DataLoader worker" not in message
