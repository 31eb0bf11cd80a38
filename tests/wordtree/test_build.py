import pytest

from wordtree.build import BuildError, build_tree, choose_parents
from wordtree.darknet_files import load_tree, save_tree
from wordtree.labelsets import synset_set
from wordtree.wordnet import UnknownSynset, open_wordnet, wnid_of


@pytest.fixture(scope="module")
def wn():
    return open_wordnet()


def ids(wn, *names):
    return [wnid_of(wn.synset(n)) for n in names]


def parent_of(result, wn, name):
    tree = result.tree
    p = tree.parent[tree.index(ids(wn, name)[0])]
    return None if p < 0 else wn.synset_from_pos_and_offset("n", int(tree.wnids[p][1:])).name()


def plane(wn, *names, shape="full"):
    return build_tree(ids(wn, *names), root="plane_figure.n.01", shape=shape, wordnet=wn)


def test_multi_path_synset_takes_the_path_adding_fewest_new_nodes(wn):
    # square: polygon-isogon-regular_polygon-square, or polygon-quadrilateral-parallelogram-rectangle-square
    assert parent_of(plane(wn, "rectangle.n.01", "square.n.01"), wn, "square.n.01") == "rectangle.n.01"
    assert parent_of(plane(wn, "regular_polygon.n.01", "square.n.01"), wn, "square.n.01") == "regular_polygon.n.01"


def test_single_path_synsets_are_added_before_multi_path_ones(wn):
    # square comes first in the input, alone it would take the shorter isogon path (4 new nodes
    # against 5); rectangle, a single-path synset, is added first and makes the other path cheaper.
    assert parent_of(plane(wn, "square.n.01"), wn, "square.n.01") == "regular_polygon.n.01"
    result = plane(wn, "square.n.01", "rectangle.n.01")
    assert parent_of(result, wn, "square.n.01") == "rectangle.n.01"
    assert "isogon" not in result.tree.names


def test_equal_new_nodes_go_to_the_shorter_path(wn):
    # equilateral_triangle: polygon-triangle-it (length 3) or polygon-isogon-regular_polygon-it (4);
    # with triangle and regular_polygon in the tree, both add one node.
    result = plane(wn, "regular_polygon.n.01", "triangle.n.01", "equilateral_triangle.n.01")
    assert parent_of(result, wn, "equilateral_triangle.n.01") == "triangle.n.01"


def test_equal_new_nodes_and_length_go_to_the_lexicographically_smaller_path():
    paths = {"a": [("a",)], "b": [("b",)], "s": [("b", "s"), ("a", "s")]}
    for given in (["a", "b", "s"], ["b", "a", "s"]):
        assert choose_parents(given, paths.__getitem__)["s"] == "a"


def test_a_node_keeps_the_parent_of_the_first_path_that_added_it():
    paths = {"x": [("r", "m", "x"), ("q", "x")], "y": [("r", "m", "x", "y"), ("q", "x", "y")]}
    parent = choose_parents(["x", "y"], paths.__getitem__)
    assert parent == {"x": "q", "q": None, "y": "x"}  # y adds one node either way; x stays under q


def test_labels_only_parent_is_the_nearest_given_ancestor(wn):
    given = ids(wn, "thing.n.12", "body_part.n.01", "structure.n.04", "vein.n.01")
    labels_only = build_tree(given, shape="labels-only", wordnet=wn)
    assert labels_only.tree.names == ["thing", "body part", "structure", "vein"]
    assert labels_only.tree.parent.tolist() == [-1, 0, 1, 2]  # darknet's 9k.tree: vein -> structure
    full = build_tree(given, shape="full", wordnet=wn)
    assert parent_of(full, wn, "vein.n.01") == "blood_vessel.n.01"
    assert full.tree.names[:2] == ["thing", "part"]


def test_synsets_outside_the_root_are_reported_not_dropped_silently(wn):
    given = ids(wn, "dog.n.01", "signal.n.01", "cat.n.01", "physical_entity.n.01")
    result = build_tree(given, wordnet=wn)
    assert result.outside == ids(wn, "signal.n.01", "physical_entity.n.01")
    assert set(ids(wn, "dog.n.01", "cat.n.01")) <= set(result.tree.wnids)
    with pytest.raises(BuildError, match="none of the 1 synsets"):
        build_tree(ids(wn, "signal.n.01"), wordnet=wn)


def test_instance_hypernyms_are_parents_too(wn):
    result = build_tree(ids(wn, "eiffel_tower.n.01"), wordnet=wn)
    assert parent_of(result, wn, "eiffel_tower.n.01") == "tower.n.01"


def test_unknown_wnid_and_root_are_named(wn):
    with pytest.raises(UnknownSynset, match="n00000001"):
        build_tree(["n02084071", "n00000001"], wordnet=wn)
    with pytest.raises(BuildError, match="no_such.n.01"):
        build_tree(["n02084071"], root="no_such.n.01", wordnet=wn)
    with pytest.raises(BuildError, match="shape"):
        build_tree(["n02084071"], shape="pruned", wordnet=wn)


def slow_paper_rule(wn, given, root="physical_entity.n.01"):
    """Independent reference: nltk's hypernym_paths, paths as lists, the rule spelled out."""
    root = wn.synset(root)
    paths = {}
    for w in given:
        synset = wn.synset_from_pos_and_offset("n", int(w[1:]))
        cut = [p[p.index(root) + 1 :] for p in synset.hypernym_paths() if root in p]
        paths[w] = sorted({tuple(wnid_of(s) for s in p) for p in cut})
    given = [w for w in given if paths[w]]
    parent = {}

    def new_nodes(path):
        below = [i for i, w in enumerate(path) if w in parent]
        return path[below[-1] + 1 :] if below else path

    def add(path):
        fresh = new_nodes(path)
        start = len(path) - len(fresh)
        for i in range(start, len(path)):
            parent[path[i]] = path[i - 1] if i > 0 else None

    for w in given:
        if len(paths[w]) == 1:
            add(paths[w][0])
    for w in given:
        if w not in parent:
            add(sorted(paths[w], key=lambda p: (len(new_nodes(p)), len(p), p))[0])
    return parent


def test_full_tree_matches_a_slow_reference_of_the_paper_rule(wn):
    given = synset_set("imagenet_det200") + synset_set("voc")
    tree = build_tree(given, wordnet=wn).tree
    built = {w: (tree.wnids[p] if p >= 0 else None) for w, p in zip(tree.wnids, tree.parent.tolist())}
    expected = slow_paper_rule(wn, list(dict.fromkeys(given)))
    assert {w: p for w, p in built.items() if expected.get(w) != p} == {}
    assert built == expected


def test_order_keeps_darknets_rules_and_first_appearance_among_siblings(wn):
    result = build_tree(synset_set("imagenet_det200"), wordnet=wn)
    tree = result.tree  # from_parents checks parents-first and contiguous siblings
    given = [w for w in synset_set("imagenet_det200") if w not in result.outside]
    first = {}
    for position, w in enumerate(given):
        for node in tree.path_to_root(tree.index(w)):
            first.setdefault(node, position)
    for g in range(tree.num_groups):
        members = range(tree.group_offset[g], tree.group_offset[g] + tree.group_size[g])
        keys = [first[i] for i in members]
        assert keys == sorted(keys)
    assert tree.group_offset[1] == tree.group_size[0]  # the first root's children follow the roots
    assert tree.parent[tree.group_offset[1]] == 0


def test_built_tree_round_trips_through_darknet_files(wn, tmp_path):
    tree = build_tree(synset_set("coco"), wordnet=wn).tree
    save_tree(tree, tmp_path)
    again = load_tree(tmp_path / "wordtree.tree")
    assert again.wnids == tree.wnids and again.names == tree.names
    assert again.parent.tolist() == tree.parent.tolist()
    assert (tmp_path / "wordtree.labels").read_text().split() == tree.wnids


def test_collapsed_chains_leave_no_added_node_with_a_single_child(wn):
    given = synset_set("imagenet1k")
    full = build_tree(given, wordnet=wn).tree
    collapsed = build_tree(given, wordnet=wn, collapse_chains=True).tree
    assert len(full) == 1768 and len(collapsed) == 1366  # the paper's WordTree1k: 1,369 (see --collapse-chains help)
    labels = set(given)
    single = [collapsed.wnids[int(collapsed.group_offset[g])] for g in range(collapsed.num_groups)
              if collapsed.group_size[g] == 1]
    parents = {collapsed.wnids[int(collapsed.parent[collapsed.index(w)])] for w in single if collapsed.parent[collapsed.index(w)] >= 0}
    assert not parents - labels  # a one-node group only under a given synset
    assert set(collapsed.wnids) >= labels & set(full.wnids)


def test_collapsing_keeps_each_label_under_its_nearest_kept_ancestor(wn):
    given = ids(wn, "square.n.01", "rhombus.n.01", "pentacle.n.01")
    full = build_tree(given, root="plane_figure.n.01", wordnet=wn).tree
    collapsed = build_tree(given, root="plane_figure.n.01", wordnet=wn, collapse_chains=True).tree
    ancestors = {w for w in full.wnids} - {w for w in collapsed.wnids}
    assert ancestors and all(w not in given for w in ancestors)
    for wnid in collapsed.wnids:
        up = collapsed.parent[collapsed.index(wnid)]
        chain = [full.wnids[i] for i in full.path_to_root(full.index(wnid))[1:]]
        expected = next((w for w in chain if w in set(collapsed.wnids)), None)
        assert (collapsed.wnids[int(up)] if up >= 0 else None) == expected
