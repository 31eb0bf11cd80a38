"""Tensor operations over a label tree's flat arrays: group log-softmax, path log-probs, top-down decode.

The tree is given as plain tensors (`TreeArrays`), never as a `WordTree`, so the model, the loss and
the post-processing need nothing but torch. Node order follows darknet's `.tree` rules
(darknet-notes.md, "WordTree"): parents before children, siblings contiguous; each sibling group is a
slice `[offset, offset + size)` of the class axis and gets its own softmax. Group 0 holds the roots.

    tree = TreeArrays.from_parent(wordtree.parent)
    cond = group_log_softmax(logits, tree)            # (..., C) log P(node | parent)
    absolute = absolute_log_probs(cond, tree)         # (..., C) log P(node)
    logp = node_log_prob(logits, labels, tree)        # (N,) log P(label), only the label's path groups
    node, prob = top_down_decode(absolute.exp(), tree, hier_thresh=0.5)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


class HierarchyError(ValueError):
    """A parent array that breaks darknet's tree ordering rules."""


@dataclass(frozen=True, eq=False)
class TreeArrays:
    """A label tree as tensors; build it with `TreeArrays.from_parent(parent)`."""

    parent: Tensor  # (C,) long, -1 for a root
    group: Tensor  # (C,) sibling group of each node
    group_offset: Tensor  # (G,) first node of each group
    group_size: Tensor  # (G,) nodes in each group
    child_group: Tensor  # (C,) group of the node's children, -1 for a leaf
    depth: Tensor  # (C,) edges between the node and its root
    paths: Tensor  # (C, D) node, parent, grandparent, ... root, then -1
    members: Tensor  # (G, S) the nodes of each group, padded with -1 (S = largest group)

    @classmethod
    def from_parent(cls, parent) -> "TreeArrays":
        """Check darknet's ordering rules on a parent array and derive groups, children and paths."""
        parent = torch.as_tensor(parent, dtype=torch.long).reshape(-1).cpu()
        _check_order(parent)
        group, group_offset, group_size = _sibling_groups(parent)
        child_group = torch.full_like(parent, -1)
        has_parent = parent[group_offset] >= 0
        child_group[parent[group_offset[has_parent]]] = torch.nonzero(has_parent).reshape(-1)
        paths = _paths(parent)
        depth = (paths >= 0).sum(1) - 1
        members = _members(group_offset, group_size)
        return cls(parent, group, group_offset, group_size, child_group, depth, paths, members)

    @property
    def num_nodes(self) -> int:
        return self.parent.shape[0]

    @property
    def num_groups(self) -> int:
        return self.group_offset.shape[0]

    @property
    def max_depth(self) -> int:
        """Nodes on the longest node→root path (D)."""
        return self.paths.shape[1]

    def to(self, device: torch.device | str) -> "TreeArrays":
        """The same tree with every tensor on `device`."""
        return TreeArrays(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _check_order(parent: Tensor) -> None:
    if parent.numel() == 0:
        raise HierarchyError("a tree needs at least one node (got an empty parent array)")
    index = torch.arange(parent.numel())
    bad = torch.nonzero((parent >= index) | (parent < -1)).reshape(-1)
    if bad.numel():
        i = int(bad[0])
        raise HierarchyError(
            f"node {i} (line {i + 1} of a .tree file) has parent {int(parent[i])}: parents must come "
            "before their children (parent index < node index, -1 for a root)"
        )


def _sibling_groups(parent: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Runs of consecutive equal parents, as darknet's read_tree forms them; a split run is refused."""
    starts = torch.ones_like(parent, dtype=torch.bool)
    starts[1:] = parent[1:] != parent[:-1]
    offset = torch.nonzero(starts).reshape(-1)
    size = torch.diff(torch.cat([offset, torch.tensor([parent.numel()])]))
    run_parent = parent[offset]
    unique, counts = torch.unique(run_parent, return_counts=True)
    if (counts > 1).any():
        p = int(unique[counts > 1][0])
        lines = (offset[run_parent == p] + 1).tolist()
        whose = "the roots" if p < 0 else f"the children of node {p}"
        raise HierarchyError(
            f"{whose} are not contiguous (runs start at lines {lines}): reorder the tree so that "
            "siblings are consecutive, otherwise darknet would split them into separate softmax groups"
        )
    return torch.cumsum(starts.long(), 0) - 1, offset, size


def _paths(parent: Tensor) -> Tensor:
    """(C, D): each node followed by its ancestors up to the root, padded with -1 (loop over depth)."""
    columns = [torch.arange(parent.numel())]
    while (columns[-1] >= 0).any():
        last = columns[-1]
        columns.append(torch.where(last >= 0, parent[last.clamp(min=0)], -1))
    return torch.stack(columns[:-1], dim=1)


def _members(group_offset: Tensor, group_size: Tensor) -> Tensor:
    """(G, S): node indices of each sibling group, padded with -1."""
    slot = torch.arange(int(group_size.max()))
    members = group_offset[:, None] + slot[None, :]
    return torch.where(slot[None, :] < group_size[:, None], members, -1)


def group_log_softmax(logits: Tensor, tree: TreeArrays) -> Tensor:
    """(..., C) log P(node | parent): a log-softmax within each sibling group (darknet's softmax_tree)."""
    return segment_log_softmax(logits, tree.group, tree.num_groups)


def segment_log_softmax(logits: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """(..., K) log-softmax within the groups given per column by `group` (K,) in [0, num_groups)."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1])  # (N, K)
    index = group.expand_as(flat)
    group_max = torch.full((flat.shape[0], num_groups), float("-inf"), dtype=flat.dtype, device=flat.device)
    group_max = group_max.scatter_reduce(1, index, flat.detach(), reduce="amax", include_self=True)
    shifted = flat - group_max[:, group]
    sum_exp = torch.zeros_like(group_max).index_add(1, group, shifted.exp())
    return (shifted - sum_exp.log()[:, group]).reshape(shape)


def absolute_log_probs(conditional_log_probs: Tensor, tree: TreeArrays) -> Tensor:
    """(..., C) log P(node): conditional log-probs summed along each node's path to its root.

    Level by level from the roots down, touching each node once, like darknet's hierarchy_predictions
    in index order.
    """
    absolute = conditional_log_probs.clone()
    for depth in range(1, tree.max_depth):
        nodes = torch.nonzero(tree.depth == depth).reshape(-1)
        above = absolute.index_select(-1, tree.parent[nodes])
        absolute.index_copy_(-1, nodes, conditional_log_probs.index_select(-1, nodes) + above)
    return absolute


def label_log_probs(logits: Tensor, tree: TreeArrays, nodes: Tensor) -> Tensor:
    """(N, C) logits → (N, L) log P(node) of a fixed label set (e.g. the 80 COCO nodes of the 9k tree).

    Only the sibling groups on the label nodes' paths get a softmax (117 of 9k's 1,846 groups, 1,172 of its
    9,418 columns for COCO), then each node's conditional log-probs are summed along its path; equal to
    absolute_log_probs(group_log_softmax(logits))[:, nodes].
    """
    path = tree.paths[nodes]  # (L, D)
    groups = torch.unique(tree.group[path[path >= 0]])  # (G',) sorted
    members = tree.members[groups]  # (G', S)
    columns = members[members >= 0]  # (K,) ascending: groups are contiguous slices in node order
    local_group = torch.arange(len(groups), device=groups.device)[:, None].expand_as(members)[members >= 0]
    conditional = segment_log_softmax(logits[:, columns], local_group, len(groups))  # (N, K)
    position = torch.searchsorted(columns, path.clamp(min=0))  # (L, D) where each path node sits in `columns`
    steps = conditional[:, position.reshape(-1)].view(-1, *path.shape)  # (N, L, D)
    return torch.where(path >= 0, steps, torch.zeros((), dtype=steps.dtype, device=steps.device)).sum(-1)


def node_log_prob(logits: Tensor, nodes: Tensor, tree: TreeArrays) -> Tensor:
    """log P(node) for logits (N, C) → (N,), or (N, C, L) → (N, L): group log-softmax on the node's path only.

    Gathers the (N, D, S) members of the groups on each path instead of a full softmax, so the 9k-class
    loss never builds class probabilities for every anchor (darknet-notes.md, "delta_region_class":
    only the groups from the label up to its root get a gradient). With (N, C, L) logits (e.g. the class
    channels of one image's anchors, L = H·W locations) each row's node is scored at every location.
    """
    return path_log_probs(logits, nodes, tree).sum(1)


def path_log_probs(logits: Tensor, nodes: Tensor, tree: TreeArrays) -> Tensor:
    """log P(path node | its parent) at each step of each node's path, 0 past the root.

    logits (N, C) → (N, D); logits (N, C, L) → (N, D, L). The gather index is expanded, not copied.
    """
    if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= tree.num_nodes):
        raise HierarchyError(
            f"node indices must lie in [0, {tree.num_nodes}); got {int(nodes.min())}..{int(nodes.max())}"
        )
    flat = logits.dim() == 2
    scores = logits[..., None] if flat else logits  # (N, C, L)
    count, _, locations = scores.shape
    path = tree.paths[nodes]  # (N, D)
    on_path = path >= 0
    groups = tree.group[path.clamp(min=0)]  # (N, D)
    widest = int(tree.group_size[groups[on_path]].max()) if on_path.any() else 1
    members = tree.members[groups, :widest]  # (N, D, S)
    in_group = (members >= 0) & on_path[..., None]
    index = members.clamp(min=0).reshape(count, members.shape[1] * widest, 1).expand(-1, -1, locations)
    member_logits = scores.gather(1, index).reshape(*members.shape, locations)  # (N, D, S, L)
    padding = torch.where(on_path, float("-inf"), 0.0).to(scores.dtype)  # finite past the root: no NaN grad
    member_logits = torch.where(in_group[..., None], member_logits, padding[..., None, None])
    log_norm = torch.logsumexp(member_logits, dim=2)  # (N, D, L)
    node_logits = scores.gather(1, path.clamp(min=0)[..., None].expand(-1, -1, locations))
    out = torch.where(on_path[..., None], node_logits - log_norm, torch.zeros_like(node_logits))
    return out[..., 0] if flat else out


def top_down_decode(
    absolute_probs: Tensor, tree: TreeArrays, hier_thresh: float = 0.5, darknet_product: bool = False
) -> tuple[Tensor, Tensor]:
    """(node, prob) over the leading dims: walk down from the roots while the best child passes hier_thresh.

    In each group take the most probable member (ties to the lower index); accept it while its absolute
    probability is > hier_thresh and descend into its children; return the last accepted node, or the
    best root when no root passes (darknet HEAD since 1b001a7f), with its absolute probability.
    `darknet_product=True` reproduces darknet's hierarchy_top_prediction exactly: it tests p·max with
    already-absolute values, which double counts (darknet-notes.md, "hierarchy_top_prediction").
    """
    shape = absolute_probs.shape[:-1]
    probs = absolute_probs.reshape(-1, absolute_probs.shape[-1])  # (N, C)
    count = probs.shape[0]
    group = torch.zeros(count, dtype=torch.long, device=probs.device)
    product = torch.ones(count, dtype=probs.dtype, device=probs.device)
    active = torch.ones(count, dtype=torch.bool, device=probs.device)
    node = torch.zeros(count, dtype=torch.long, device=probs.device)
    for level in range(tree.max_depth):
        members = tree.members[group]  # (N, S)
        values = probs.gather(1, members.clamp(min=0)).masked_fill(members < 0, float("-inf"))
        best_slot = values.argmax(1)  # first maximum: ties go to the lower index, as darknet's strict '>'
        best_value = values.gather(1, best_slot[:, None]).squeeze(1)
        best = members.gather(1, best_slot[:, None]).squeeze(1)
        score = product * best_value if darknet_product else best_value
        accept = active & (score > hier_thresh)
        if level == 0:
            node = best  # the best root is the answer when no root passes
        node = torch.where(accept, best, node)
        product = torch.where(accept, score, product)
        group = torch.where(accept, tree.child_group[best], group)
        active = accept & (group >= 0)
        group = group.clamp(min=0)
    return node.reshape(shape), probs.gather(1, node[:, None]).reshape(shape)


def top_down_decode_logits(
    logits: Tensor, tree: TreeArrays, hier_thresh: float = 0.5, darknet_product: bool = False
) -> tuple[Tensor, Tensor]:
    """top_down_decode of the absolute probabilities that (N, C) logits give, softmaxing only the groups visited.

    Within a group the most probable member by absolute probability is the most probable by conditional
    probability (they share the parent's factor), so one (N, S) softmax per level replaces the (N, C) group
    softmax and path products: 17 groups of at most 149 members per box instead of 9,418 columns for darknet's tree.
    """
    count = logits.shape[0]
    group = torch.zeros(count, dtype=torch.long, device=logits.device)
    parent_prob = torch.ones(count, dtype=logits.dtype, device=logits.device)  # absolute P of the last accepted node
    product = torch.ones_like(parent_prob)
    active = torch.ones(count, dtype=torch.bool, device=logits.device)
    node, node_prob = torch.zeros_like(group), torch.zeros_like(parent_prob)
    for level in range(tree.max_depth):
        members = tree.members[group]  # (N, S)
        values = logits.gather(1, members.clamp(min=0)).masked_fill(members < 0, float("-inf"))
        conditional = values.softmax(1)
        best_slot = conditional.argmax(1)  # first maximum, as top_down_decode
        best = members.gather(1, best_slot[:, None]).squeeze(1)
        best_prob = parent_prob * conditional.gather(1, best_slot[:, None]).squeeze(1)
        score = product * best_prob if darknet_product else best_prob
        accept = active & (score > hier_thresh)
        if level == 0:  # the best root is the answer when no root passes
            node, node_prob = best, best_prob
        node = torch.where(accept, best, node)
        node_prob = torch.where(accept, best_prob, node_prob)
        parent_prob = torch.where(accept, best_prob, parent_prob)
        product = torch.where(accept, score, product)
        group = torch.where(accept, tree.child_group[best], group)
        active = accept & (group >= 0)
        group = group.clamp(min=0)
    return node, node_prob
