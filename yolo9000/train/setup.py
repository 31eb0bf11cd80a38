"""What a job needs before its first step, shared by the driver's pre-flight check and every worker:
the labels (a WordTree or a flat class list) and the initial weights (`model.init_from`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wordtree.darknet_files import load_tree
from wordtree.labelsets import synset_set
from wordtree.tree import TreeError, WordTree
from yolo9000.data.labelmap import LabelMap
from yolo9000.hierarchy import TreeArrays
from yolo9000.model import WeightsError, load_darknet_weights
from yolo9000.train.checkpoint import CheckpointError, load_state, resolve_checkpoint
from yolo9000.train.config import Config, ConfigError, ModelConfig


@dataclass
class Labels:
    """The classes of a job: wnid per class index, the wnid → index map, and the tree when there is one."""

    wnids: list[str]
    labelmap: LabelMap
    tree: WordTree | None = None
    tree_arrays: TreeArrays | None = None


def load_labels(cfg: Config) -> Labels:
    """The WordTree of `labels.tree`, or the flat wnid list of `labels.classes`; a clear error otherwise."""
    if cfg.labels.tree is not None:
        try:
            tree = load_tree(cfg.labels.tree)
        except TreeError as error:
            raise ConfigError(f"labels.tree: {error}") from None
        return Labels(list(tree.wnids), LabelMap.from_tree(tree), tree, TreeArrays.from_parent(tree.parent.tolist()))
    try:
        wnids = synset_set(cfg.labels.classes)
    except (OSError, ValueError) as error:
        raise ConfigError(f"labels.classes: {error}") from None
    return Labels(wnids, LabelMap.from_classes(wnids))


def init_weights(model: nn.Module, cfg: ModelConfig) -> str:
    """Load `init_from` into a freshly built model: a checkpoint (or run) folder of ours (every tensor whose name and
    shape match, e.g. a classifier's trunk into a detector) or darknet .weights (whole, or the first
    `init_convs` convs, or as many whole convs as the file holds). Returns what was loaded, in words."""
    if cfg.init_from is None:
        return "random initialisation"
    path = resolve_checkpoint(cfg.init_from)
    if path.is_dir():
        return load_matching(model, load_state(path)["model"], path)
    if not path.is_file():
        raise ConfigError(f"model.init_from: {path} is neither a checkpoint folder nor a darknet .weights file")
    try:
        load_darknet_weights(model, path, num_convs=cfg.init_convs, prefix_only=cfg.init_convs is None)
    except WeightsError as error:
        raise ConfigError(f"model.init_from: {error}") from None
    return f"darknet weights {path.name}"


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> str:
    """Copy the tensors whose names and shapes match; at least the trunk must, else it is the wrong network."""
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    convs = [k for k in matching if k.endswith(".conv.weight")]
    if not convs:
        raise CheckpointError(
            f"model.init_from: no layer of {path} fits this {type(model).__name__} (same names and shapes); "
            "is it a checkpoint of another architecture or width?")
    model.load_state_dict(matching, strict=False)
    return f"{len(matching)} of {len(own)} tensors from {path}"
