import json
import runpy
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from wordtree.labelsets import label_map

REPO = Path(__file__).resolve().parents[1]
MAIN = {name: runpy.run_path(str(REPO / "pipelines" / f"{name}.py"))["main"]
        for name in ("make_shapes", "prepare_coco", "prepare_imagenet")}
SMALL = ["--train-detection", "12", "--train-classification", "22", "--val", "6", "--tune", "4", "--size", "64",
         "--no-progress"]


def test_help_explains_every_option_and_the_layout(capsys):
    with pytest.raises(SystemExit) as exit_:
        MAIN["make_shapes"](["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--train-detection", "--train-classification", "--val", "--tune", "--size", "--seed",
                   "--workers", "--no-progress", "instances_train.json", "labels.map", "settings.json",
                   "--label-map", "plane_figure.n.01"):
        assert option in text, option


def test_a_second_run_with_the_same_settings_says_it_reuses_the_data(tmp_path, capsys):
    assert MAIN["make_shapes"](["--out", str(tmp_path / "s")] + SMALL) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 's'} (new folder)")
    assert MAIN["make_shapes"](["--out", str(tmp_path / "s")] + SMALL) == 0
    assert capsys.readouterr().out.startswith(f"reusing {tmp_path / 's'}")
    assert MAIN["make_shapes"](["--out", str(tmp_path / "s")] + SMALL + ["--seed", "1"]) == 0
    assert "(other settings)" in capsys.readouterr().out


def test_the_layouts_prepare_into_shards_with_the_projects_prepare_scripts(tmp_path, capsys):
    data, shards = tmp_path / "shapes", tmp_path / "shards"
    assert MAIN["make_shapes"](["--out", str(data)] + SMALL) == 0
    wnids = label_map("shapes")
    for split in ("train", "val"):
        code = MAIN["prepare_coco"](["--ann", str(data / "coco" / "annotations" / f"instances_{split}.json"),
                                     "--images", str(data / "coco" / split), "--label-map", str(data / "labels.map"),
                                     "--source", f"shapes-{split}", "-o", str(shards / split), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        coco = json.loads((data / "coco" / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        rows = {row["file"]: row for row in pq.read_table(shards / split / "manifest.parquet").to_pylist()}
        assert len(rows) == len(coco["images"])
        for image in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            row = rows[image["file_name"]]
            assert row["labels"] == [wnids[names[a["category_id"]]] for a in anns]
            xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
            np.testing.assert_allclose(row["boxes"], xyxy, atol=1e-3)
    code = MAIN["prepare_imagenet"](["--root", str(data / "imagenet" / "train"), "--synsets", str(data / "labels.map"),
                                     "-o", str(shards / "cls"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = pq.read_table(shards / "cls" / "manifest.parquet").to_pylist()
    assert len(rows) == 22 and all(row["file"].startswith(row["image_label"] + "/") for row in rows)
    assert {row["image_label"] for row in rows} <= set(wnids.values())
    with tarfile.open(next((shards / "cls").glob("*.tar"))) as tar:
        assert sum(name.endswith(".jpg") for name in tar.getnames()) == 22


@pytest.mark.parametrize("argv, message", [
    (["--size", "8"], "--size must be"),
    (["--tune", "-2"], "--tune must be"),
])
def test_bad_settings_exit_with_status_2_and_a_message(tmp_path, capsys, argv, message):
    assert MAIN["make_shapes"](["--out", str(tmp_path / "s")] + argv) == 2
    assert message in capsys.readouterr().err


def test_a_folder_it_did_not_write_or_a_file_is_refused_with_status_2(tmp_path, capsys):
    (tmp_path / "photos.txt").write_text("not ours")
    assert MAIN["make_shapes"](["--out", str(tmp_path)] + SMALL) == 2
    assert "make_shapes: error:" in capsys.readouterr().err and (tmp_path / "photos.txt").exists()
    assert MAIN["make_shapes"](["--out", str(tmp_path / "photos.txt")] + SMALL) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "photos.txt").read_text() == "not ours"
