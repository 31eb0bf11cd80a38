from pathlib import Path

import numpy as np
import pytest

from wordtree.darknet_files import load_tree, read_tree_file, save_tree
from wordtree.tree import TreeError, WordTree

DARKNET = Path(__file__).resolve().parents[2] / "wordtree" / "data" / "darknet"


@pytest.fixture(scope="module")
def tree9k() -> WordTree:
    return load_tree(DARKNET / "9k.tree")


def test_darknet_9k_tree_has_the_documented_shape(tree9k):
    assert tree9k.stats() == {"nodes": 9418, "groups": 1846, "leaves": 7573, "depth": 16, "roots": 4}
    assert (tree9k.group_offset[0], tree9k.group_size[0]) == (0, 4)
    assert (tree9k.group_offset[1], tree9k.group_size[1]) == (4, 2)
    assert (tree9k.group_offset[-1], tree9k.group_size[-1]) == (9416, 2)
    biggest = int(np.argmax(tree9k.group_size))
    assert (tree9k.group_offset[biggest], tree9k.group_size[biggest]) == (5527, 149)
    assert tree9k.names[5177] == "person" and len(tree9k.children(5177)) == 100


def test_darknet_9k_files_round_trip_byte_for_byte(tree9k, tmp_path):
    paths = save_tree(tree9k, tmp_path, stem="9k")
    for kind in ("tree", "names", "labels"):
        assert paths[kind].read_bytes() == (DARKNET / f"9k.{kind}").read_bytes()


def test_depth_histogram_matches_darknet_notes(tree9k):
    counts = np.bincount(tree9k.depth).tolist()
    assert counts == [4, 18, 60, 161, 480, 1027, 1613, 1708, 1231, 918, 734, 580, 402, 228, 183, 61, 10]


def test_paths_agree_with_walking_parents(tree9k):
    paths = tree9k.paths()
    for node in [0, 9, 5177, 9417, int(np.argmax(tree9k.depth))]:
        walked = tree9k.path_to_root(node)
        assert paths[node, : len(walked)].tolist() == walked
        assert (paths[node, len(walked) :] == -1).all()
    assert paths.shape == (9418, 17)


def test_groups_and_children_are_consistent():
    tree = WordTree.from_parents(list("abcdefg"), [-1, -1, 0, 0, 1, 2, 2])
    assert tree.group.tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert tree.child_group.tolist() == [1, 2, 3, -1, -1, -1, -1]
    assert tree.leaf.tolist() == [False, False, False, True, True, True, True]
    assert tree.depth.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert tree.siblings(3).tolist() == [2, 3]
    assert tree.children(2).tolist() == [5, 6]


def test_lookup_by_wnid_name_and_index(tree9k):
    assert tree9k.index("n00007846") == 5177
    assert tree9k.resolve("n00007846") == tree9k.resolve(5177) == tree9k.resolve("5177") == 5177
    assert tree9k.resolve("zebra") == 7343
    with pytest.raises(TreeError, match="n99999999"):
        tree9k.index("n99999999")
    with pytest.raises(TreeError, match="n99999999"):
        tree9k.indices(["n00007846", "n99999999"])


def test_ambiguous_name_lists_the_candidates():
    tree = WordTree.from_parents(["n1", "n2", "n3"], [-1, 0, 0], ["root", "bank", "bank"])
    with pytest.raises(TreeError, match=r"2 nodes are named 'bank': 1 \(n2\), 2 \(n3\)"):
        tree.resolve("bank")


def test_child_listed_before_its_parent_is_refused_naming_the_line():
    with pytest.raises(TreeError, match="line 2"):
        WordTree.from_parents(["a", "b", "c"], [-1, 2, 0])


def test_split_sibling_runs_are_refused():
    with pytest.raises(TreeError, match="children of node 0 are not contiguous"):
        WordTree.from_parents(list("abcde"), [-1, -1, 0, 1, 0])
    with pytest.raises(TreeError, match="roots are not contiguous"):
        WordTree.from_parents(list("abcd"), [-1, 0, -1, 2])


def test_malformed_tree_line_is_named(tmp_path):
    path = tmp_path / "bad.tree"
    path.write_text("n00000001 -1\nn00000002\n")
    with pytest.raises(TreeError, match=r"bad.tree:2"):
        read_tree_file(path)
