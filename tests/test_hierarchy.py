"""hierarchy.py against slow, obviously correct Python references on random trees and darknet's 9k tree."""

from pathlib import Path

import numpy as np
import pytest
import torch
from darknet_reference import sibling_groups

from wordtree.darknet_files import load_tree
from yolo9000.hierarchy import (
    HierarchyError,
    TreeArrays,
    absolute_log_probs,
    group_log_softmax,
    label_log_probs,
    node_log_prob,
    top_down_decode,
    top_down_decode_logits,
)

NINE_K_TREE = Path(__file__).resolve().parents[1] / "wordtree" / "data" / "darknet" / "9k.tree"


def random_parent(seed: int, roots: int = 3, max_children: int = 5, max_nodes: int = 60) -> list[int]:
    """A parent array in darknet order: breadth-first, so parents come first and siblings are contiguous."""
    rng = np.random.default_rng(seed)
    parent = [-1] * roots
    queue = list(range(roots))
    while queue and len(parent) < max_nodes:
        node = queue.pop(0)
        for _ in range(int(rng.integers(0, max_children + 1))):
            queue.append(len(parent))
            parent.append(node)
    return parent


def slow_path(parent: list[int], node: int) -> list[int]:
    path = [node]
    while parent[path[-1]] >= 0:
        path.append(parent[path[-1]])
    return path


def slow_group_log_softmax(logits: np.ndarray, parent: list[int]) -> np.ndarray:
    out = np.empty_like(logits)
    for members in sibling_groups(parent):
        x = logits[:, members]
        out[:, members] = x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(1, keepdims=True)
    return out


def slow_absolute(cond: np.ndarray, parent: list[int]) -> np.ndarray:
    out = np.empty_like(cond)
    for node in range(len(parent)):
        out[:, node] = cond[:, slow_path(parent, node)].sum(1)
    return out


def darknet_hierarchy_top_prediction(probs, parent, thresh, product):
    """Line-by-line replica of darknet's C loop (product=True) or the plain walk (product=False)."""
    groups = sibling_groups(parent)
    child = {parent[g[0]]: k for k, g in enumerate(groups) if parent[g[0]] >= 0}
    p, group = 1.0, 0
    while True:
        best, best_i = 0.0, 0
        for index in groups[group]:
            if probs[index] > best:
                best_i, best = index, probs[index]
        score = p * best if product else best
        if score > thresh:
            p = score
            if best_i not in child:
                return best_i
            group = child[best_i]
        elif group == 0:
            return best_i
        else:
            return parent[groups[group][0]]


@pytest.fixture(scope="module")
def nine_k():
    return load_tree(NINE_K_TREE)


def test_tree_arrays_match_darknet_read_tree_bookkeeping_on_9k_tree(nine_k):
    tree = TreeArrays.from_parent(nine_k.parent)
    assert tree.num_nodes == 9418 and tree.num_groups == 1846 and tree.max_depth == 17
    np.testing.assert_array_equal(tree.group.numpy(), nine_k.group)
    np.testing.assert_array_equal(tree.group_offset.numpy(), nine_k.group_offset)
    np.testing.assert_array_equal(tree.group_size.numpy(), nine_k.group_size)
    np.testing.assert_array_equal(tree.child_group.numpy(), nine_k.child_group)
    np.testing.assert_array_equal(tree.depth.numpy(), nine_k.depth)
    np.testing.assert_array_equal(tree.paths.numpy(), nine_k.paths())
    assert tree.members.shape == (1846, 149)


@pytest.mark.parametrize("seed", range(5))
def test_tree_arrays_paths_and_members_match_slow_walk_on_random_trees(seed):
    parent = random_parent(seed)
    tree = TreeArrays.from_parent(parent)
    for node in range(len(parent)):
        path = tree.paths[node].tolist()
        assert path[: path.index(-1) if -1 in path else len(path)] == slow_path(parent, node)
    for g, members in enumerate(sibling_groups(parent)):
        assert [m for m in tree.members[g].tolist() if m >= 0] == members


def test_from_parent_refuses_a_parent_after_its_child():
    with pytest.raises(HierarchyError, match="node 2 .* has parent 3"):
        TreeArrays.from_parent([-1, 0, 3, 0])


def test_from_parent_refuses_split_sibling_runs():
    with pytest.raises(HierarchyError, match="children of node 0 are not contiguous"):
        TreeArrays.from_parent([-1, -1, 0, 1, 0])
    with pytest.raises(HierarchyError, match="the roots are not contiguous"):
        TreeArrays.from_parent([-1, 0, -1])


@pytest.mark.parametrize("seed", range(5))
def test_group_log_softmax_and_absolute_log_probs_match_slow_loops(seed):
    parent = random_parent(seed)
    tree = TreeArrays.from_parent(parent)
    logits = torch.randn(2, 3, len(parent), dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3
    cond = group_log_softmax(logits, tree)
    expected = slow_group_log_softmax(logits.reshape(6, -1).numpy(), parent)
    np.testing.assert_allclose(cond.reshape(6, -1).numpy(), expected, atol=1e-12)
    absolute = absolute_log_probs(cond, tree)
    np.testing.assert_allclose(absolute.reshape(6, -1).numpy(), slow_absolute(expected, parent), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_node_log_prob_equals_path_sum_and_only_touches_path_groups(seed):
    parent = random_parent(seed)
    tree = TreeArrays.from_parent(parent)
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(8, len(parent), dtype=torch.float64, generator=gen) * 3).requires_grad_()
    nodes = torch.randint(0, len(parent), (8,), generator=gen)
    logp = node_log_prob(logits, nodes, tree)
    expected = slow_absolute(slow_group_log_softmax(logits.detach().numpy(), parent), parent)
    np.testing.assert_allclose(logp.detach().numpy(), expected[np.arange(8), nodes.numpy()], atol=1e-12)
    logp.sum().backward()
    assert torch.isfinite(logits.grad).all()
    groups = sibling_groups(parent)
    group_of = {m: g for g, members in enumerate(groups) for m in members}
    for row, node in enumerate(nodes.tolist()):
        touched = {m for n in slow_path(parent, node) for m in groups[group_of[n]]}
        untouched = [m for m in range(len(parent)) if m not in touched]
        assert torch.all(logits.grad[row, untouched] == 0)


def test_node_log_prob_on_9k_tree_matches_slow_reference(nine_k):
    tree = TreeArrays.from_parent(nine_k.parent)
    parent = nine_k.parent.tolist()
    logits = torch.randn(3, 9418, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    nodes = torch.tensor([5177, 2, 9417])  # person, the root "object", the last node
    cond = slow_group_log_softmax(logits.numpy(), parent)
    expected = [cond[row, slow_path(parent, n)].sum() for row, n in enumerate(nodes.tolist())]
    np.testing.assert_allclose(node_log_prob(logits, nodes, tree).numpy(), expected, atol=1e-10)
    absolute = absolute_log_probs(group_log_softmax(logits, tree), tree)
    np.testing.assert_allclose(absolute[torch.arange(3), nodes].numpy(), expected, atol=1e-10)


def test_node_log_prob_rejects_nodes_outside_the_tree():
    tree = TreeArrays.from_parent([-1, -1, 0])
    with pytest.raises(HierarchyError, match=r"\[0, 3\)"):
        node_log_prob(torch.zeros(1, 3), torch.tensor([3]), tree)


def test_top_down_decode_toy_chain_plain_and_darknet_product():
    tree = TreeArrays.from_parent([-1, 0, 1, 2])
    absolute = torch.tensor([0.9, 0.81, 0.729, 0.6561])
    assert top_down_decode(absolute, tree, 0.5)[0].item() == 3
    node, prob = top_down_decode(absolute, tree, 0.5, darknet_product=True)
    assert node.item() == 2 and prob.item() == pytest.approx(0.729)  # the quirk: third node
    assert top_down_decode(absolute, tree, 0.3, darknet_product=True)[0].item() == 3
    assert top_down_decode(absolute, tree, 0.95, darknet_product=True)[0].item() == 0
    assert top_down_decode(absolute, tree, 0.95)[0].item() == 0


@pytest.mark.parametrize("product", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_top_down_decode_matches_darknet_loop_on_random_trees(seed, product):
    parent = random_parent(seed, max_nodes=80)
    tree = TreeArrays.from_parent(parent)
    logits = torch.randn(4, 10, len(parent), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    absolute = absolute_log_probs(group_log_softmax(logits * 3, tree), tree).exp()
    for thresh in (0.05, 0.3, 0.5, 0.9):
        node, prob = top_down_decode(absolute, tree, thresh, darknet_product=product)
        assert node.shape == (4, 10) and prob.shape == (4, 10)
        flat = absolute.reshape(40, -1).numpy()
        expected = [darknet_hierarchy_top_prediction(row, parent, thresh, product) for row in flat]
        assert node.reshape(-1).tolist() == expected
        np.testing.assert_allclose(prob.reshape(-1).numpy(), flat[np.arange(40), expected])


def test_top_down_decode_matches_darknet_loop_on_9k_tree(nine_k):
    tree = TreeArrays.from_parent(nine_k.parent)
    parent = nine_k.parent.tolist()
    logits = torch.randn(6, 9418, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4
    absolute = absolute_log_probs(group_log_softmax(logits, tree), tree).exp()
    for product in (False, True):
        for thresh in (0.01, 0.1, 0.5):
            node, _ = top_down_decode(absolute, tree, thresh, darknet_product=product)
            expected = [darknet_hierarchy_top_prediction(row, parent, thresh, product) for row in absolute.numpy()]
            assert node.tolist() == expected


def test_tree_arrays_to_moves_every_tensor():
    tree = TreeArrays.from_parent([-1, -1, 0, 0, 1]).to("cpu")
    assert tree.members.tolist() == [[0, 1], [2, 3], [4, -1]]


def test_node_log_prob_at_every_location_equals_row_by_row():
    parent = random_parent(7)
    tree = TreeArrays.from_parent(parent)
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, len(parent), 5, dtype=torch.float64, generator=gen)
    nodes = torch.randint(0, len(parent), (3,), generator=gen)
    per_location = node_log_prob(logits, nodes, tree)
    assert per_location.shape == (3, 5)
    for loc in range(5):
        torch.testing.assert_close(per_location[:, loc], node_log_prob(logits[:, :, loc], nodes, tree))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("product", [False, True])
def test_top_down_decode_from_logits_equals_decoding_the_full_absolute_probabilities(seed, product):
    parent = random_parent(seed, max_nodes=80)
    tree = TreeArrays.from_parent(parent)
    logits = torch.randn(40, len(parent), dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3
    absolute = absolute_log_probs(group_log_softmax(logits, tree), tree).exp()
    for thresh in (0.05, 0.3, 0.5, 0.9):
        node, prob = top_down_decode_logits(logits, tree, thresh, darknet_product=product)
        expected_node, expected_prob = top_down_decode(absolute, tree, thresh, darknet_product=product)
        assert node.tolist() == expected_node.tolist()
        torch.testing.assert_close(prob, expected_prob)


def test_label_log_probs_on_9k_tree_equal_the_full_absolute_log_probs(nine_k):
    tree = TreeArrays.from_parent(nine_k.parent)
    logits = torch.randn(5, 9418, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 4
    coco = torch.tensor([int(line) for line in (NINE_K_TREE.parent / "coco9k.map").read_text().split()])
    full = absolute_log_probs(group_log_softmax(logits, tree), tree)
    torch.testing.assert_close(label_log_probs(logits, tree, coco), full[:, coco])
    node, _ = top_down_decode_logits(logits, tree, 0.1)
    assert node.tolist() == top_down_decode(full.exp(), tree, 0.1)[0].tolist()
