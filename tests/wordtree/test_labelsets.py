from pathlib import Path

import pytest

from wordtree.labelsets import LabelSetError, label_map, read_label_map, read_synsets, synset_set

DARKNET = Path(__file__).resolve().parents[2] / "wordtree" / "data" / "darknet"


def test_label_map_reads_names_and_bare_wnids_skipping_comments(tmp_path):
    path = tmp_path / "mine.map"
    path.write_text("# a comment\n\ndog\tn02084071\nn02121620\n  \ncar\tn02958343\n")
    assert read_label_map(path) == {"dog": "n02084071", "n02121620": "n02121620", "car": "n02958343"}


@pytest.mark.parametrize("line", ["dog n02084071", "dog\tn0208407", "dog\tv02084071", "a\tb\tn02084071"])
def test_malformed_label_map_line_is_named_with_file_and_line(tmp_path, line):
    path = tmp_path / "bad.map"
    path.write_text(f"cat\tn02121620\n{line}\n")
    with pytest.raises(LabelSetError, match=rf"bad\.map:2:"):
        read_label_map(path)


def test_a_name_mapped_to_two_wnids_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "twice.map"
    path.write_text("dog\tn02084071\ncat\tn02121620\ndog\tn02084071\ndog\tn02121620\n")
    with pytest.raises(LabelSetError, match=r"twice\.map:4: 'dog' maps to n02121620 here but to n02084071 on line 1"):
        read_label_map(path)


def test_label_set_error_is_a_value_error():
    assert issubclass(LabelSetError, ValueError)


def test_shipped_coco_map_agrees_with_darknets_coco9k_map():
    labels = (DARKNET / "9k.labels").read_text().split()
    coco9k = [labels[int(i)] for i in (DARKNET / "coco9k.map").read_text().split()]
    names = (DARKNET / "coco.names").read_text().splitlines()
    mapping = label_map("coco")
    assert [mapping[n] for n in names] == coco9k
    assert mapping["person"] == "n00007846" and mapping["dog"] == "n02084071"


def test_shipped_voc_map_names_every_voc_class():
    names = (DARKNET / "voc.names").read_text().splitlines()
    assert sorted(label_map("voc")) == sorted(names)


def test_unknown_label_map_lists_the_known_ones():
    with pytest.raises(LabelSetError, match="coco.*voc"):
        label_map("lvis-nope")


def test_read_synsets_keeps_order_and_drops_duplicates(tmp_path):
    path = tmp_path / "set.txt"
    path.write_text("n02084071\ncat\tn02121620\n# x\nn02084071\nn01503061\n")
    assert read_synsets(path) == ["n02084071", "n02121620", "n01503061"]


def test_read_synsets_error_names_the_line(tmp_path):
    path = tmp_path / "set.txt"
    path.write_text("n02084071\n\nnot-a-wnid\n")
    with pytest.raises(LabelSetError, match=r"set\.txt:3:.*not-a-wnid"):
        read_synsets(path)


def test_unreadable_file_is_a_label_set_error(tmp_path):
    with pytest.raises(LabelSetError, match="cannot read"):
        read_synsets(tmp_path / "missing.txt")


def test_shipped_imagenet_lists_have_their_documented_sizes():
    inet1k = synset_set("imagenet1k")
    assert len(inet1k) == 1000 and inet1k[0] == "n01440764"
    assert len(synset_set("imagenet21k")) == 21843
    assert len(synset_set("imagenet_det200")) == 200
    # a known quirk of the fall-2011 release: teddy bear (n04399382) is in ILSVRC-2012 only
    assert set(inet1k) - set(synset_set("imagenet21k")) == {"n04399382"}


def test_shipped_det200_agrees_with_darknets_inet9k_map():
    labels = (DARKNET / "9k.labels").read_text().split()
    inet9k = [labels[int(i)] for i in (DARKNET / "inet9k.map").read_text().split()]
    assert synset_set("imagenet_det200") == inet9k


def test_synset_set_accepts_map_names_and_files(tmp_path):
    assert "n02084071" in synset_set("coco")
    assert len(synset_set("coco")) == 80 and len(synset_set("voc")) == 20
    path = tmp_path / "two.txt"
    path.write_text("n02084071\nn02121620\n")
    assert synset_set(path) == ["n02084071", "n02121620"]
    with pytest.raises(LabelSetError, match="neither a file nor a shipped set"):
        synset_set("no-such-set")
