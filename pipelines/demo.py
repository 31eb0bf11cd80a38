"""make demo: YOLO9000's point end to end on synthetic plane figures, through the project's real commands.

Each step below is a command a user could type (it is printed before it runs):
  1. make_shapes.py        detection scenes (coarse boxes), classification images (fine labels), val, tune
  2. wordtree build        the 14-node labels-only WordTree under plane_figure.n.01
  3. prepare_coco/imagenet WebDataset shards + manifests
  4. yolo9000 anchors      dimension clusters at the demo's input size
  5. cluster/local.sh up 1 a Ray head on 127.0.0.1 (stopped at the end, also on failure or Ctrl-C)
  6. ray job submit        detection warm-up -> joint training, and the detection-only ablation
  7. yolo9000 evaluate     both detectors on the validation scenes, classes split boxed / unboxed / unrelated
  8. yolo9000 detect       annotated validation images
  9. runs/demo/            report.md, metrics.json, loss curves, per-class AP chart

Data, shards and finished runs are keyed by their settings: a second run reuses them and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from yolo9000.train.config import Config, load_config, to_yaml  # noqa: E402
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
       "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"),
       "RAY_DEDUP_LOGS": "1", "PYTHONUNBUFFERED": "1"}
STAGES = ("warmup", "joint", "detonly")
CONFIGS = {"warmup": "demo_shapes_warmup.yaml",
           "joint": "demo_shapes.yaml", "detonly": "demo_shapes_detonly.yaml"}
STARTS_FROM = {"warmup": None, "joint": "warmup", "detonly": "warmup"}


@dataclass
class Settings:
    """What the demo renders and trains; `--tiny` is the suite's miniature of it."""

    train_detection: int = 4000
    train_classification: int = 4000
    val: int = 300
    tune: int = 300
    seed: int = 0
    steps: dict | None = None  # stage -> updates (default: the configs' own)
    longer: int = 1  # the joint run and the ablation train this many times the configs' updates (`--long`: 2)
    score_threshold: float = 1e-4

    @classmethod
    def tiny(cls) -> "Settings":
        return cls(train_detection=48, train_classification=48, val=16, tune=8,
                   steps={"warmup": 4, "joint": 4, "detonly": 4})


class Demo:
    """Runs the steps, times them, and keeps what the report needs."""

    def __init__(self, settings: Settings, data: Path, out: Path) -> None:
        self.settings, self.data, self.out = settings, data, out
        self.times: dict[str, float] = {}
        self.runs: dict[str, dict] = {}
        self.head = False
        self.dashboard = self.gcs = ""
        self.cluster_state = out / ".ray-local"
        self.count = 0

    # ------------------------------------------------------------ commands

    def command(self, title: str, *args: str, capture: bool = False) -> str:
        """Print and run one command (from the repository root); a failure stops the demo with its output."""
        self.count += 1
        printable = " ".join(shlex.quote(str(a).replace(str(REPO) + "/", "")) for a in args)
        print(f"\n[demo {self.count}] {title}\n  $ {printable}", flush=True)
        started = time.time()
        done = subprocess.run([str(a) for a in args], cwd=REPO, env=ENV, text=True,
                              stdout=subprocess.PIPE if capture else None)
        self.times[title] = self.times.get(title, 0.0) + time.time() - started
        if done.returncode != 0:
            raise SystemExit(f"make demo: step '{title}' failed (exit {done.returncode}); see its output above")
        if capture:
            print(done.stdout, end="")
        return done.stdout or ""

    def python(self, title: str, script: str, *args: str, capture: bool = False) -> str:
        return self.command(title, sys.executable, REPO / script, *args, capture=capture)

    # ------------------------------------------------------------ data

    def make_data(self) -> None:
        s = self.settings
        self.python("render the synthetic shapes", "pipelines/make_shapes.py", "--out", self.data / "shapes",
                    "--train-detection", str(s.train_detection), "--train-classification", str(s.train_classification),
                    "--val", str(s.val), "--tune", str(s.tune), "--seed", str(s.seed))
        self.command("build the WordTree", BIN / "wordtree", "build", "--synsets", "shapes", "--root",
                     "plane_figure.n.01", "--shape", "labels-only", "-o", self.data / "tree")
        stamp = digest((self.data / "shapes" / "settings.json").read_text())
        coco = self.data / "shapes" / "coco"
        splits = {"det": ("train", "shapes"), "val": ("val", "shapes-val"), "tune": ("tune", "shapes-tune")}
        for name, (split, source) in splits.items():
            self.prepare(name, stamp, "pipelines/prepare_coco.py", "--ann", coco / "annotations" / f"instances_{split}.json",
                         "--images", coco / split, "--label-map", self.data / "shapes" / "labels.map", "--source", source)
        self.prepare("cls", stamp, "pipelines/prepare_imagenet.py", "--root", self.data / "shapes" / "imagenet" / "train",
                     "--synsets", self.data / "shapes" / "labels.map", "--source", "shapes-cls")

    def prepare(self, name: str, stamp: str, script: str, *args) -> None:
        """Shards of one split, reused while the rendered data they came from is unchanged."""
        out = self.data / "shards" / name
        mark = out / ".rendered-from"
        if mark.exists() and mark.read_text() == stamp and (out / "manifest.parquet").exists():
            print(f"\n[demo] reusing shards {out.relative_to(REPO) if out.is_relative_to(REPO) else out} "
                  "(same rendered data)", flush=True)
            return
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        self.python(f"prepare shards: {name}", script, *args, "-o", out, "--shard-size", "1MB", "--workers", "2")
        mark.write_text(stamp)

    def anchors(self) -> list[list[float]]:
        text = self.command("dimension clusters", BIN / "yolo9000", "anchors", "--manifest",
                            self.data / "shards" / "det" / "manifest.parquet", "-k", "5", "--size", "128",
                            capture=True)
        line = next(l for l in text.splitlines() if l.startswith("anchors = "))
        values = [float(v) for v in line.split("=", 1)[1].replace(" ", "").split(",")]
        return [values[i : i + 2] for i in range(0, len(values), 2)]

    # ------------------------------------------------------------ the cluster and the jobs

    def start_head(self) -> None:
        """A Ray head on 127.0.0.1 by cluster/local.sh (free ports, its own temp dir), its state in runs/demo/."""
        self.command("start a Ray head on 127.0.0.1", *self.local_sh("up", "1", "--num-cpus=2"))
        state = dict(line.split("=", 1) for line in (self.cluster_state / "cluster.env").read_text().splitlines())
        self.head, self.dashboard, self.gcs = True, state["DASHBOARD"], state["GCS"]

    def stop_head(self) -> None:
        if self.head:
            print("\n[demo] stopping the Ray head", flush=True)
            subprocess.run(self.local_sh("down"), env=ENV, stdout=subprocess.DEVNULL)
            self.head = False

    def local_sh(self, *args: str) -> list[str]:
        """cluster/local.sh with this demo's state folder (a cluster of the user's own is left alone)."""
        return ["env", f"RAY_LOCAL_DIR={self.cluster_state}", str(REPO / "cluster" / "local.sh"), *args]

    def train(self, stage: str, anchors: list[list[float]]) -> None:
        """Submit one training job (or reuse its finished run, keyed by its config and data)."""
        overrides = {"model.anchors": json.dumps(anchors), "labels.tree": str(self.data / "tree" / "wordtree.tree"),
                     "run.storage_path": str(self.out)}
        overrides["data.sources"] = json.dumps(self.sources(stage))
        if STARTS_FROM[stage]:
            overrides["model.init_from"] = self.runs[STARTS_FROM[stage]]["folder"]
        overrides.update(longer_training(stage, self.settings.longer))
        if self.settings.steps:
            overrides["train.steps"] = str(self.settings.steps[stage])
            overrides["run.checkpoint_every"] = str(self.settings.steps[stage])
            overrides["run.report_every"] = "1"
        config = REPO / "configs" / CONFIGS[stage]
        name = f"demo_{stage}-{digest(config.read_text() + json.dumps(overrides, sort_keys=True) + self.stamp())}"
        overrides["name"] = name
        folder = self.out / name
        self.runs[stage] = {"name": name, "folder": str(folder), "config": str(config.relative_to(REPO))}
        summary = folder / "summary.json"
        if summary.exists():
            print(f"\n[demo] reusing finished run {name} (same config and data)", flush=True)
            self.runs[stage].update(self.read_summary(summary))
            return
        if not self.head:
            self.start_head()  # only when a stage has to train
        # the stage's config with the demo's overrides, resolved (absolute paths): a record of what ran. The
        # job needs no --working-dir on this one-machine cluster (the code is installed; Ray 2.60 loses
        # the uploaded package of a later job now and then, ray-project/ray#46625)
        job = self.out / "jobs" / f"{name}.yaml"
        job.parent.mkdir(parents=True, exist_ok=True)
        resolved = load_config(config, [f"{key}={value}" for key, value in overrides.items()])
        job.write_text(f"# configs/{CONFIGS[stage]} with the demo's overrides\n" + to_yaml(resolved))
        # RAY_ADDRESS for the job's actors too: Ray Train's clean-up actor otherwise picks "the latest" of
        # several clusters on one machine and, not finding its controller there, tears the run down
        runtime_env = json.dumps({"env_vars": {"RAY_ADDRESS": self.gcs}})
        self.command(f"train: {stage}", BIN / "ray", "job", "submit", "--address", self.dashboard,
                     "--runtime-env-json", runtime_env, "--",
                     sys.executable, REPO / "pipelines" / "train_9000.py", "--config", job, "--no-progress")
        self.runs[stage].update(self.read_summary(summary))

    def sources(self, stage: str) -> list[dict]:
        """The stage config's sources and mixing weights, their shards in this demo's data folder."""
        return [{"name": s.name, "urls": str(self.data / "shards" / Path(s.urls).name), "weight": s.weight,
                 "kind": s.kind} for s in stage_config(stage).data.sources]

    def stamp(self) -> str:
        return (self.data / "shards" / "det" / ".rendered-from").read_text()

    @staticmethod
    def read_summary(path: Path) -> dict:
        summary = json.loads(path.read_text())
        metrics = summary.get("metrics") or {}
        return {"wall_s": summary.get("wall_s"), "images_seen": metrics.get("images_seen"),
                "images_per_s": metrics.get("images_per_s"), "checkpoint": summary.get("checkpoint")}

    # ------------------------------------------------------------ evaluation and pictures

    def evaluate(self, stage: str) -> dict:
        out = self.out / f"evaluation_{stage}.json"
        self.command(f"evaluate: {stage}", BIN / "yolo9000", "evaluate", "--checkpoint", self.runs[stage]["folder"],
                     "--data", self.data / "shards" / "val", "--groups", self.groups_file(),
                     "--train-manifest", self.data / "shards" / "det" / "manifest.parquet",
                     "--score-threshold", str(self.settings.score_threshold), "--json", out,
                     "--plot", self.out / f"pr_{stage}.png", "--workers", "1")
        return json.loads(out.read_text())

    def groups_file(self) -> Path:
        """boxed / unboxed / unrelated, from the roles make_shapes gave the classes."""
        classes = json.loads((self.data / "shapes" / "classes.json").read_text())
        rows = classes["classes"] if isinstance(classes, dict) and "classes" in classes else classes
        path = self.out / "groups.tsv"
        path.write_text("".join(f"{row['role']}_classes\t{row['wnid']}\n" for row in rows))
        return path

    def detect(self) -> None:
        images = sorted((self.data / "shapes" / "coco" / "val").glob("*.jpg"))[:6]
        self.command("detect: annotated validation images", BIN / "yolo9000", "detect", "--checkpoint",
                     self.runs["joint"]["folder"], *images, "-o", self.out / "detections", "--thresh", "0.2",
                     "--draw-min-side", "384")


def stage_config(stage: str) -> Config:
    """A training stage's shipped config, as written (before the demo's overrides)."""
    return load_config(REPO / "configs" / CONFIGS[stage])


def longer_training(stage: str, longer: int) -> dict[str, str]:
    """Overrides that train a stage `longer` times its config's updates, the lr steps moved alike (the warm-up
    that both runs start from keeps its own)."""
    if longer == 1 or stage == "warmup":
        return {}
    train = stage_config(stage).train
    return {"train.steps": str(train.steps * longer), "train.lr_steps": json.dumps([s * longer for s in train.lr_steps])}


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


# ---------------------------------------------------------------- the report


def group_ap(evaluation: dict, group: str) -> float | None:
    """AP50 of a class group from `yolo9000 evaluate --groups` output."""
    entry = evaluation.get("groups", {}).get(f"{group}_classes")
    return None if entry is None else entry.get("AP50")


def exact_share(evaluation: dict, group: str) -> float | None:
    """Share of matched objects of a group whose top-down label is their exact class."""
    entry = evaluation.get("top_down_exact", {}).get(f"{group}_classes")
    return None if entry is None else entry.get("share")


def metrics_of(demo: Demo, joint: dict, ablation: dict) -> dict:
    return {
        "ap_boxed_classes": group_ap(joint, "boxed"),
        "ap_unboxed_classes": group_ap(joint, "unboxed"),
        "ablation_ap_unboxed_classes": group_ap(ablation, "unboxed"),
        "ap_unrelated_classes": group_ap(joint, "unrelated"),
        "ablation_ap_boxed_classes": group_ap(ablation, "boxed"),
        "ablation_ap_unrelated_classes": group_ap(ablation, "unrelated"),
        "top_down_exact_unboxed": exact_share(joint, "unboxed"),
        "ablation_top_down_exact_unboxed": exact_share(ablation, "unboxed"),
        "top_down_exact_counts": {"joint": joint.get("top_down_exact", {}).get("unboxed_classes"),
                                  "ablation": ablation.get("top_down_exact", {}).get("unboxed_classes")},
        "choices": choices(demo),
        "runs": demo.runs,
        "stage_seconds": demo.times,
        "settings": asdict(demo.settings),
    }


def choices(demo: Demo) -> dict:
    """The joint stage's departures from darknet's defaults and the evaluation's settings, read from its config."""
    cfg = stage_config("joint")
    return {"rescore": cfg.loss.rescore, "classification_noobject": cfg.loss.classification_noobject,
            "classification_anchor": cfg.loss.classification_anchor,
            "classification_augment": cfg.data.classification_augment, "jitter": cfg.data.jitter,
            "precise_bn_batches": cfg.train.precise_bn_batches, "score_threshold": demo.settings.score_threshold}


def write_report(demo: Demo, metrics: dict, joint: dict, ablation: dict) -> None:
    out = demo.out
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_class_ap(joint, ablation, out / "class_ap.png")
    weights = {s.kind: s.weight for s in stage_config("joint").data.sources}
    mix = f"{weights['classification'] / weights['detection']:g}:1"
    lines = ["# make demo: fine classes that never had a box", "",
             "Joint: coarse boxes + fine-label classification images, mixed per sample (classification to",
             f"detection {mix}). Ablation: the same without the classification source, the same number of",
             "detection images. Both start from the same detection warm-up. AP50 by pycocotools on the",
             "validation scenes.", "",
             "| metric | joint | ablation |", "| --- | --- | --- |"]
    for key, label in (("boxed_classes", "AP50, coarse classes that had boxes"),
                       ("unboxed_classes", "AP50, fine classes without boxes (parent boxed)"),
                       ("unrelated_classes", "AP50, fine classes with no boxed relative")):
        lines.append(f"| {label} | {fmt(metrics['ap_' + key])} | {fmt(metrics['ablation_ap_' + key])} |")
    lines.append(f"| exact top-down label, unboxed classes | {fmt(metrics['top_down_exact_unboxed'])} | "
                 f"{fmt(metrics['ablation_top_down_exact_unboxed'])} |")
    chosen = ", ".join(f"{key} {value}" for key, value in metrics["choices"].items())
    lines += ["", f"Choices (configs/demo_shapes.yaml and the evaluation): {chosen}.", "",
              "| stage | seconds | images seen | images/s |", "| --- | --- | --- | --- |"]
    for title, seconds in demo.times.items():
        lines.append(f"| {title} | {seconds:.1f} | | |")
    for stage, run in demo.runs.items():
        lines.append(f"| run {stage} ({run['name']}) | {fmt(run.get('wall_s'))} | {run.get('images_seen')} | "
                     f"{fmt(run.get('images_per_s'))} |")
    lines += ["", "Pictures: class_ap.png, pr_joint.png, pr_detonly.png, detections/, and each run's loss.png."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def plot_class_ap(joint: dict, ablation: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = {c["name"]: c.get("AP50") for c in joint.get("classes", [])}
    theirs = {c["name"]: c.get("AP50") for c in ablation.get("classes", [])}
    names = list(ours)
    figure, axis = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4))
    x = range(len(names))
    axis.bar([i - 0.2 for i in x], [ours[n] or 0 for n in names], 0.4, label="joint")
    axis.bar([i + 0.2 for i in x], [theirs.get(n) or 0 for n in names], 0.4, label="ablation (detection only)")
    axis.set_xticks(list(x), names, rotation=45, ha="right")
    axis.set(ylabel="AP50", title="per-class AP50 on the validation scenes")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "demo", help="rendered data, tree and shards (default demo/)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "demo", help="runs and report (default runs/demo/)")
    parser.add_argument("--tiny", action="store_true", help="a miniature (a few images and steps): the test suite's")
    parser.add_argument("--long", action="store_true",
                        help="train the joint run and the ablation twice as long (about 16 instead of 10 minutes on "
                        "2 cores): the exact top-down fine label rises from about .59 to about .74")
    args = parser.parse_args(argv)
    settings = Settings.tiny() if args.tiny else Settings(longer=2 if args.long else 1)
    args.out.mkdir(parents=True, exist_ok=True)
    demo = Demo(settings, args.data.resolve(), args.out.resolve())
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.time()
    try:
        demo.make_data()
        anchors = demo.anchors()
        for stage in STAGES:
            demo.train(stage, anchors)
    except KeyboardInterrupt:
        print("\nmake demo: interrupted", file=sys.stderr)
        return 130
    finally:
        demo.stop_head()
    joint, ablation = demo.evaluate("joint"), demo.evaluate("detonly")
    demo.detect()
    demo.times["total"] = time.time() - started
    metrics = metrics_of(demo, joint, ablation)
    write_report(demo, metrics, joint, ablation)
    print("\n" + (args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
