import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yolo9000.cli import main

REPO = Path(__file__).resolve().parents[1]
# the installed console script when the venv has one, else the same main() through `python -m`
CONSOLE_SCRIPT = shutil.which("yolo9000", path=str(Path(sys.executable).parent))
ENTRY = [CONSOLE_SCRIPT] if CONSOLE_SCRIPT else [sys.executable, "-m", "yolo9000.cli"]
SHAPES = np.array([[0.05, 0.30], [0.20, 0.20], [0.60, 0.35]])  # normalised w, h


def write_manifest(path: Path, n_per_shape: int = 30, image_label_rows: int = 2) -> None:
    """A detection manifest whose boxes come in three exact shapes, plus classification rows."""
    size = 400.0
    boxes = [[[10.0, 20.0, 10.0 + w * size, 20.0 + h * size]] for w, h in SHAPES for _ in range(n_per_shape)]
    rows = len(boxes)
    table = pa.table(
        {
            "source": ["shapes"] * rows + ["imagenet"] * image_label_rows,
            "width": [size] * (rows + image_label_rows),
            "height": [size] * (rows + image_label_rows),
            "boxes": pa.array(boxes + [None] * image_label_rows, type=pa.list_(pa.list_(pa.float64()))),
            "image_label": [None] * rows + ["n01440764"] * image_label_rows,
            "shard": ["s.tar"] * (rows + image_label_rows),
        }
    )
    pq.write_table(table, path)


def parse_anchors_line(text: str) -> np.ndarray:
    line = next(l for l in text.splitlines() if l.startswith("anchors = "))
    return np.array([float(v) for v in re.split(r"[,\s]+", line[len("anchors = "):]) if v]).reshape(-1, 2)


def test_anchors_command_prints_grid_unit_anchors_and_mean_iou(tmp_path, capsys):
    write_manifest(tmp_path / "manifest.parquet")
    code = main(["anchors", "--manifest", str(tmp_path / "manifest.parquet"), "-k", "3", "--size", "416"])
    out = capsys.readouterr().out
    assert code == 0
    order = np.argsort(SHAPES.prod(axis=1))
    np.testing.assert_allclose(parse_anchors_line(out), SHAPES[order] * 13, atol=1e-3)
    assert "mean IoU 1.0000 over 90 boxes" in out
    assert "2 rows without boxes" in out


def test_anchors_command_pools_manifests_and_saves_the_curve_plot(tmp_path, capsys):
    write_manifest(tmp_path / "a.parquet")
    write_manifest(tmp_path / "b.parquet", n_per_shape=5)
    png = tmp_path / "curve.png"
    code = main(["anchors", "--manifest", str(tmp_path / "a.parquet"), "--manifest", str(tmp_path / "b.parquet"),
                 "-k", "2", "--size", "608", "--plot", str(png), "--max-k", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "over 105 boxes" in out and "19x19 grid" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_missing_manifest_prints_a_message_and_exits_2(tmp_path, capsys):
    code = main(["anchors", "--manifest", str(tmp_path / "nope.parquet"), "-k", "5"])
    assert code == 2
    assert "manifest not found" in capsys.readouterr().err


def test_manifest_without_boxes_prints_a_message_and_exits_2(tmp_path, capsys):
    write_manifest(tmp_path / "cls.parquet", n_per_shape=0, image_label_rows=3)
    code = main(["anchors", "--manifest", str(tmp_path / "cls.parquet"), "-k", "5"])
    assert code == 2
    assert "no boxes" in capsys.readouterr().err


def test_anchors_without_required_arguments_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["anchors", "-k", "3"])
    assert exit_info.value.code == 2
    assert "--manifest" in capsys.readouterr().err


def test_console_entry_help_and_anchors_run_as_a_subprocess(tmp_path):
    write_manifest(tmp_path / "manifest.parquet")
    help_run = subprocess.run([*ENTRY, "--help"], capture_output=True, text=True,
                              cwd=REPO, timeout=60)
    assert help_run.returncode == 0 and "anchors" in help_run.stdout
    run = subprocess.run([*ENTRY, "anchors", "--manifest",
                          str(tmp_path / "manifest.parquet"), "-k", "3"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert parse_anchors_line(run.stdout).shape == (3, 2)
    missing = subprocess.run([*ENTRY, "anchors", "--manifest",
                              str(tmp_path / "missing.parquet"), "-k", "3"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert missing.returncode == 2 and "manifest not found" in missing.stderr


def test_anchors_command_reads_the_manifest_of_real_shards(tmp_path, capsys):
    from PIL import Image

    from yolo9000.data.prepare.items import SourceItem
    from yolo9000.data.shardwriter.write import WriterConfig, write_shards

    items = []
    for i, (w, h) in enumerate([(320, 240), (200, 400), (256, 256)]):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (w, h), (40 * i, 90, 160)).save(path, quality=90)
        boxes = np.array([[0, 0, w / 2, h / 4], [10, 10, 10 + w / 4, 10 + h / 2]], np.float32)
        items.append(SourceItem(f"img{i}", "coco", path.name, str(path), boxes=boxes,
                                labels=["n02084071", "n02121808"], crowd=[False, False], difficult=[False, False],
                                size_estimate=path.stat().st_size))
    write_shards(items, WriterConfig(out_dir=tmp_path / "shards", workers=1, show_progress=False))
    code = main(["anchors", "--manifest", str(tmp_path / "shards" / "manifest.parquet"), "-k", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    anchors = sorted(parse_anchors_line(out).tolist())  # both shapes have the same area: order by width
    np.testing.assert_allclose(anchors, [[0.25 * 13, 0.5 * 13], [0.5 * 13, 0.25 * 13]], atol=2e-3)
    assert "mean IoU 1.0000 over 6 boxes" in out
