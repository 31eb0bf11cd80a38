import itertools
import random

import pytest

from shards import classification_shards, detection_shards
from yolo9000.data.mix import Mix, MixError
from yolo9000.data.stream import Slot, SourceStream


def test_realised_ratio_follows_weights_per_sample_without_decoding(tmp_path):
    detection_shards(tmp_path / "coco", count=12, per_shard=4)
    classification_shards(tmp_path / "imagenet", count=12, per_shard=4)
    streams = {
        "imagenet": SourceStream(str(tmp_path / "imagenet"), name="imagenet", shuffle=4).iterate(Slot()),
        "coco": SourceStream(str(tmp_path / "coco"), name="coco", shuffle=4).iterate(Slot()),
    }
    mix = Mix(streams, {"imagenet": 0.75, "coco": 0.25}, random.Random(0))
    drawn = [name for name, _ in itertools.islice(mix, 2000)]
    assert mix.ratios()["imagenet"] == pytest.approx(0.75, abs=0.03)
    assert mix.counts["imagenet"] + mix.counts["coco"] == 2000
    runs = [len(list(group)) for _, group in itertools.groupby(drawn)]
    assert max(runs) < 50  # mixed per sample, not in long blocks of one source


def test_samples_carry_their_source_name(tmp_path):
    streams = {"a": iter([{"x": 1}] * 5), "b": iter([{"x": 2}] * 5)}
    for name, sample in Mix(streams, {"a": 1, "b": 1}, random.Random(1)):
        assert sample["x"] == (1 if name == "a" else 2)


def test_an_ended_stream_leaves_the_others_going_until_all_end():
    streams = {"short": iter(range(3)), "long": iter(range(100))}
    drawn = list(Mix(streams, {"short": 4, "long": 1}, random.Random(2)))
    assert sorted(s for n, s in drawn if n == "short") == [0, 1, 2]
    assert sorted(s for n, s in drawn if n == "long") == list(range(100))


def test_mix_repeats_with_the_same_generator_seed():
    def names(seed):
        streams = {"a": itertools.repeat(0), "b": itertools.repeat(1)}
        return [n for n, _ in itertools.islice(Mix(streams, {"a": 3, "b": 1}, random.Random(seed)), 200)]
    assert names(5) == names(5) != names(6)


def test_bad_weights_are_refused_with_the_source_name():
    with pytest.raises(MixError, match="'coco' has weight -1"):
        Mix({"coco": iter([])}, {"coco": -1}, random.Random(0))
    with pytest.raises(MixError, match="summing to 0"):
        Mix({"coco": iter([])}, {"coco": 0}, random.Random(0))
