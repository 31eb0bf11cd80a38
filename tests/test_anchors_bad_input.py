"""`yolo9000 anchors` on malformed input: refused with exit status 2 and one message naming the file or
option, no traceback, nothing printed on stdout, and an earlier plot left as it was; or skipped and counted."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commands import REPO, assert_refused, run_main
from yolo9000.cli import main


def write_manifest(path: Path, boxes=None, width: float = 400.0) -> Path:
    """A manifest of 30 boxes in three shapes (or the given boxes), 400 x 400 images."""
    if boxes is None:
        boxes = [[[10.0, 20.0, 10.0 + w * 400, 20.0 + h * 400]] for w, h in [(0.1, 0.3), (0.2, 0.2), (0.5, 0.3)]
                 for _ in range(10)]
    pq.write_table(pa.table({"width": pa.array([width] * len(boxes), pa.float64()), "height": [400.0] * len(boxes),
                             "boxes": pa.array(boxes, pa.list_(pa.list_(pa.float64())))}), path)
    return path


# (what is wrong, arguments after `anchors` ({m}: a good manifest, {d}: the test folder), what the message names)
CASES = [
    ("manifest missing", ["--manifest", "{d}/nope.parquet", "-k", "3"], ["manifest not found", "nope.parquet"]),
    ("manifest is a folder", ["--manifest", "{d}", "-k", "3"], ["manifest not found"]),
    ("manifest not Parquet", ["--manifest", "{d}/text.parquet", "-k", "3"], ["text.parquet: not a readable Parquet"]),
    ("manifest without boxes column", ["--manifest", "{d}/columns.parquet", "-k", "3"],
     ["columns.parquet: manifest lacks column(s) ['width', 'height', 'boxes']"]),
    ("manifest given twice", ["--manifest", "{m}", "--manifest", "{m}", "-k", "3"], ["given more than once", "m.parquet"]),
    ("width column of text", ["--manifest", "{d}/text-width.parquet", "-k", "1"],
     ["text-width.parquet: manifest column(s) of the wrong type: width is string"]),
    ("crowd column of text", ["--manifest", "{d}/text-crowd.parquet", "-k", "1"], ["crowd is string"]),
    ("no usable box", ["--manifest", "{d}/zero.parquet", "-k", "3"], ["no boxes to cluster"]),
    ("box of three values", ["--manifest", "{d}/three.parquet", "-k", "1"], ["three.parquet: row 0", "exactly 4 values"]),
    ("stride 0", ["--manifest", "{m}", "-k", "3", "--stride", "0"], ["--stride", "at least 1, got 0"]),
    ("stride negative", ["--manifest", "{m}", "-k", "3", "--stride", "-32"], ["--stride"]),
    ("size 0", ["--manifest", "{m}", "-k", "3", "--size", "0"], ["--size", "at least 1, got 0"]),
    ("size not a multiple of the stride", ["--manifest", "{m}", "-k", "3", "--size", "400"],
     ["input size 400 is not a multiple of the stride 32"]),
    ("k 0", ["--manifest", "{m}", "-k", "0"], ["-k", "at least 1, got 0"]),
    ("k more than boxes", ["--manifest", "{m}", "-k", "99"], ["k must be between 1 and the number of boxes (30), got 99"]),
    ("k in Arabic digits", ["--manifest", "{m}", "-k", "٣"], ["-k", "digits 0-9"]),
    ("k not a number", ["--manifest", "{m}", "-k", "three"], ["-k", "'three'"]),
    ("restarts 0", ["--manifest", "{m}", "-k", "3", "--restarts", "0"], ["--restarts"]),
    ("seed negative", ["--manifest", "{m}", "-k", "3", "--seed", "-1"], ["--seed", "at least 0, got -1"]),
    ("max-k 0", ["--manifest", "{m}", "-k", "3", "--plot", "{d}/c.png", "--max-k", "0"], ["--max-k"]),
    ("plot into a missing folder", ["--manifest", "{m}", "-k", "3", "--plot", "{d}/nope/c.png"],
     ["nope/c.png: the folder", "does not exist"]),
    ("plot of an unknown format", ["--manifest", "{m}", "-k", "3", "--plot", "{d}/c.txt"], ["unknown image format '.txt'"]),
    ("plot onto a folder", ["--manifest", "{m}", "-k", "3", "--plot", "{d}"], ["is a folder"]),
    ("plot over the earlier plot with a bad stride", ["--manifest", "{m}", "-k", "3", "--plot", "{d}/earlier.png",
                                                      "--stride", "0"], ["--stride"]),
]


@pytest.fixture
def folder(tmp_path):
    """A good manifest m.parquet, malformed ones, and an earlier plot."""
    write_manifest(tmp_path / "m.parquet")
    (tmp_path / "text.parquet").write_text("hello")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "columns.parquet")
    write_manifest(tmp_path / "zero.parquet", width=0.0)
    write_manifest(tmp_path / "three.parquet", boxes=[[[0.0, 0.0, 5.0]]])
    one_box = pa.array([[[0.0, 0.0, 5.0, 5.0]]], pa.list_(pa.list_(pa.float64())))
    pq.write_table(pa.table({"width": ["wide"], "height": [9.0], "boxes": one_box}), tmp_path / "text-width.parquet")
    pq.write_table(pa.table({"width": [9.0], "height": [9.0], "boxes": one_box, "crowd": ["no"]}),
                   tmp_path / "text-crowd.parquet")
    (tmp_path / "earlier.png").write_bytes(b"an earlier plot")
    return tmp_path


@pytest.mark.parametrize("argv, offenders", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_naming_it_before_anything_is_printed_or_written(capsys, folder, argv, offenders):
    before = sorted(p.name for p in folder.iterdir())
    argv = [a.replace("{m}", str(folder / "m.parquet")).replace("{d}", str(folder)) for a in argv]
    status, out, err = run_main(main, ["anchors", *argv], capsys)
    assert_refused(status, err, *offenders)
    assert out == "" and sorted(p.name for p in folder.iterdir()) == before
    assert (folder / "earlier.png").read_bytes() == b"an earlier plot"


def test_boxes_without_size_are_skipped_and_counted_in_the_printed_line(capsys, tmp_path):
    boxes = [[[0.0, 0.0, 40.0, 80.0]]] * 5 + [[[float("nan"), 0.0, 1.0, 1.0]], [[5.0, 5.0, 5.0, 9.0]]]
    write_manifest(tmp_path / "m.parquet", boxes=boxes)
    status, out, _ = run_main(main, ["anchors", "--manifest", tmp_path / "m.parquet", "-k", "1"], capsys)
    assert status == 0 and "over 5 boxes" in out and "skipped 2 zero-size boxes" in out


def test_help_says_what_is_skipped_and_counted_and_what_is_refused(capsys):
    status, out, _ = run_main(main, ["anchors", "--help"], capsys)
    text = " ".join(out.split())
    assert status == 0 and "skipped and counted" in text and "Refused, before anything is printed" in text


def test_a_refused_run_prints_no_traceback_as_a_process(tmp_path):
    write_manifest(tmp_path / "m.parquet")
    done = subprocess.run([sys.executable, "-m", "yolo9000.cli", "anchors", "--manifest", str(tmp_path / "m.parquet"),
                           "-k", "3", "--plot", str(tmp_path / "missing" / "c.png")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert "missing/c.png: the folder" in done.stderr
