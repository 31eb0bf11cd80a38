import subprocess
import sys
from pathlib import Path

import pytest

from wordtree.build import build_tree
from wordtree.cli import main
from wordtree.darknet_files import load_tree
from wordtree.labelsets import synset_set

DARKNET = Path(__file__).resolve().parents[2] / "wordtree" / "data" / "darknet"
NINE_K = str(DARKNET / "9k.tree")


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_build_writes_darknet_files_equal_to_the_library_tree(capsys, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("# my classes\nshape\tn13878634\n")
    status, out, err = run(capsys, "build", "--synsets", "voc", "--synsets", extra, "--map", "coco=coco", "-o", tmp_path / "out")
    assert status == 0, err
    written = load_tree(tmp_path / "out" / "wordtree.tree")
    expected = build_tree(synset_set("voc") + ["n13878634"] + synset_set("coco")).tree
    assert written.wnids == expected.wnids and written.parent.tolist() == expected.parent.tolist()
    assert written.names == expected.names and "traffic light" not in written.names
    assert (tmp_path / "out" / "wordtree.labels").read_text().split() == expected.wnids
    assert out.splitlines()[0].startswith(f"{expected.stats_line()} (81 synsets")
    assert "n06874185 traffic_light.n.01" in out  # reported: not under physical_entity


def test_build_labels_only_and_root_options(capsys, tmp_path):
    listed = tmp_path / "body.txt"
    listed.write_text("n00002452\nn05220461\nn05225602\nn05418717\n")  # thing, body part, structure, vein
    status, out, _ = run(capsys, "build", "--synsets", listed, "--shape", "labels-only", "-o", tmp_path)
    assert status == 0 and out.startswith("nodes 4, groups 4, leaves 1, depth 3, roots 1")
    status, out, _ = run(capsys, "build", "--synsets", listed, "--root", "thing.n.12", "-o", tmp_path)
    assert status == 0 and "n00002452 thing.n.12" in out  # the root itself is not under the root


def test_unknown_wnid_is_named_with_file_and_line(capsys, tmp_path):
    listed = tmp_path / "bad.txt"
    listed.write_text("n02084071\n\nn00000001\n")
    status, out, err = run(capsys, "build", "--synsets", listed, "-o", tmp_path)
    assert status == 2 and f"{listed}:3:" in err and "n00000001" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["build", "--synsets", "missing.txt", "-o", "x"], "neither a file nor a shipped set"),
        (["build", "--map", "coco", "-o", "x"], "expected NAME=FILE"),
        (["build", "-o", "x"], "at least one --synsets"),
        (["build", "--synsets", "voc", "--root", "nothing.n.99", "-o", "x"], "nothing.n.99"),
        (["stats", "missing.tree"], "cannot read missing.tree"),
        (["show", NINE_K, "no such node"], "no node has the wnid or name"),
        (["show", NINE_K, "structure"], "give an index or wnid"),
        (["lookup", "qwzxv"], "'qwzxv' names no noun synset"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(capsys, argv, expected):
    status, _, err = run(capsys, *argv)
    assert status == 2 and expected in err and "Traceback" not in err


def test_malformed_map_line_is_named(capsys, tmp_path):
    bad = tmp_path / "my.map"
    bad.write_text("dog\tn02084071\ncat n02121620\n")
    status, _, err = run(capsys, "build", "--map", f"mine={bad}", "-o", tmp_path)
    assert status == 2 and f"{bad}:2:" in err


def test_stats_and_show_on_darknets_9k_tree(capsys):
    status, out, _ = run(capsys, "stats", NINE_K)
    assert status == 0 and out.strip() == "nodes 9418, groups 1846, leaves 7573, depth 16, roots 4"
    for node in ("8", "n05225602"):  # "structure" names two nodes of 9k
        status, out, _ = run(capsys, "show", NINE_K, node)
        lines = out.splitlines()
        assert status == 0
        assert lines[0] == "path to root: 8 n05225602 'structure' -> 4 n05220461 'body part' -> 0 n00002452 'thing'"
        assert lines[2].startswith("siblings (3): 6 n05538625 'head', 7 n01900150 'hair', 8")
        assert lines[3] == "children (3): 9 n05418717 'vein', 10 n05302499 'mouth', 11 n05578095 'heel'"


def test_lookup_lists_noun_synsets_with_wnids_and_glosses(capsys):
    status, out, _ = run(capsys, "lookup", "dog")
    assert status == 0 and out.splitlines()[0].split()[:2] == ["n02084071", "dog.n.01"]
    assert "domesticated" in out.splitlines()[0]


def test_help_names_every_build_option(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["build", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    for option in ("--synsets", "--map", "--root", "--shape", "--out", "imagenet21k", "imagenet_det200"):
        assert option in out


def test_console_entry_runs_as_a_process(tmp_path):
    script = Path(sys.executable).with_name("wordtree")  # the console script, once the package is installed
    command = [str(script)] if script.exists() else [sys.executable, "-m", "wordtree.cli"]
    done = subprocess.run([*command, "stats", NINE_K], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("nodes 9418")
    failed = subprocess.run([*command, "stats", str(tmp_path / "x.tree")], capture_output=True, text=True)
    assert failed.returncode == 2 and "cannot read" in failed.stderr and "Traceback" not in failed.stderr


def test_module_entry_runs_as_a_process():
    done = subprocess.run([sys.executable, "-m", "wordtree.cli", "lookup", "dog"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("n02084071")


def test_wordtree_imports_neither_torch_nor_yolo9000():
    code = (
        "import sys, wordtree.cli, wordtree.build, wordtree.wordnet, wordtree.labelsets; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'yolo9000')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_unwritable_output_is_a_message_not_a_traceback(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, err = run(capsys, "build", "--synsets", "voc", "-o", blocker / "out")
    assert status == 2 and str(blocker) in err and "Traceback" not in err
