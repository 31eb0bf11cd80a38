"""The cloud cluster definitions: they parse (the `ray up` one against Ray's own schema), and the job each one
runs is the training entry point with a shipped config that loads."""

import json
import shlex
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from yolo9000.data.stream import list_shards
from yolo9000.train.config import load_config

REPO = Path(__file__).resolve().parents[2]


def entrypoint_config(entrypoint: str) -> Path:
    """The config a `python pipelines/train_9000.py --config X ...` entrypoint names, checked to be one."""
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "pipelines/train_9000.py"], entrypoint
    return REPO / words[words.index("--config") + 1]


def test_the_ray_up_file_passes_rays_schema_and_runs_the_training_entry_point_with_a_shipped_config():
    cluster = yaml.safe_load((REPO / "cluster" / "aws-gpu.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    gpu = cluster["available_node_types"]["gpu"]
    assert gpu["min_workers"] == gpu["max_workers"] == 8
    config = load_config(entrypoint_config(cluster["metadata"]["entrypoint"]))
    assert config.run.workers == 8 * 8 and config.run.use_gpu


def test_the_rayjob_runs_the_training_entry_point_on_8_pods_of_8_gpus_with_a_shipped_config():
    job = yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    config = load_config(entrypoint_config(job["spec"]["entrypoint"]))
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert group["replicas"] * int(container["resources"]["limits"]["nvidia.com/gpu"]) == config.run.workers
    cpus = int(container["resources"]["limits"]["cpu"])
    assert cpus >= 8 * config.run.cpus_per_worker, "each pod holds 8 ranks' CPUs"


def test_the_8x8_config_reads_shards_from_object_storage_with_enough_shards_for_every_reader():
    config = load_config(REPO / "configs" / "yolo9000_8x8.yaml")
    readers = config.run.workers * config.data.num_workers
    for source in config.data.sources:
        shards = list_shards(source.urls)
        assert all(url.startswith("pipe:aws s3 cp") and url.endswith(" -") for url in shards)
        assert len(shards) >= readers, source.name
    assert config.run.storage_path.startswith("s3://")
