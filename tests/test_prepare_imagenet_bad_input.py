"""prepare_imagenet.py on malformed input: refused with exit status 2 and one message naming the offender, no
traceback, and the --out folder of an earlier run left byte for byte as it was; or skipped and counted."""

import json
import shutil
import tarfile

import pytest

from commands import assert_refused_leaving_intact, datasets, run_main, script, with_paths

IMAGENET = script("imagenet")
TENCH = "n01440764"


def a_class(name: str, images: int = 1):
    """An edit adding a class folder `name` holding copies of a tench image."""
    def edit(root):
        (root / name).mkdir()
        for n in range(images):
            shutil.copy(next((root / TENCH).iterdir()), root / name / f"other_{n}.JPEG")
    return edit


def a_file(relative: str, data: bytes = b"hello"):
    return lambda root: (root / relative).write_bytes(data)


def empty_tar(root):
    tarfile.open(root / "n01530575.tar", "w").close()


def box_file(name: str, box: str = "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"):
    """An edit writing an ILSVRC box file for the first tench image into boxes/."""
    def edit(root):
        stem = sorted(p.stem for p in (root / TENCH).iterdir())[0]
        (root.parent / "boxes").mkdir(exist_ok=True)
        (root.parent / "boxes" / f"{stem}.xml").write_text(
            f"<annotation><object><name>{name}</name><bndbox>{box}</bndbox></object></annotation>")
    return edit


# (what is wrong, edit of the train folder, extra options, what the message must name)
CASES = [
    ("empty class folder", a_class("n01530575", images=0), [], ["['n01530575/']", "hold no images"]),
    ("empty synset tar", empty_tar, [], ["['n01530575.tar']", "hold no images"]),
    ("wnid unknown to WordNet", a_class("n09999999"), [], ["n09999999 (e.g. n09999999/other_0.JPEG)", "WordNet 3.0"]),
    ("wnid in Arabic digits", a_class("n٠١٤٤٣٥٣٧"), [], ["['n٠١٤٤٣٥٣٧'] are not WordNet ids"]),
    ("folder that is not a wnid", a_class("goldfish"), [], ["['goldfish'] are not WordNet ids"]),
    ("file that is neither folder nor tar", a_file("LOC_synset_mapping.txt"), [],
     ["['LOC_synset_mapping.txt'] are neither class folders nor synset tars"]),
    ("folder inside a class folder", lambda root: (root / TENCH / "more").mkdir(), [], [f"{TENCH}: holds folders ['more']"]),
    ("synset tar that is not a tar", a_file("n01443537.tar", b"not a tar" * 200), [],
     ["n01443537.tar: cannot read synset tar"]),
    ("box folder missing", None, ["--boxes", "{nowhere}"], ["nowhere is not a folder"]),
    ("box folder without box files", lambda root: (root.parent / "boxes").mkdir(), ["--boxes", "{boxes}"],
     ["no *.xml bounding-box files"]),
    ("box object not a wnid", box_file("tench"), ["--boxes", "{boxes}"], ["['tench'] are not WordNet ids"]),
    ("box object unknown to WordNet", box_file("n09999999"), ["--boxes", "{boxes}"], ["n09999999", "WordNet 3.0"]),
    ("box coordinate NaN", box_file(TENCH, "<xmin>nan</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"),
     ["--boxes", "{boxes}"], ["object 0 (n01440764): <bndbox> needs"]),
    ("class outside --synsets", None, ["--synsets", "imagenet_det200"], [f"['{TENCH}']", "not in the allowed synset list"]),
    ("--synsets file missing", None, ["--synsets", "{missing.txt}"], ["missing.txt"]),
    ("same image name in two classes", lambda root: shutil.copy(next((root / TENCH).iterdir()), root / "n02084071"),
     [], ["sample keys are shared by several images", f"{TENCH}/", "n02084071/"]),
    ("source with a slash", None, ["--source", "a/b"], ["--source"]),
    ("out holds files of another run", lambda root: (root.parent / "out" / "old-000000.tar").write_bytes(b"x"),
     [], ["holds files of another run", "old-000000.tar"]),
]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An ImageNet train folder, and the --out folder of a finished run over it."""
    root = tmp_path_factory.mktemp("imagenet") / "train"
    datasets.build_imagenet_folders(root, per_class=2)
    out = root.parent / "out"
    assert IMAGENET.main(["--root", str(root), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    return root, out


@pytest.mark.parametrize("edit, options, offenders", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_naming_it_and_the_earlier_run_stays_intact(
        earlier, tmp_path, capsys, edit, options, offenders):
    root, out = earlier
    shutil.copytree(root, tmp_path / "train")
    shutil.copytree(out, tmp_path / "out")
    if edit:
        edit(tmp_path / "train")
    argv = ["--root", tmp_path / "train", "--out", tmp_path / "out", "--workers", "1", "--no-progress",
            *with_paths(options, tmp_path)]
    assert_refused_leaving_intact(IMAGENET.main, argv, tmp_path / "out", capsys, offenders)


def test_a_file_in_a_class_folder_that_is_no_image_is_skipped_and_counted(earlier, tmp_path, capsys):
    root, _ = earlier
    shutil.copytree(root, tmp_path / "train")
    (tmp_path / "train" / TENCH / "notes.txt").write_text("not an image")
    status, out, err = run_main(IMAGENET.main, ["--root", tmp_path / "train", "--out", tmp_path / "out",
                                                "--workers", "1", "--no-progress"], capsys)
    assert status == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped"]["corrupt_image"] == {"count": 1, "examples": [f"{TENCH}/notes.txt"]}
    assert "1 items skipped" in out
