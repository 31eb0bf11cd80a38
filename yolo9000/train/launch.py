"""fit(cfg): the pre-flight check, then a Ray Train TorchTrainer over `loop.train_worker`, watched from the driver.

The driver checks everything that would otherwise fail late (labels, manifests, shards, init_from) before
any worker starts, connects to a running cluster (`--address`, $RAY_ADDRESS, or the job's own under
`ray job submit`) or starts one on 127.0.0.1, and shows a progress bar fed by a Ray Train callback. The run
folder gets TensorBoard event files, and at the end `loss.png` and `summary.json`. Submitting the same run
name again resumes from its last checkpoint (Ray Train V2: `fit()` with the same name and storage path).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from atomicio import write_file
from yolo9000.data.labelmap import UnknownLabelError
from yolo9000.data.loader import SourceConfig
from yolo9000.data.schema import SchemaError
from yolo9000.data.stream import StreamError, list_shards
from yolo9000.train.config import Config, ConfigError, to_dict, to_yaml
from yolo9000.train.loop import build_model, train_worker
from yolo9000.train.setup import init_weights, load_labels


class PreflightError(ValueError):
    """A job that would fail after its workers started; the message names the offender."""


@dataclass
class FitResult:
    """What a finished job leaves: its last metrics, last checkpoint folder, and run folder."""

    metrics: dict
    checkpoint: str | None
    run_folder: Path
    history: list[dict]  # rank 0's reports seen by this driver, in order


# ---------------------------------------------------------------- pre-flight


def preflight(cfg: Config) -> None:
    """Every check that can fail before a worker starts, each naming its offender."""
    labels = load_labels(cfg)
    for source in cfg.data.sources:
        shards = source_shards(source)
        readers = cfg.run.workers * max(cfg.data.num_workers, 1)
        if not cfg.data.resampled and len(shards) < readers:
            raise PreflightError(
                f"data.sources {source.name!r}: {len(shards)} shard(s) for {readers} readers ({cfg.run.workers} "
                f"workers x {max(cfg.data.num_workers, 1)} loader workers); write more shards, use fewer loader "
                "workers, or set data.resampled: true")
        manifest = manifest_of(source, shards)
        if manifest is not None:
            try:
                labels.labelmap.check_manifests([manifest])
            except (UnknownLabelError, SchemaError) as error:
                raise PreflightError(f"data.sources {source.name!r}: {error}") from None
    if cfg.eval.data is not None:
        evaluation = source_shards(SourceConfig("eval", cfg.eval.data))
        manifest_of(SourceConfig("eval", cfg.eval.data), evaluation)
    try:
        init_weights(build_model(cfg, labels), cfg.model)
    except (ConfigError, ValueError, RuntimeError) as error:
        raise PreflightError(str(error)) from None


def source_shards(source) -> list[str]:
    """The shard urls of a source, each local one present and each http(s) one answering."""
    try:
        shards = list_shards(source.urls)
    except StreamError as error:
        raise PreflightError(f"data.sources {source.name!r}: {error}") from None
    for url in shards:
        if url.startswith(("http://", "https://")):
            check_url(url, source.name)
        elif not url.startswith("pipe:") and not Path(url).is_file():
            raise PreflightError(f"data.sources {source.name!r}: shard {url} does not exist")
    return shards


def check_url(url: str, source: str) -> None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            pass
    except OSError as error:
        raise PreflightError(f"data.sources {source!r}: shard {url} does not answer ({error})") from None


def manifest_of(source, shards: list[str]) -> str | None:
    """The source's manifest: as configured, else `manifest.parquet` beside local shards (None for remote ones)."""
    if source.manifest is not None:
        if not source.manifest.startswith(("http://", "https://")) and not Path(source.manifest).is_file():
            raise PreflightError(f"data.sources {source.name!r}: manifest {source.manifest} does not exist")
        return source.manifest
    local = [s for s in shards if "://" not in s and not s.startswith("pipe:")]
    if not local:
        return None
    beside = Path(local[0]).parent / "manifest.parquet"
    if not beside.is_file():
        raise PreflightError(f"data.sources {source.name!r}: no manifest.parquet beside {local[0]}; "
                             "give the source a `manifest:` path")
    return str(beside)


# ---------------------------------------------------------------- the job


def fit(cfg: Config, address: str | None = None, show_progress: bool = True) -> FitResult:
    """Run (or resume) the job named `cfg.name` under `cfg.run.storage_path` and watch it to the end."""
    preflight(cfg)
    print(f"yolo9000: resolved config\n{to_yaml(cfg)}", flush=True)
    connect(address)
    storage = storage_path(cfg.run.storage_path)
    folder = run_folder(cfg)
    # on the driver's node, as Ray Train's controller is: a lost worker node does not take the progress with it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = ProgressBoard.options(scheduling_strategy=here).remote()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": to_dict(cfg)},
        scaling_config=ScalingConfig(num_workers=cfg.run.workers, use_gpu=use_gpu(cfg),
                                     resources_per_worker={"CPU": cfg.run.cpus_per_worker},
                                     placement_strategy=cfg.run.placement_strategy),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
                             callbacks=[ProgressCallback(board)]),
    )
    watcher = Watcher(board, cfg, folder, show_progress)
    watcher.start()
    started = time.time()
    try:
        result = trainer.fit()
    finally:
        watcher.stop()
    checkpoint = result.checkpoint.path if result.checkpoint else None
    summary = {"name": cfg.name, "wall_s": time.time() - started, "metrics": result.metrics,
               "checkpoint": checkpoint, "config": to_dict(cfg)}
    write_json(folder / "summary.json", summary)
    watcher.plot(folder / "loss.png")
    return FitResult(result.metrics, checkpoint, folder, watcher.history)


def connect(address: str | None) -> None:
    """Join the given or ambient cluster, else start one whose every address and port is on 127.0.0.1."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # the dashboard also serves the state API that Ray Train's clean-up polls; bound to loopback
        ray.init(address="local", dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1")


def disconnect() -> None:
    """Leave the cluster; one that connect() started in this process stops (the next fit() starts afresh)."""
    ray.shutdown()


def storage_path(path: str) -> str:
    """A URI as given; a local folder made absolute (Ray needs one)."""
    return path if "://" in path else str(Path(path).resolve())


def run_folder(cfg: Config) -> Path:
    """Where the driver writes TensorBoard events, loss.png and summary.json: the run's storage folder when
    local, else runs/<name> here."""
    base = Path(cfg.run.storage_path) if "://" not in cfg.run.storage_path else Path("runs")
    folder = base.resolve() / cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def use_gpu(cfg: Config) -> bool:
    if cfg.run.use_gpu is not None:
        return cfg.run.use_gpu
    return ray.cluster_resources().get("GPU", 0) >= cfg.run.workers


def write_json(path: Path, data: dict) -> None:
    write_file(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))


# ---------------------------------------------------------------- watching from the driver


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Rank 0's reported metrics, handed from the Ray Train controller to the driver."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def push(self, metrics: dict) -> None:
        self.items.append(metrics)

    def take(self) -> list[dict]:
        items, self.items = self.items, []
        return items


class ProgressCallback(UserCallback):
    """Runs in the controller: forwards rank 0's metrics (and the checkpoint path) to the board."""

    def __init__(self, board) -> None:
        self.board = board

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self.board.push.remote({**metrics[0], "checkpoint": checkpoint.path if checkpoint else None})


class Watcher:
    """Polls the board: progress bar (steps, images/s, loss, ETA), TensorBoard scalars, loss history."""

    def __init__(self, board, cfg: Config, folder: Path, show: bool) -> None:
        from tensorboardX import SummaryWriter

        self.board, self.history, self.show, self.name, self.steps = board, [], show, cfg.name, cfg.train.steps
        self.first: tuple[float, int] | None = None  # (time, step) of the first report, for the ETA
        self.writer = SummaryWriter(str(folder / "tensorboard"))
        self.bar = tqdm(total=cfg.train.steps, desc=cfg.name, unit="step", disable=not show, dynamic_ncols=True)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.drain()
            self.done.wait(0.5)
        self.drain()

    def drain(self) -> None:
        for metrics in ray.get(self.board.take.remote()):
            self.history.append(metrics)
            step = int(metrics["step"])
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)
            self.bar.n = step
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", img_s=f"{metrics['images_per_s']:.1f}",
                                 size=metrics["input_size"])
            self.bar.refresh()
            if not self.show:  # logs (a job's, a CI's): one line per report instead of a bar
                print(self.line(metrics), flush=True)

    def line(self, metrics: dict) -> str:
        """`name step/steps loss images/s ETA` for logs."""
        step = int(metrics["step"])
        self.first = self.first or (time.time(), step)
        rate = (step - self.first[1]) / max(time.time() - self.first[0], 1e-9)  # updates per second
        eta = (self.steps - step) / rate if rate > 0 else float("nan")
        return (f"[{self.name}] step {step}/{self.steps}  loss {metrics['loss']:.3f}  "
                f"{metrics['images_per_s']:.1f} img/s  size {metrics['input_size']}  ETA {eta:.0f} s")

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self.writer.close()
        self.bar.close()

    def plot(self, path: Path) -> None:
        """The loss terms over steps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.history:
            return
        steps = [m["step"] for m in self.history]
        figure, axis = plt.subplots(figsize=(7, 4))
        for key in [k for k in self.history[-1] if k.startswith("loss/")]:
            axis.plot(steps, [m.get(key, float("nan")) for m in self.history], label=key[5:])
        axis.plot(steps, [m["loss"] for m in self.history], label="total", color="black", linewidth=2)
        axis.set(xlabel="update", ylabel="loss per image", yscale="log", title=path.parent.name)
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
