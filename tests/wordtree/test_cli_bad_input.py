"""`wordtree` on malformed input: refused with exit status 2 and one message naming the file and line (or the
argument), no traceback, and nothing that was there before changed: an earlier build's three files stay."""

import subprocess
import sys
from pathlib import Path

import pytest

from wordtree.cli import main

DARKNET = Path(__file__).resolve().parents[2] / "wordtree" / "data" / "darknet"
NINE_K = str(DARKNET / "9k.tree")
TREE = "n00002452 -1\nn00003553 -1\nn05220461 0\n"  # thing, whole, body part


def run(capsys, *argv) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (what is wrong, .tree file bytes, .names file bytes or None, what the message must name)
TREE_FILES = [
    ("empty file", b"", None, ["t.tree", "at least one node"]),
    ("not UTF-8", b"\xff\xfe\x00", None, ["t.tree is not UTF-8"]),
    ("one field", b"n00002452\n", None, ["t.tree:1", "expected 'wnid parent_index'"]),
    ("three fields", b"n00002452 -1 x\n", None, ["t.tree:1"]),
    ("blank line", b"n00002452 -1\n\nn00003553 0\n", None, ["t.tree:2"]),
    ("parent too large for an integer", b"n00002452 -1\nn00003553 99999999999999999999999\n", None,
     ["t.tree", "line 2", "99999999999999999999999"]),
    ("parent in Arabic digits", "n00002452 -1\nn00003553 ٠\n".encode(), None, ["t.tree:2", "'n00003553 ٠'"]),
    ("parent as a superscript", "n00002452 -1\nn00003553 ²\n".encode(), None, ["t.tree:2"]),
    ("parent with a plus sign", b"n00002452 -1\nn00003553 +0\n", None, ["t.tree:2"]),
    ("label that is not a wnid", b"dog -1\ncat 0\n", None, ["t.tree:1", "'dog' is not a WordNet id"]),
    ("wnid in Arabic digits", "n٠٠٠٠٢٤٥٢ -1\n".encode(), None, ["t.tree:1", "'n٠٠٠٠٢٤٥٢'"]),
    ("parent after its child", b"n00002452 1\nn00003553 -1\n", None, ["line 1", "parents must come before"]),
    ("parent -2", b"n00002452 -2\n", None, ["line 1", "parent -2"]),
    ("split siblings", b"n00002452 -1\nn00003553 0\nn05220461 -1\n", None, ["not contiguous", "[1, 3]"]),
    ("wnid twice", b"n00002452 -1\nn00002452 0\n", None, ["more than once: n00002452"]),
    (".names of another length", TREE.encode(), b"thing\nwhole\n", ["t.names has 2 lines but", "t.tree has 3 nodes"]),
    (".names not UTF-8", TREE.encode(), b"\xff\n\xfe\n\x00\n", ["t.names is not UTF-8"]),
]


@pytest.mark.parametrize("command", ["stats", "show"])
@pytest.mark.parametrize("tree, names, offenders", [c[1:] for c in TREE_FILES], ids=[c[0] for c in TREE_FILES])
def test_malformed_tree_file_is_refused_naming_file_and_line(capsys, tmp_path, command, tree, names, offenders):
    (tmp_path / "t.tree").write_bytes(tree)
    if names is not None:
        (tmp_path / "t.names").write_bytes(names)
    before = files(tmp_path)
    status, err = run(capsys, command, tmp_path / "t.tree", *(["0"] if command == "show" else []))
    assert status == 2 and "Traceback" not in err, err
    for offender in offenders:
        assert offender in err
    assert files(tmp_path) == before


def test_tree_with_a_byte_order_mark_and_crlf_lines_reads_as_without(capsys, tmp_path):
    (tmp_path / "t.tree").write_bytes(b"\xef\xbb\xbf" + TREE.replace("\n", "\r\n").encode())
    assert main(["stats", str(tmp_path / "t.tree")]) == 0
    assert capsys.readouterr().out == "nodes 3, groups 2, leaves 2, depth 1, roots 2\n"


@pytest.mark.parametrize("node, message", [
    ("99999", "node index 99999 is outside 0..9417"),
    ("9" * 40, "is outside 0..9417"),
    ("١", "no node has the wnid or name '١'"),  # an Arabic-Indic one is a name, not index 1
    ("-1", "no node has the wnid or name '-1'"),
    ("", "no node has the wnid or name ''"),
    ("structure", "2 nodes are named 'structure'"),
])
def test_show_refuses_a_node_that_is_not_there_or_is_ambiguous(capsys, node, message):
    status, err = run(capsys, "show", NINE_K, node)
    assert status == 2 and message in err and "Traceback" not in err


@pytest.fixture
def earlier_build(tmp_path):
    """An --out folder holding the three files of an earlier build, and a snapshot of it."""
    out = tmp_path / "out"
    out.mkdir()
    for kind in ("tree", "names", "labels"):
        (out / f"wordtree.{kind}").write_text(f"earlier {kind}\n")
    return out


# (what is wrong, files to write, arguments after `build`, what the message must name)
BUILDS = [
    ("empty synset file", {"s.txt": ""}, ["--synsets", "{s.txt}"], ["none of the 0 synsets"]),
    ("synset file is a folder", {}, ["--synsets", "{.}"], ["Is a directory"]),
    ("synset file not UTF-8", {"s.txt": b"\xff\xfe"}, ["--synsets", "{s.txt}"], ["s.txt is not UTF-8"]),
    ("line that is not a wnid", {"s.txt": "n02084071\ndog\n"}, ["--synsets", "{s.txt}"], ["s.txt:2", "'dog'"]),
    ("wnid in Arabic digits", {"s.txt": "n٠٢٠٨٤٠٧١\n"}, ["--synsets", "{s.txt}"], ["s.txt:1", "'n٠٢٠٨٤٠٧١'"]),
    ("wnid unknown to WordNet", {"s.txt": "n02084071\n\nn99999999\n"}, ["--synsets", "{s.txt}"],
     ["s.txt:3", "'n99999999' is no noun synset"]),
    ("root a verb", {}, ["--synsets", "voc", "--root", "run.v.01"], ["'run.v.01' is not a noun synset"]),
    ("root wnid unknown", {}, ["--synsets", "voc", "--root", "n99999999"], ["'n99999999' is no noun synset"]),
    ("root in Arabic digits", {}, ["--synsets", "voc", "--root", "n٠٠٠٠١٩٣٠"], ["root 'n٠٠٠٠١٩٣٠'"]),
    ("root not a synset name", {}, ["--synsets", "voc", "--root", "..."], ["root '...'"]),
    ("map without NAME=", {}, ["--map", "coco.map"], ["expected NAME=FILE"]),
    ("map file missing", {}, ["--map", "x={missing.map}"], ["missing.map"]),
    ("map wnid unknown to WordNet", {"m.map": "dog\tn99999999\n"}, ["--map", "x={m.map}"], ["m.map:1", "n99999999"]),
    ("no synsets at all", {}, [], ["at least one --synsets"]),
    ("set name unknown", {}, ["--synsets", "imagenet99k"], ["'imagenet99k' is neither a file nor a shipped set"]),
]


@pytest.mark.parametrize("inputs, argv, offenders", [c[1:] for c in BUILDS], ids=[c[0] for c in BUILDS])
def test_malformed_build_input_is_refused_and_an_earlier_build_stays(capsys, tmp_path, earlier_build, inputs,
                                                                      argv, offenders):
    for name, text in inputs.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    before = files(tmp_path)
    argv = [a.replace("{", str(tmp_path) + "/").replace("}", "") for a in argv]
    status, err = run(capsys, "build", *argv, "-o", earlier_build)
    assert status == 2 and "Traceback" not in err, err
    for offender in offenders:
        assert offender in err
    assert files(tmp_path) == before


def test_build_writes_all_three_files_or_none_and_names_the_real_path(capsys, tmp_path, earlier_build):
    (earlier_build / "wordtree.names").unlink()
    (earlier_build / "wordtree.names").mkdir()  # one of the three cannot be written
    before = files(tmp_path)
    status, err = run(capsys, "build", "--synsets", "voc", "-o", earlier_build)
    assert status == 2 and f"{earlier_build / 'wordtree.names'}: is a folder" in err and ".tmp" not in err
    assert files(tmp_path) == before  # the tree and labels of the earlier build are still there, no temporaries


def test_build_into_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "f").write_text("a file")
    status, err = run(capsys, "build", "--synsets", "voc", "-o", tmp_path / "f")
    assert status == 2 and "is a file" in err and (tmp_path / "f").read_text() == "a file"


@pytest.mark.parametrize("word", ["", "   ", "x" * 2000])
def test_lookup_of_nothing_is_refused(capsys, word):
    status, err = run(capsys, "lookup", word)
    assert status == 2 and "names no noun synset" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["build", "stats", "show", "lookup"])
def test_help_says_bad_input_is_refused(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Bad input is refused, never skipped" in out and "exit status 2" in out


def test_a_tree_that_crashed_the_reader_is_refused_by_the_process_without_a_traceback(tmp_path):
    (tmp_path / "t.tree").write_text("n00002452 -1\nn00003553 99999999999999999999999\n")
    done = subprocess.run([sys.executable, "-m", "wordtree.cli", "stats", str(tmp_path / "t.tree")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "line 2" in done.stderr
