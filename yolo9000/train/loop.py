"""The per-worker training function that Ray Train runs on every rank, and the helpers beside it.

`train_worker` reads top to bottom: set up, resume, then for each update take `subdivisions` batches,
pick the update's input size (the same on every rank), move the batch to the device, forward, loss,
backward (all-reduced on the last micro-batch only), step, report. Everything else is a named helper.

The update equals darknet's (darknet-notes "Optimiser"): the loss summed over the images of one update
divided by their number (batch · subdivisions) on each rank, DDP's average over ranks, SGD with momentum
and weight decay on conv / linear weights only, burn-in and steps / poly policies (schedule.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from yolo9000.batch import BatchTargets
from yolo9000.data.loader import Loader
from yolo9000.data.warp import device_batch
from yolo9000.hierarchy import TreeArrays, absolute_log_probs, group_log_softmax, node_log_prob
from yolo9000.loss import RegionLoss
from yolo9000.train.checkpoint import ModelSpec, load_state, save_checkpoint
from yolo9000.train.config import Config, config_from_dict, to_dict, to_yaml
from yolo9000.train.schedule import lr_at, train_size_at
from yolo9000.train.setup import Labels, init_weights, load_labels

RANK_STATE = "rank{rank}.pt"  # per-rank part of a checkpoint: RNG states and loader positions


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


@dataclass
class Progress:
    """Counters that a checkpoint saves and a resume restores."""

    step: int = 0  # updates done
    images_seen: int = 0  # whole job, all ranks
    nonfinite_in_a_row: int = 0
    skipped_updates: int = 0
    skipped_keys: list[str] = field(default_factory=list)


def train_worker(config: dict) -> dict:
    """Ray Train's train_loop_per_worker: one rank of the job."""
    return run(config_from_dict(config["config"]), RaySession())


def run(cfg: Config, session: "RaySession | LocalSession") -> dict:
    """The training loop of one rank; `session` is Ray Train's (ranks, DDP, checkpoints) or a local one."""
    rank, world, device = session.rank, session.world, session.device
    set_threads(cfg)
    seed_everything(cfg.seed)
    labels = load_labels(cfg)
    model = build_model(cfg, labels)
    init_weights(model, cfg.model)
    model = session.prepare(model.to(device, memory_format=memory_format(cfg, device)))
    model = compiled(compress_gradients(model, cfg), cfg, device)
    criterion = make_criterion(cfg, labels, world).to(device)
    optimizer = make_optimizer(model, cfg)
    progress, positions = resume(session.latest_checkpoint(), model, optimizer, criterion, rank)
    loader = Loader(replace(cfg.data, seed=cfg.seed), labels.labelmap, rank, world,
                    start_step=progress.step * cfg.train.subdivisions, start_positions=positions)
    if progress.step >= cfg.train.steps:  # resubmitted after its final checkpoint: nothing left to do
        return {"step": progress.step, "images_seen": progress.images_seen}
    batches, meter = iter(loader), Meter()
    for step in range(progress.step, cfg.train.steps):
        size = input_size(cfg, step)
        set_lr(optimizer, lr_for(cfg, step))
        evaluating = cfg.eval.data is not None and cfg.eval.every > 0 and (step + 1) % cfg.eval.every == 0
        reporting = (step + 1) % cfg.run.report_every == 0 or (step + 1) % cfg.run.checkpoint_every == 0 or evaluating
        finite = update(cfg, model, criterion, optimizer, batches, meter, size, device, labels, progress, reporting)
        progress.step, progress.images_seen = step + 1, progress.images_seen + meter.end_update() * world
        if reporting and progress.step < cfg.train.steps:  # the last update is reported below, after precise BN
            metrics = meter.report(progress, optimizer, size, loader, finite)
            if evaluating and rank == 0:
                metrics.update(evaluate_now(cfg, model, labels))
            report(session, cfg, metrics, model, optimizer, criterion, progress, loader, labels, final=False)
    if cfg.train.precise_bn_batches:
        precise_bn(model, batches, cfg, device, cfg.train.precise_bn_batches)
    final = meter.report(progress, optimizer, input_size(cfg, cfg.train.steps - 1), loader, True)
    if cfg.eval.data is not None and rank == 0:
        final.update(evaluate_now(cfg, model, labels))
    report(session, cfg, final, model, optimizer, criterion, progress, loader, labels, final=True)
    return final


class RaySession:
    """The loop's view of Ray Train: rank, world size, device, DDP wrapping, checkpoints and reports."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        logging.getLogger("ray.train").setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            handler.addFilter(without_report_echo)
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=False)

    def latest_checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, folder: Path | None) -> None:
        """Every rank reports (a barrier); files of all ranks' folders merge into one checkpoint."""
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder is not None else None
        ray.train.report(metrics, checkpoint=checkpoint)


def without_report_echo(record: logging.LogRecord) -> bool:
    """Drops Ray Train's INFO echo of every report (all metrics, one long line per rank): it comes from a
    logger named by its file path, which `ray.train.LoggingConfig` does not reach; the driver prints progress."""
    return not record.getMessage().startswith("Reporting training result")


class LocalSession:
    """One process, no Ray: the same loop for benchmarks and tests; checkpoints copied under `folder`."""

    def __init__(self, folder: Path | None = None, device: str = "cpu") -> None:
        self.rank, self.world, self.device = 0, 1, torch.device(device)
        self.folder, self.reports, self.checkpoints = folder, [], []

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def latest_checkpoint(self):
        return None

    def report(self, metrics: dict, folder: Path | None) -> None:
        self.reports.append(metrics)
        if folder is not None and self.folder is not None:
            target = self.folder / f"checkpoint_{metrics['step']:08d}"
            shutil.copytree(folder, target, dirs_exist_ok=True)
            self.checkpoints.append(target)


# ---------------------------------------------------------------- set-up


def set_threads(cfg: Config) -> None:
    """torch's intra-op threads: the worker's CPUs unless the config says otherwise."""
    torch.set_num_threads(cfg.run.threads_per_worker or cfg.run.cpus_per_worker)


def seed_everything(seed: int) -> None:
    """Global generators (weight init) from the run seed; data randomness is per sample (loader.py)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_spec(cfg: Config, labels: Labels) -> ModelSpec:
    """The checkpoint's description of the network."""
    anchors = cfg.model.anchors if cfg.task == "detect" else []
    return ModelSpec(task=cfg.task, arch=cfg.model.arch, num_classes=len(labels.wnids), head=cfg.model.head,
                     anchors=[list(map(float, a)) for a in anchors], width=cfg.model.width,
                     input_size=cfg.data.image_size)


def build_model(cfg: Config, labels: Labels) -> nn.Module:
    """The untrained network of the config."""
    return model_spec(cfg, labels).build()


def make_criterion(cfg: Config, labels: Labels, world: int) -> nn.Module:
    """RegionLoss for detectors (seen counts all ranks); an empty module for classifiers (nothing to save)."""
    if cfg.task == "classify":
        return nn.Module()
    return RegionLoss(torch.tensor(cfg.model.anchors), len(labels.wnids), labels.tree_arrays, cfg.loss, replicas=world)


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD (darknet) or AdamW, weight decay on conv / linear weights only (not biases, not batch norm)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            wanted = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            (decay if wanted else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.train.lr)
    return torch.optim.SGD(groups, lr=cfg.train.lr, momentum=cfg.train.momentum)


def compress_gradients(model: nn.Module, cfg: Config) -> nn.Module:
    """With `run.gradient_compression: bf16`, DDP all-reduces gradients as bf16 (torch's bf16_compress_hook: half
    the bytes on the links; each rank's gradient is rounded to bf16 before the sum). One rank: nothing to do."""
    if cfg.run.gradient_compression == "bf16" and isinstance(model, nn.parallel.DistributedDataParallel):
        model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    return model


def compiled(model: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """torch.compile on CUDA when configured, the input size marked dynamic (dynamic=True) so that the
    multi-scale sizes share one graph instead of recompiling every 10 updates."""
    if cfg.run.compile and device.type == "cuda":
        return torch.compile(model, dynamic=True)
    return model


def memory_format(cfg: Config, device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" and cfg.run.channels_last else torch.contiguous_format


# ---------------------------------------------------------------- one update


def input_size(cfg: Config, step: int) -> int:
    """This update's input size: the same on every rank and on resume (a pure function of seed and step)."""
    t = cfg.train
    return train_size_at(step, cfg.seed, cfg.data.image_size, t.multi_scale, tuple(t.multi_scale_sizes),
                         t.multi_scale_every, t.final_size, t.final_size_steps, t.steps)


def lr_for(cfg: Config, step: int) -> float:
    t = cfg.train
    return lr_at(step, t.lr, t.policy, t.burn_in, t.power, tuple(t.lr_steps), tuple(t.lr_scales), t.steps)


def update(cfg: Config, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, batches,
           meter: Meter, size: int, device: torch.device, labels: Labels, progress: Progress,
           with_stats: bool) -> bool:
    """One update: `subdivisions` micro-batches, the loss of each summed over its images and divided by the
    update's images on this rank (darknet's B), gradients all-reduced on the last one only, then the step."""
    for micro in range(cfg.train.subdivisions):
        batch = meter.wait(batches)
        images, targets = device_batch(batch, size, device)  # float input at this update's size (warped, if deferred)
        with sync_unless(model, micro + 1 < cfg.train.subdivisions), autocast(cfg, device):
            terms, stats = task_loss(cfg, model, criterion, images, targets, labels, with_stats)
            loss = sum(terms.values()) / (len(images) * cfg.train.subdivisions)
        loss.backward()
        meter.add(terms, stats, batch)
    return apply_update(model, optimizer, progress, meter.keys, cfg.train.max_nonfinite)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def sync_unless(model: nn.Module, accumulating: bool):
    """DDP's no_sync while accumulating micro-batches: one all-reduce per update, on the last."""
    ddp = getattr(model, "_orig_mod", model)
    if accumulating and isinstance(ddp, nn.parallel.DistributedDataParallel):
        return ddp.no_sync()
    return contextlib.nullcontext()


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on CUDA (when configured); fp32 on CPU."""
    if device.type == "cuda" and cfg.run.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def task_loss(cfg: Config, model: nn.Module, criterion: nn.Module, images: Tensor, targets: BatchTargets,
              labels: Labels, with_stats: bool) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Summed (not averaged) loss terms of a micro-batch, and statistics on reporting steps."""
    output = model(images).float()
    if cfg.task == "detect":
        result = criterion(output, targets, compute_stats=with_stats)
        return result.terms, result.stats
    return classification_terms(output, targets.to(output.device), labels.tree_arrays, with_stats)


def classification_terms(logits: Tensor, targets: BatchTargets, tree: TreeArrays | None,
                         with_stats: bool) -> tuple[dict[str, Tensor], dict[str, float]]:
    """−log P(label) summed over the images: flat softmax, or every group on the label's tree path; top-1 / top-5
    over the classes, over the leaves for a tree (an ancestor's absolute probability is never below its leaf's)."""
    label = targets.image_label
    if tree is None:
        log_probs = logits.log_softmax(-1)
        loss = -log_probs.gather(1, label[:, None]).sum()
    else:
        tree = tree.to(logits.device)
        loss = -node_log_prob(logits, label, tree).sum()
        log_probs = absolute_log_probs(group_log_softmax(logits.detach(), tree), tree)
        log_probs = log_probs.masked_fill(tree.child_group >= 0, -math.inf)  # darknet ranks leaves only
    stats = {}
    if with_stats:
        top5 = log_probs.detach().topk(min(5, log_probs.shape[-1]), dim=-1).indices
        stats = {"top1": float((top5[:, 0] == label).float().mean()),
                 "top5": float((top5 == label[:, None]).any(1).float().mean())}
    return {"class": loss}, stats


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, keys: list[str],
                 max_nonfinite: int) -> bool:
    """Step unless a gradient is non-finite (the same answer on every rank after DDP's all-reduce);
    a skipped update is counted and named by its batch keys; `max_nonfinite` in a row stop the run."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))) if grads else True
    if finite:
        optimizer.step()
        progress.nonfinite_in_a_row = 0
    optimizer.zero_grad(set_to_none=True)
    if not finite:
        progress.nonfinite_in_a_row += 1
        progress.skipped_updates += 1
        progress.skipped_keys = keys[:8]
        warnings.warn(f"update {progress.step + 1}: non-finite loss or gradient, skipped; batch keys {keys[:8]}")
        if progress.nonfinite_in_a_row >= max_nonfinite:
            raise NonFiniteLossError(
                f"{progress.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient (last batch keys "
                f"{keys[:8]}): lower train.lr, lengthen train.burn_in, or check those samples")
    return finite


class Meter:
    """Loss terms, statistics, images and data-wait time since the last report (values stay on the device
    until a report, so steps in between need no sync)."""

    def __init__(self) -> None:
        self.terms: dict[str, Tensor] = {}
        self.stats: dict[str, float] = {}
        self.images = self.images_in_update = 0
        self.wait_s, self.keys, self.started = 0.0, [], time.perf_counter()

    def wait(self, batches) -> dict:
        """The next batch, timing how long the step waited for it."""
        start = time.perf_counter()
        batch = next(batches)
        self.wait_s += time.perf_counter() - start
        return batch

    def add(self, terms: dict[str, Tensor], stats: dict[str, float], batch: dict) -> None:
        """One micro-batch's summed terms; `keys` keeps the current update's samples (to name a bad update)."""
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0) + value.detach()
        self.stats = stats or self.stats
        self.images += len(batch["keys"])
        self.images_in_update += len(batch["keys"])
        self.keys += batch["keys"]

    def end_update(self) -> int:
        """Images of the update that just ended; the next update's keys start empty."""
        images, self.images_in_update, self.keys = self.images_in_update, 0, []
        return images

    def report(self, progress: Progress, optimizer, size: int, loader: Loader, finite: bool) -> dict:
        """Metrics since the last report (loss terms per image), then start counting again."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        terms = {name: float(value) / max(self.images, 1) for name, value in self.terms.items()}
        stats = loader.stats
        metrics = {
            "step": progress.step, "images_seen": progress.images_seen,
            "loss": sum(terms.values()), **{f"loss/{k}": v for k, v in terms.items()},
            **{f"stats/{k}": v for k, v in self.stats.items()},
            "images_per_s": self.images / elapsed, "data_wait_share": self.wait_s / elapsed,
            "lr": optimizer.param_groups[0]["lr"], "input_size": size,
            "corrupt_samples": stats["corrupt_samples"], "unreadable_shards": stats["unreadable_shards"],
            "skipped_updates": progress.skipped_updates, "last_update_finite": finite,
            **{f"mix/{k}": v for k, v in shares(stats["source_counts"]).items()},
        }
        self.__init__()
        return metrics


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Realised share of each source."""
    total = sum(counts.values()) or 1
    return {name: count / total for name, count in sorted(counts.items())}


def evaluate_now(cfg: Config, model: nn.Module, labels: Labels) -> dict[str, float]:
    """`yolo9000 evaluate`'s numbers for the current weights on the validation source, as `eval/...` metrics
    (batch-norm statistics as they stand: precise BN runs once, at the end)."""
    from yolo9000.evaluate import EvaluationSettings, evaluate_shards
    from yolo9000.predict import Detector

    anchors = torch.tensor(cfg.model.anchors if cfg.task == "detect" else [], dtype=torch.float32).reshape(-1, 2)
    names = labels.tree.names if labels.tree is not None else list(labels.wnids)
    detector = Detector(unwrap(model), anchors, cfg.data.image_size, list(labels.wnids), names, labels.tree,
                        task=cfg.task)
    train_manifests = [m for s in cfg.data.sources if s.kind == "detection"
                       for m in [s.manifest or str(Path(str(s.urls)) / "manifest.parquet")] if Path(m).is_file()]
    settings = EvaluationSettings(score_threshold=cfg.eval.score_threshold, train_manifests=train_manifests,
                                  groups_file=cfg.eval.groups_file, batch_size=cfg.eval.batch_size, workers=0)
    return {f"eval/{k}": v for k, v in evaluate_shards(detector, cfg.eval.data, settings).scalars().items()}


# ---------------------------------------------------------------- checkpoints


def report(session, cfg: Config, metrics: dict, model: nn.Module, optimizer, criterion: nn.Module,
           progress: Progress, loader: Loader, labels: Labels, final: bool) -> None:
    """Report on every rank; with a checkpoint on checkpoint steps and at the end."""
    if not (final or progress.step % cfg.run.checkpoint_every == 0):
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="yolo9000-checkpoint-") as folder:
        write_rank_state(Path(folder), session.rank, loader.positions)
        if session.rank == 0:
            state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "criterion": criterion.state_dict(), "progress": vars(progress).copy(),
                     "config": to_dict(cfg), "metrics": metrics}
            save_checkpoint(folder, state, model_spec(cfg, labels), to_yaml(cfg), labels.wnids, labels.tree)
        session.report(metrics, Path(folder))


def write_rank_state(folder: Path, rank: int, positions: dict[int, int]) -> None:
    """This rank's RNG states and loader positions, beside rank 0's state.pt in the merged checkpoint."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"rank": rank, "loader_positions": {int(k): int(v) for k, v in positions.items()},
             "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
             "numpy_rng": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached)}
    torch.save(state, folder / RANK_STATE.format(rank=rank))


def restore_rank_state(path: Path) -> dict[int, int]:
    """Set this rank's RNG states from its checkpoint file; its loader positions."""
    state = torch.load(path, weights_only=True)
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    kind, keys, position, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    return state["loader_positions"]


def resume(checkpoint, model: nn.Module, optimizer, criterion: nn.Module, rank: int) -> tuple[Progress, dict | None]:
    """Restore the training state from Ray's latest checkpoint (a restart or a resubmitted run)."""
    if checkpoint is None:
        return Progress(), None
    with checkpoint.as_directory() as folder:
        state = load_state(folder)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        rank_file = Path(folder) / RANK_STATE.format(rank=rank)
        positions = restore_rank_state(rank_file) if rank_file.exists() else None  # None: another world size
    return Progress(**state["progress"]), positions


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside torch.compile's and DDP's wrappers (whose state dict names are the plain ones)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def precise_bn(model: nn.Module, batches, cfg: Config, device: torch.device, num_batches: int) -> None:
    """Re-estimate batch-norm statistics as the plain mean over `num_batches` training batches (pycls, timm),
    averaged over ranks; the rest of the network is unchanged."""
    norms = [m for m in unwrap(model).modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for _ in range(num_batches):
        unwrap(model)(device_batch(next(batches), cfg.data.image_size, device)[0])
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        if dist.is_available() and dist.is_initialized():
            for buffer in (norm.running_mean, norm.running_var):
                dist.all_reduce(buffer)
                buffer /= dist.get_world_size()
    if not math.isfinite(float(sum(n.running_var.sum() for n in norms) if norms else 0.0)):
        raise NonFiniteLossError("precise_bn: batch-norm statistics became non-finite")
