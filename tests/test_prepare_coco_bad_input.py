"""prepare_coco.py on malformed input: refused with exit status 2 and one message naming the offender, no
traceback, and the --out folder of an earlier run left byte for byte as it was; or kept and counted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from commands import REPO, assert_refused, assert_refused_leaving_intact, datasets, run_main, script, with_paths

COCO = script("coco")


def put(*path_and_value):
    """An edit setting data[k1][k2]... = value."""
    *path, value = path_and_value

    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def drop(key: str, index: int, field: str):
    """An edit removing `field` from entry `index` of data[key]."""
    return lambda data: data[key][index].pop(field) and None


def copy_entry(key: str, source: int, target: int, field: str):
    """An edit giving entry `target` of data[key] the `field` of entry `source`."""
    return lambda data: data[key][target].__setitem__(field, data[key][source][field])


def first_bbox(text: str):
    """An edit writing the first annotation's bbox as raw JSON text (NaN and Infinity are not JSON values)."""
    return lambda data: json.dumps(data).replace('"bbox": [', f'"bbox": [{text}], "old_bbox": [', 1)


# (what is wrong, edit of the parsed annotation file, extra options, what the message must name)
CASES = [
    ("top level is a list", lambda data: "[]", [], ["instances.json", "the top level is a list"]),
    ("top level is null", lambda data: "null", [], ["instances.json", "the top level is null"]),
    ("top level is a number", lambda data: "42", [], ["the top level is a number"]),
    ("not JSON at all", lambda data: "{'images': [", [], ["instances.json: cannot read COCO annotations"]),
    ("images is an object", put("images", {}), [], ["missing the lists ['images']"]),
    ("an image is a number", lambda data: data["images"].append(7), [], ["images[5] is a number"]),
    ("duplicate image ids", copy_entry("images", 0, 1, "id"), [],
     ["images[0] and images[1] have the same id 1000", "000000001000.jpg", "000000001007.jpg"]),
    ("one file for two image ids", copy_entry("images", 0, 1, "file_name"), [],
     ["images[0] and images[1] have the same file_name '000000001000.jpg'", '"id": 1007']),
    ("duplicate category ids", lambda data: data["categories"].append({"id": 10, "name": "dog"}), [],
     ["categories[0] and categories[5] have the same id 10", '"name": "person"', '"name": "dog"']),
    ("duplicate annotation ids", copy_entry("annotations", 0, 1, "id"), [],
     ["annotations[0] and annotations[1] have the same id 1"]),
    ("image id null", put("images", 0, "id", None), [], ["images[0] needs an integer 'id'"]),
    ("image id boolean", put("images", 0, "id", True), [], ["images[0] needs an integer 'id'"]),
    ("image id a list", put("images", 0, "id", [1]), [], ["images[0] needs an integer 'id'"]),
    ("image without file_name", drop("images", 0, "file_name"), [], ["images[0] needs", "'file_name'"]),
    ("category without name", drop("categories", 0, "name"), [], ["categories[0] needs"]),
    ("bbox of strings", put("annotations", 0, "bbox", ["1", "2", "3", "4"]), [],
     ["annotation 1 (annotations[0], image 1000)", "'bbox' must be 4 finite numbers", "['1', '2', '3', '4']"]),
    ("bbox of booleans", put("annotations", 0, "bbox", [True, True, True, True]), [], ["annotation 1", "[True"]),
    ("bbox with NaN", first_bbox("NaN, 1, 2, 3"), [], ["annotation 1", "[nan, 1, 2, 3]"]),
    ("bbox with Infinity", first_bbox("1, 1, Infinity, 3"), [], ["annotation 1", "inf"]),
    ("bbox of three numbers", put("annotations", 0, "bbox", [1, 2, 3]), [], ["annotation 1", "[1, 2, 3]"]),
    ("iscrowd a string", put("annotations", 0, "iscrowd", "0"), [], ["annotation 1", "'iscrowd' must be 0 or 1, got '0'"]),
    ("iscrowd 2", put("annotations", 0, "iscrowd", 2), [], ["annotation 1", "got 2"]),
    ("annotation id a list", put("annotations", 0, "id", [1]), [], ["annotations[0]", "'id' must be an integer"]),
    ("annotation of an unknown image", put("annotations", 2, "image_id", 424242), [],
     ["annotation 3 (annotations[2], image 424242)", "image_id is not among"]),
    ("annotation of an unknown category", put("annotations", 2, "category_id", 99), [], ["category_id 99"]),
    ("annotation not an object", lambda data: data["annotations"].append("x"), [], ["is a string, not an object"]),
    ("file name outside the image folder", put("images", 0, "file_name", "../instances_train2017.json"), [],
     ["images[0]", "'../instances_train2017.json' must be a path inside"]),
    ("absolute file name", put("images", 0, "file_name", "/etc/hostname"), [], ["'/etc/hostname' must be a path inside"]),
    ("empty file name", put("images", 0, "file_name", ""), [], ["images[0]: file name ''"]),
    ("width not a number", put("images", 0, "width", "abc"), [], ["images[0] (000000001000.jpg): 'width'", "'abc'"]),
    ("width zero", put("images", 0, "width", 0), [], ["'width' must be a positive integer, got 0"]),
    ("category not in the label map", put("categories", 0, "name", "hovercraft"), [], ["['hovercraft']"]),
    ("no images", lambda data: {"images": [], "annotations": [], "categories": data["categories"]}, [],
     ["lists no images"]),
    ("label map wnid unknown to WordNet", None, ["--label-map", "{wrong.map}"], ["n09999999", "WordNet 3.0"]),
    ("label map missing", None, ["--label-map", "{missing.map}"], ["missing.map"]),
    ("images folder missing", None, ["--images", "{nowhere}"], ["nowhere is not a folder"]),
    ("annotation file missing", None, ["--ann", "{missing.json}"], ["missing.json"]),
    ("jpeg quality 500", None, ["--jpeg-quality", "500"], ["--jpeg-quality", "between 1 and 100, got 500"]),
    ("jpeg quality 0", None, ["--jpeg-quality", "0"], ["--jpeg-quality", "got 0"]),
    ("no workers", None, ["--workers", "0"], ["--workers", "at least 1, got 0"]),
    ("workers in Arabic digits", None, ["--workers", "١"], ["--workers", "digits 0-9"]),
    ("max side 0", None, ["--max-side", "0"], ["--max-side"]),
    ("shard size 0", None, ["--shard-size", "0"], ["--shard-size"]),
    ("prefix with a slash", None, ["--prefix", "a/b"], ["--prefix", "'a/b' is not a plain name"]),
    ("empty prefix", None, ["--prefix", ""], ["--prefix", "'' is not a plain name"]),
    ("source with a dot", None, ["--source", "co.co"], ["--source", "'co.co'"]),
    ("out is a file", None, ["--out", "{a-file}"], ["a-file is a file"]),
    ("out holds a run with another prefix", None, ["--prefix", "other"],
     ["holds a run of a different input or options", "coco-000000.tar", "--overwrite"]),
    ("out holds a run of other options", None, ["--max-side", "40"], ["a run of a different input or options"]),
]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A COCO dataset, and the --out folder of a finished run over it."""
    root = tmp_path_factory.mktemp("coco")
    ann, images, _ = datasets.build_coco(root, n_images=5)
    out = root / "out"
    assert COCO.main(["--ann", str(ann), "--images", str(images), "--out", str(out), "--workers", "1",
                      "--no-progress"]) == 0
    return ann, images, out


@pytest.mark.parametrize("edit, options, offenders", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_naming_it_and_the_earlier_run_stays_intact(
        earlier, tmp_path, capsys, edit, options, offenders):
    ann, images, out = earlier
    shutil.copytree(out, tmp_path / "out")
    data = json.loads(ann.read_text())
    edited = edit(data) if edit else None
    (tmp_path / "instances.json").write_text(edited if isinstance(edited, str) else json.dumps(edited or data))
    (tmp_path / "wrong.map").write_text("".join(f"{n}\tn09999999\n" for n in datasets.COCO_NAMES))
    (tmp_path / "a-file").write_text("not a folder")
    argv = ["--ann", tmp_path / "instances.json", "--images", images, "--out", tmp_path / "out", "--workers", "1",
            "--no-progress", *with_paths(options, tmp_path)]
    assert_refused_leaving_intact(COCO.main, argv, tmp_path / "out", capsys, offenders)


def test_overwrite_replaces_another_run_and_leaves_nothing_stale(earlier, tmp_path, capsys):
    ann, images, out = earlier
    target = tmp_path / "out"
    shutil.copytree(out, target)
    (target / "old-000000.tar").write_bytes(b"a shard of some older run")
    (target / "notes.txt").write_text("the user's own file")
    status, _, err = run_main(COCO.main, ["--ann", ann, "--images", images, "--out", target, "--prefix", "new",
                                          "--shard-size", "6KB", "--overwrite", "--workers", "1", "--no-progress"],
                              capsys)
    assert status == 0, err
    tars = sorted(p.name for p in target.glob("*.tar"))
    assert tars and all(name.startswith("new-") for name in tars)
    assert sorted(set(pq.read_table(target / "manifest.parquet")["shard"].to_pylist())) == tars
    assert sorted(p.name for p in (target / "_parts").iterdir()) == sorted(
        ["plan.json"] + [f"{t}.{ext}" for t in tars for ext in ("json", "parquet")])
    assert (target / "notes.txt").read_text() == "the user's own file"
    assert json.loads((target / "summary.json").read_text())["samples"] == 5


def test_a_refused_run_prints_its_message_without_a_traceback_as_a_process(tmp_path):
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "images").mkdir()
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "prepare_coco.py"), "--ann", "list.json",
                           "--images", "images", "--out", "out"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("prepare_coco: error: list.json: not a COCO instances file: the top level is a "
                                   "list, not an object holding the lists ['images', 'annotations', 'categories']")
    assert not (tmp_path / "out").exists()


def process_state(pid: int) -> str | None:
    """The state letter of a process (Z: ended, not yet reaped), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_pool_workers_end_when_their_parent_is_killed_alone(tmp_path):
    ann, images, _ = datasets.build_coco(tmp_path / "coco", n_images=4)
    for image in json.loads(ann.read_text())["images"][:2]:  # reading a FIFO blocks: each worker waits on one
        (images / image["file_name"]).unlink()
        os.mkfifo(images / image["file_name"])
    main = subprocess.Popen([sys.executable, str(REPO / "pipelines" / "prepare_coco.py"), "--ann", str(ann),
                             "--images", str(images), "--out", str(tmp_path / "out"), "--workers", "2",
                             "--shard-size", "1", "--no-progress"], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := children_of(main.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2 and main.poll() is None
    finally:
        os.kill(main.pid, signal.SIGKILL)  # the main process only, not its group
        main.wait()
    deadline = time.monotonic() + 10
    while any(process_state(pid) not in (None, "Z") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if process_state(pid) not in (None, "Z")]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_a_run_in_which_no_image_can_be_read_exits_2_naming_one_and_leaves_nothing(earlier, tmp_path, capsys):
    ann, images, _ = earlier
    (tmp_path / "empty").mkdir()
    status, out, err = run_main(COCO.main, ["--ann", ann, "--images", tmp_path / "empty", "--out", tmp_path / "out",
                                            "--workers", "1", "--no-progress"], capsys)
    assert_refused(status, err, "none of the 5 images could be read (e.g. 000000001000.jpg")
    assert out.startswith("0 samples") and "5 items skipped" in out
    assert not list((tmp_path / "out").iterdir())  # nothing left to refuse the corrected run
    status, _, err = run_main(COCO.main, ["--ann", ann, "--images", images, "--out", tmp_path / "out", "--workers",
                                          "1", "--no-progress"], capsys)
    assert status == 0, err
