"""The checkpoint folder: the whole training state, written so that writing one never damages the last.

A checkpoint is a folder (the one a Ray Train `Checkpoint` points at):

    state.pt          torch.save of plain containers and tensors only, read with weights_only=True:
                      format, model_spec, model, optimizer, step, images_seen, rng, loader_positions, metrics
    config.yaml       the resolved run configuration
    wordtree.tree     the label tree (darknet's format) when the classes are a tree, with wordtree.names
    classes.labels    the wnid of every class index, in order (tree node order when there is a tree)

`predict`, `evaluate`, `inspect` and `export` read the same folder through `load_model`.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

import atomicio
from wordtree.darknet_files import load_tree, read_lines_file, save_tree
from wordtree.tree import WordTree
from yolo9000.model import build_classifier, build_detector

FORMAT = "yolo9000-checkpoint/1"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
TREE_STEM = "wordtree"
LABELS_FILE = "classes.labels"
TASKS = ("detect", "classify")


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, foreign or damaged; the message names the file."""


@dataclass
class ModelSpec:
    """What it takes to rebuild the network of a checkpoint without its training config."""

    task: str  # "detect" or "classify"
    arch: str  # yolov2 | yolo9000 | tiny-yolov2 (detect); darknet19 | tiny-yolov2 trunk (classify)
    num_classes: int
    head: str = "paper"
    anchors: list[list[float]] = field(default_factory=list)  # (A, 2) grid cells, detectors only
    width: float = 1.0  # channel multiplier (Tiny YOLOv2)
    input_size: int = 416

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CheckpointError(f"model task {self.task!r} is not one of {TASKS}")

    def build(self) -> nn.Module:
        """The untrained network of this spec."""
        if self.task == "classify":
            return build_classifier(self.arch, self.num_classes, width=self.width)
        return build_detector(self.arch, self.num_classes, len(self.anchors), head=self.head, width=self.width)


@dataclass
class LoadedModel:
    """A network with its weights and what is needed to name its outputs."""

    model: nn.Module
    spec: ModelSpec
    labels: list[str]  # wnid per class index
    tree: WordTree | None
    state: dict


def save_checkpoint(directory: str | Path, state: dict, spec: ModelSpec, config_yaml: str, labels: list[str],
                    tree: WordTree | None = None) -> Path:
    """Write the checkpoint files into `directory`, all of them or none (atomicio)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "model_spec": asdict(spec), **state}
    atomicio.write_files({
        directory / STATE_FILE: lambda p: torch.save(payload, p),
        directory / CONFIG_FILE: lambda p: p.write_text(config_yaml),
        directory / LABELS_FILE: lambda p: p.write_text("".join(f"{w}\n" for w in labels)),
    })
    if tree is not None:
        save_tree(tree, directory, stem=TREE_STEM)
    return directory


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the newest complete checkpoint of a run folder (Ray's checkpoint_*)."""
    path = Path(path)
    if (path / STATE_FILE).is_file() or not path.is_dir():
        return path
    complete = sorted(p for p in path.glob("checkpoint_*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else path


def load_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The state dict of a checkpoint folder (or a run folder's newest), read with weights_only=True; a
    foreign or damaged file is an error."""
    directory = resolve_checkpoint(directory)
    path = directory / STATE_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint folder (expected a folder holding {STATE_FILE})")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {directory} is not a yolo9000 checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable yolo9000 checkpoint ({str(error).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (format {state.get('format') if isinstance(state, dict) else None!r})")
    return state


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a checkpoint (or a run folder's newest), load its weights, read its labels and tree."""
    directory = resolve_checkpoint(directory)
    state = load_state(directory, map_location)
    spec = ModelSpec(**state["model_spec"])
    model = spec.build()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{directory / STATE_FILE}: weights do not fit {spec.arch}: {str(error).splitlines()[0]}") from None
    labels = read_lines_file(directory / LABELS_FILE)
    tree_path = directory / f"{TREE_STEM}.tree"
    tree = load_tree(tree_path) if tree_path.exists() else None
    return LoadedModel(model.eval(), spec, labels, tree, state)


def describe_checkpoint(directory: str | Path) -> dict:
    """What a checkpoint holds besides the weights (for `yolo9000 inspect`): spec, step, images seen, metrics,
    class and tree sizes, and the run configuration."""
    directory = resolve_checkpoint(directory)
    state = load_state(directory)
    tree_path, config_path, labels_path = directory / f"{TREE_STEM}.tree", directory / CONFIG_FILE, directory / LABELS_FILE
    return {
        "checkpoint": str(directory),
        "format": state["format"],
        "model_spec": state.get("model_spec"),
        "step": state.get("step"),
        "images_seen": state.get("images_seen"),
        "metrics": state.get("metrics") or {},
        "classes": len(read_lines_file(labels_path)) if labels_path.exists() else None,
        "tree_nodes": len(read_lines_file(tree_path)) if tree_path.exists() else None,
        "config": config_path.read_text() if config_path.exists() else None,
    }
