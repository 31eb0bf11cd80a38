"""prepare_voc.py on malformed input: refused with exit status 2 and one message naming the offender, no
traceback, and the --out folder of an earlier run left byte for byte as it was; or kept and counted."""

import json
import re
import shutil

import pytest

from commands import assert_refused_leaving_intact, datasets, run_main, script, with_paths

VOC = script("voc")
FIRST = "2008_000000"


def xml(pattern: str, replacement: str):
    """An edit of the first annotation file: the first match of `pattern` replaced."""
    return lambda root: edit_file(root / "Annotations" / f"{FIRST}.xml", pattern, replacement)


def split(text_of_ids):
    """An edit of ImageSets/Main/trainval.txt: its ids → new text."""
    def edit(root):
        path = root / "ImageSets" / "Main" / "trainval.txt"
        path.write_text(text_of_ids(path.read_text().split()))
    return edit


def edit_file(path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    assert re.search(pattern, text), pattern
    path.write_text(re.sub(pattern, replacement, text, count=1))


# (what is wrong, edit of the VOC folder, extra options, what the message must name)
CASES = [
    ("annotation not XML", xml(r"</annotation>", ""), [], [f"{FIRST}.xml: cannot read VOC annotation"]),
    ("object without a name", xml(r"<name>\w+</name>", "<name></name>"), [], [f"{FIRST}.xml: object 0", "missing <name>"]),
    ("coordinate not a number", xml(r"<xmin>\d+</xmin>", "<xmin>left</xmin>"), [], [f"{FIRST}.xml: object 0", "<bndbox>"]),
    ("coordinate in Arabic digits", xml(r"<xmin>\d+</xmin>", "<xmin>١٢</xmin>"), [], ["digits 0-9"]),
    ("coordinate NaN", xml(r"<xmin>\d+</xmin>", "<xmin>nan</xmin>"), [], ["finite numbers"]),
    ("coordinate too large for a float", xml(r"<xmax>\d+</xmax>", "<xmax>1e400</xmax>"), [], ["finite numbers"]),
    ("object without bndbox", xml(r"<bndbox>.*?</bndbox>", ""), [], ["<bndbox> needs"]),
    ("difficult 2", xml(r"<difficult>\d</difficult>", "<difficult>2</difficult>"), [], ["<difficult> must be 0 or 1, got '2'"]),
    ("difficult in Arabic digits", xml(r"<difficult>\d</difficult>", "<difficult>١</difficult>"), [], ["got '١'"]),
    ("size zero", xml(r"<width>\d+</width>", "<width>0</width>"), [], [f"{FIRST}.xml: <size>", "'0'"]),
    ("size not a number", xml(r"<height>\d+</height>", "<height>tall</height>"), [], ["<size>", "'tall'"]),
    ("file name outside the folder", xml(r"<filename>[^<]*</filename>", "<filename>../secret.jpg</filename>"), [],
     ["<filename>", "'../secret.jpg' must be a path inside"]),
    ("class not in the label map", xml(r"<name>\w+</name>", "<name>hovercraft</name>"), [], ["['hovercraft']"]),
    ("image listed twice", split(lambda ids: "\n".join(ids + ids[:1]) + "\n"), [],
     [f"image {FIRST} is listed twice, on lines 1 and 5"]),
    ("empty split", split(lambda ids: "\n"), [], ["lists no images"]),
    ("split id escaping the folder", split(lambda ids: "../../etc/passwd\n"), [], ["trainval.txt:1", "'../../etc/passwd'"]),
    ("id without an annotation file", split(lambda ids: "2099_000001\n"), [], ["2099_000001.xml: cannot read"]),
    ("split file missing", None, ["--split", "test"], ["ImageSets/Main/test.txt not found"]),
    ("label map wnid unknown to WordNet", None, ["--label-map", "{wrong.map}"], ["n09999999", "WordNet 3.0"]),
    ("jpeg quality 500", None, ["--jpeg-quality", "500"], ["--jpeg-quality", "got 500"]),
    ("out holds a run of other options", None, ["--max-side", "30"], ["a run of a different input or options"]),
]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A VOC folder, and the --out folder of a finished run over it."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    datasets.build_voc(root, n_images=4)
    out = root.parent / "out"
    assert VOC.main(["--root", str(root), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    return root, out


@pytest.mark.parametrize("edit, options, offenders", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_naming_it_and_the_earlier_run_stays_intact(
        earlier, tmp_path, capsys, edit, options, offenders):
    root, out = earlier
    shutil.copytree(root, tmp_path / "VOC2012")
    shutil.copytree(out, tmp_path / "out")
    if edit:
        edit(tmp_path / "VOC2012")
    (tmp_path / "wrong.map").write_text("".join(f"{n}\tn09999999\n" for n in datasets.VOC_NAMES))
    argv = ["--root", tmp_path / "VOC2012", "--out", tmp_path / "out", "--workers", "1", "--no-progress",
            *with_paths(options, tmp_path)]
    assert_refused_leaving_intact(VOC.main, argv, tmp_path / "out", capsys, offenders)


def test_annotation_without_objects_is_kept_as_a_negative_and_counted(earlier, tmp_path, capsys):
    root, _ = earlier
    shutil.copytree(root, tmp_path / "VOC2012")
    path = tmp_path / "VOC2012" / "Annotations" / f"{FIRST}.xml"
    path.write_text(re.sub(r"<object>.*</object>", "", path.read_text(), flags=re.S))
    status, out, err = run_main(VOC.main, ["--root", tmp_path / "VOC2012", "--out", tmp_path / "out", "--workers", "1",
                                           "--no-progress"], capsys)
    assert status == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["noticed"]["no_boxes"] == {"count": 1, "examples": [f"JPEGImages/{FIRST}.jpg"]}
    assert "noticed: no_boxes 1" in out
