"""The run configuration: nested dataclasses with the paper's defaults, loaded from YAML, strictly.

    cfg = load_config("configs/yolo9000.yaml", overrides=["train.lr=0.0005"])
    print(to_yaml(cfg))          # the resolved config, printed at start and saved with every checkpoint

Unknown keys and wrong types are errors that name the key path (`train.lr_steps: expected a list of
ints, got 'x'`); `--set key.path=value` overrides follow the same rules (the value is read as YAML).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yolo9000.data.loader import LoaderConfig, SourceConfig
from yolo9000.loss import RegionLossConfig
from yolo9000.train.schedule import MULTI_SCALE_SIZES

TASKS = ("detect", "classify")
OPTIMIZERS = ("sgd", "adamw")
POLICIES = ("constant", "steps", "poly")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
GRADIENT_COMPRESSIONS = ("none", "bf16")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key path."""


@dataclass
class ModelConfig:
    """The network: a detector (`task: detect`) or a global-pool classifier over its trunk (`task: classify`)."""

    arch: str = "yolov2"  # yolov2 | yolo9000 | tiny-yolov2 | darknet19 (classify)
    head: str = "final"  # YOLOv2's passthrough head: paper | final
    width: float = 1.0  # Tiny YOLOv2's channel multiplier
    anchors: list[list[float]] = field(default_factory=lambda: [
        [0.57273, 0.677385], [1.87446, 2.06253], [3.33843, 5.47434], [7.88282, 3.52778], [9.77052, 9.16828]])
    init_from: str | None = None  # a checkpoint folder of ours or a darknet .weights file
    init_convs: int | None = None  # .weights: load only the first N convs (darknet19_448.conv.23 -> 23)


@dataclass
class LabelsConfig:
    """The classes: a WordTree (`tree`), or a flat list of wnids (`classes`: a file or a shipped set name)."""

    tree: str | None = None  # darknet .tree file (with its .names beside it)
    classes: str | None = None  # e.g. coco, voc, imagenet1k, or a file of wnids


@dataclass
class TrainConfig:
    """The update and its schedule (darknet-notes "Optimiser, BN and activation facts")."""

    steps: int = 1000  # updates (darknet's max_batches)
    subdivisions: int = 1  # micro-batches per update (gradient accumulation, no all-reduce until the last)
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005  # conv and linear weights only; never biases or batch norm
    policy: str = "steps"  # constant | steps | poly
    lr_steps: list[int] = field(default_factory=list)
    lr_scales: list[float] = field(default_factory=list)
    power: float = 4.0  # poly exponent and burn-in exponent
    burn_in: int = 0
    multi_scale: bool = True
    multi_scale_sizes: list[int] = field(default_factory=lambda: list(MULTI_SCALE_SIZES))
    multi_scale_every: int = 10
    final_size: int | None = None  # darknet trains the last `final_size_steps` updates at 608
    final_size_steps: int = 200
    precise_bn_batches: int = 0  # re-estimate batch-norm statistics on N training batches at the end
    max_nonfinite: int = 10  # consecutive non-finite losses that stop the run


@dataclass
class RunConfig:
    """Where and how the job runs: Ray workers, devices, checkpoints and reporting."""

    storage_path: str = "runs"  # local folder or any URI pyarrow's filesystems take
    workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    threads_per_worker: int | None = None  # torch intra-op threads (default: cpus_per_worker)
    checkpoint_every: int = 100
    num_to_keep: int = 2
    max_failures: int = 0
    placement_strategy: str = "PACK"  # Ray placement of the workers: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    report_every: int = 10
    compile: bool = False  # torch.compile on CUDA, the input size marked dynamic
    channels_last: bool = True  # on CUDA
    bf16: bool = True  # autocast on CUDA; always fp32 on CPU
    gradient_compression: str = "none"  # "bf16": DDP all-reduces bf16 gradients (half the bytes; docs/scaling.md)


@dataclass
class EvalConfig:
    """Evaluation of a validation source during training (`yolo9000 evaluate`'s function), on rank 0."""

    data: str | None = None  # validation shards (their manifest.parquet beside them); None: no evaluation
    every: int = 0  # updates between evaluations (0: only at the end of the run)
    score_threshold: float = 0.005  # darknet's; under-trained heads need ~1e-4
    groups_file: str | None = None  # named class groups, `group<TAB>wnid` lines
    batch_size: int = 8


@dataclass
class Config:
    """One training job."""

    name: str = "run"
    task: str = "detect"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    data: LoaderConfig = field(default_factory=lambda: LoaderConfig(sources=[SourceConfig("none", "")]))
    loss: RegionLossConfig = field(default_factory=RegionLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key.path=value` overrides, check every key and type."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    return resolve_paths(config_from_dict(data))


def resolve_paths(cfg: Config) -> Config:
    """Local paths made absolute against the current folder: Ray workers run elsewhere."""
    local = lambda value: value is not None and "://" not in value and not value.startswith("pipe:")  # noqa: E731
    absolute = lambda value: str(Path(value).resolve()) if local(value) else value  # noqa: E731
    cfg.labels.tree = absolute(cfg.labels.tree)
    if cfg.labels.classes is not None and Path(cfg.labels.classes).exists():
        cfg.labels.classes = absolute(cfg.labels.classes)
    cfg.model.init_from = absolute(cfg.model.init_from)
    cfg.eval.data, cfg.eval.groups_file = absolute(cfg.eval.data), absolute(cfg.eval.groups_file)
    cfg.run.storage_path = absolute(cfg.run.storage_path)
    for source in cfg.data.sources:
        source.urls = [absolute(u) for u in source.urls] if isinstance(source.urls, list) else absolute(source.urls)
        source.manifest = absolute(source.manifest)
    return cfg


def config_from_dict(data: dict) -> Config:
    """A Config from plain data (YAML, or what a checkpoint saved), checked."""
    cfg = build(Config, data, "")
    if "classification_augment" not in (data.get("data") or {}) and cfg.task == "detect":
        cfg.data.classification_augment = "detection"  # darknet's joint training: one loader for every image
    check(cfg)
    return cfg


def apply_override(data: dict, override: str) -> None:
    """Set `a.b.c=value` in nested dicts; the value is read as YAML (numbers, lists, null)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY.PATH=VALUE, e.g. train.lr=0.0005")
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parents[: i + 1])} is not a section")
    try:
        node[last] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML ({error})") from None


def build(cls: type, data: Any, path: str) -> Any:
    """An instance of dataclass `cls` from a mapping, every key known and every value of its field's type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if cls is LoaderConfig and "seed" in data:
        raise ConfigError(f"{join(path, 'seed')}: the data seed is the run's top-level `seed`")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{join(path, unknown[0])}: unknown key; valid keys here: {', '.join(sorted(fields))}")
    values = {name: convert(hints[name], value, join(path, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path or 'config'}: {error}") from None


def convert(hint: Any, value: Any, path: str) -> Any:
    """`value` checked (and built, for nested dataclasses) against a type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for inner in [a for a in args if a is not type(None)]:
            try:
                return convert(inner, value, path)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {describe(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {describe(hint)}, got {value!r}")
        return [convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{path}: expected {describe(hint)}, got {value!r}")


def describe(hint: Any) -> str:
    """'an int', 'a list of ints' ... for messages."""
    if typing.get_origin(hint) is list:
        return f"a list of {describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return " or ".join(describe(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    name = {int: "int", float: "number", str: "string", bool: "boolean"}.get(hint, getattr(hint, "__name__", str(hint)))
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check(cfg: Config) -> None:
    """Choices and relations between keys that the types alone do not catch."""
    choices = [("task", cfg.task, TASKS), ("train.optimizer", cfg.train.optimizer, OPTIMIZERS),
               ("train.policy", cfg.train.policy, POLICIES),
               ("run.placement_strategy", cfg.run.placement_strategy, PLACEMENTS),
               ("run.gradient_compression", cfg.run.gradient_compression, GRADIENT_COMPRESSIONS)]
    for path, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(allowed)}")
    if len(cfg.train.lr_steps) != len(cfg.train.lr_scales):
        raise ConfigError(f"train.lr_steps has {len(cfg.train.lr_steps)} entries but train.lr_scales has "
                          f"{len(cfg.train.lr_scales)}: give one scale per step")
    positive = {"train.steps": cfg.train.steps, "train.subdivisions": cfg.train.subdivisions,
                "train.multi_scale_every": cfg.train.multi_scale_every, "run.workers": cfg.run.workers,
                "run.checkpoint_every": cfg.run.checkpoint_every, "run.report_every": cfg.run.report_every,
                "run.cpus_per_worker": cfg.run.cpus_per_worker}
    for path, value in positive.items():
        if value < 1:
            raise ConfigError(f"{path}: must be >= 1, got {value}")
    if (cfg.labels.tree is None) == (cfg.labels.classes is None):
        raise ConfigError("labels: give exactly one of labels.tree (a WordTree file) or labels.classes (wnids)")
    if cfg.task == "detect" and not cfg.model.anchors:
        raise ConfigError("model.anchors: a detector needs anchors ([[w, h], ...] in grid cells)")
    sizes = cfg.train.multi_scale_sizes if cfg.train.multi_scale else [cfg.data.image_size]
    for size in sizes + ([cfg.train.final_size] if cfg.train.final_size else []):
        if size % 32:
            raise ConfigError(f"train: input size {size} is not a multiple of 32 (the network's stride)")


def to_dict(cfg: Config) -> dict:
    """Plain data of a Config (what YAML and checkpoints hold); the loader's seed is the run's."""
    data = dataclasses.asdict(cfg)
    data["data"].pop("seed", None)
    return data


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
