import json
import subprocess
import sys

import pytest

from commands import REPO, datasets, script

SCRIPTS = {name: script(name) for name in ("coco", "voc", "imagenet")}
COMMON_OPTIONS = ["--out", "--overwrite", "--shard-size", "--workers", "--max-side", "--prefix", "--jpeg-quality"]


@pytest.mark.parametrize("name, options", [
    ("coco", ["--ann", "--images", "--label-map", "--drop-empty", "--source"]),
    ("voc", ["--root", "--split", "--label-map", "--source"]),
    ("imagenet", ["--root", "--boxes", "--synsets", "--source"]),
])
def test_help_explains_every_option(capsys, name, options):
    with pytest.raises(SystemExit) as exit_:
        SCRIPTS[name].main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in options + COMMON_OPTIONS:
        assert option in text
    for action in SCRIPTS[name].build_parser()._actions:
        assert action.help and len(action.help) > 10, action.option_strings
    if name == "coco":
        assert "no annotation" in text and "--drop-empty" in text
    flat = " ".join(text.split())
    assert "Refused, before anything is written" in flat and "counted in summary.json" in flat
    assert "totals in the last line printed" in flat


def test_shard_size_accepts_byte_counts_and_unit_suffixes(tmp_path):
    args = SCRIPTS["voc"].build_parser().parse_args(["--root", "r", "--out", "o", "--shard-size", "1.5MB"])
    assert args.shard_size == 1_500_000
    assert SCRIPTS["voc"].build_parser().parse_args(["--root", "r", "--out", "o", "--shard-size", "2048"]).shard_size == 2048
    assert SCRIPTS["voc"].build_parser().parse_args(["--root", "r", "--out", "o", "--shard-size", "1MiB"]).shard_size == 2**20


def test_each_script_writes_shards_manifest_and_summary_and_prints_a_summary_line(tmp_path, capsys):
    ann, images, coco = datasets.build_coco(tmp_path / "coco", n_images=10)
    voc = datasets.build_voc(tmp_path / "voc", n_images=10)
    inet = datasets.build_imagenet_folders(tmp_path / "inet", per_class=3)
    runs = {
        "coco": (["--ann", str(ann), "--images", str(images)], coco),
        "voc": (["--root", str(tmp_path / "voc")], voc),
        "imagenet": (["--root", str(tmp_path / "inet"), "--synsets", "imagenet21k"], inet),
    }
    for name, (args, truths) in runs.items():
        out = tmp_path / f"out-{name}"
        code = SCRIPTS[name].main(args + ["--out", str(out), "--shard-size", "8KB", "--workers", "2", "--no-progress"])
        assert code == 0
        assert capsys.readouterr().out.startswith(f"{len(truths)} samples")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["samples"] == len(truths) and summary["shards"] == len(list(out.glob(f"{name}-*.tar"))) > 1
        assert (out / "manifest.parquet").exists()


def test_unknown_category_exits_with_status_2_naming_it(tmp_path, capsys):
    ann, images, _ = datasets.build_coco(tmp_path / "coco", n_images=3)
    data = json.loads(ann.read_text())
    data["categories"][0]["name"] = "hovercraft"
    ann.write_text(json.dumps(data))
    assert SCRIPTS["coco"].main(["--ann", str(ann), "--images", str(images), "--out", str(tmp_path / "o")]) == 2
    assert "['hovercraft']" in capsys.readouterr().err


def test_script_runs_as_a_command_with_a_custom_label_map(tmp_path):
    ann, images, truths = datasets.build_coco(tmp_path / "coco", n_images=4)
    label_map = tmp_path / "mine.map"
    label_map.write_text("".join(f"{name}\t{datasets.COCO_MAP[name]}\n" for name in datasets.COCO_NAMES))
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "prepare_coco.py"), "--ann", str(ann),
                           "--images", str(images), "--label-map", str(label_map), "--out", str(tmp_path / "o"),
                           "--workers", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{len(truths)} samples" in done.stdout and "writing coco shards" in done.stderr
