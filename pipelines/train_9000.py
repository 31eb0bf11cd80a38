"""Train a YOLOv2 / YOLO9000 detector or a Darknet-19 classifier with Ray Train.

    python pipelines/train_9000.py --config configs/yolo9000.yaml [--set train.lr=0.0005 ...]
    ray job submit --working-dir . -- python pipelines/train_9000.py --config configs/yolo9000.yaml

Without a cluster, Ray is started for the job on 127.0.0.1; under `ray job submit` (or with --address /
$RAY_ADDRESS) the job joins the running cluster. Submitting the same run name again resumes it.
"""

from __future__ import annotations

import argparse
import sys

from yolo9000.train.config import ConfigError, load_config
from yolo9000.train.launch import PreflightError, fit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train with Ray Train (DDP over workers; resumable: the same run name continues).",
        epilog="Before any worker starts, the config keys, the tree, every manifest's wnids, the shards and "
        "model.init_from are checked; a problem is printed with the offending key or file and the exit code is 2.",
    )
    parser.add_argument("--config", required=True, help="YAML run configuration (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.0005 --set run.workers=2 (repeatable)")
    parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, the job's cluster, "
                        "else a local one started on 127.0.0.1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        result = fit(cfg, address=args.address, show_progress=not args.no_progress)
    except (ConfigError, PreflightError) as error:
        print(f"train_9000: error: {error}", file=sys.stderr)
        return 2
    print(f"train_9000: done; last checkpoint {result.checkpoint}; run folder {result.run_folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
