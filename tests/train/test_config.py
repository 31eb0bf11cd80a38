"""Run configs: strict keys and types named by their path, overrides, shipped configs, the lr schedule."""

from pathlib import Path

import pytest

from yolo9000.train.config import ConfigError, apply_override, config_from_dict, load_config, to_dict, to_yaml
from yolo9000.train.schedule import lr_at, train_size_at

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"labels": {"classes": "voc"}, "data": {"sources": [{"name": "voc", "urls": "shards/voc"}]}}


def with_(**sections):
    return {**MINIMAL, **sections}


@pytest.mark.parametrize("data,message", [
    (with_(train={"lr_steps": "x"}), r"train\.lr_steps: expected a list of ints, got 'x'"),
    (with_(train={"lr_steps": [1, "x"]}), r"train\.lr_steps\[1\]: expected an int, got 'x'"),
    (with_(train={"lr": "fast"}), r"train\.lr: expected a number, got 'fast'"),
    (with_(train={"steps": True}), r"train\.steps: expected an int, got True"),
    (with_(trian={}), r"trian: unknown key; valid keys here: .*train"),
    (with_(model={"anchor": []}), r"model\.anchor: unknown key"),
    (with_(data={"sources": [{"name": "a", "urls": 3}]}), r"data\.sources\[0\]\.urls: expected a string or a list"),
    (with_(data={"sources": [{"name": "a", "urls": "u", "kind": "boxes"}]}), r"data\.sources\[0\]: source 'a': kind"),
    (with_(data={"sources": [{"name": "a", "urls": "u"}], "seed": 3}), r"data\.seed: the data seed is the run's"),
    (with_(train={"optimizer": "lamb"}), r"train\.optimizer: 'lamb' is not one of sgd, adamw"),
    (with_(train={"lr_steps": [10], "lr_scales": []}), r"lr_steps has 1 entries but train\.lr_scales has 0"),
    (with_(train={"multi_scale_sizes": [320, 330]}), r"input size 330 is not a multiple of 32"),
    (with_(labels={"classes": "voc", "tree": "x.tree"}), r"labels: give exactly one"),
    ({"data": MINIMAL["data"]}, r"labels: give exactly one"),
])
def test_a_bad_config_names_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_overrides_follow_the_same_rules_and_read_values_as_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("labels: {classes: voc}\ndata:\n  sources: [{name: voc, urls: shards/voc}]\n")
    cfg = load_config(path, ["train.lr=0.0005", "train.lr_steps=[10, 20]", "train.lr_scales=[.1, .1]",
                             "run.use_gpu=null"])
    assert cfg.train.lr == 0.0005 and cfg.train.lr_steps == [10, 20] and cfg.run.use_gpu is None
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key"):
        load_config(path, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["train.lr"])
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        load_config(path, ["train.lr=[1]"])
    with pytest.raises(ConfigError, match="labels.classes is not a section"):
        apply_override({"labels": {"classes": "voc"}}, "labels.classes.x=1")


def test_local_paths_become_absolute_for_workers_that_run_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("labels: {classes: voc}\ndata:\n  sources: [{name: voc, urls: shards/voc}]\n")
    cfg = load_config("run.yaml")
    assert cfg.data.sources[0].urls == str(tmp_path / "shards" / "voc") and cfg.labels.classes == "voc"
    assert cfg.run.storage_path == str(tmp_path / "runs")


def test_the_resolved_config_round_trips_through_yaml_and_plain_data(tmp_path):
    cfg = config_from_dict(with_(train={"lr": 0.01, "subdivisions": 2}))
    (tmp_path / "resolved.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "resolved.yaml") == load_config(tmp_path / "resolved.yaml")
    assert config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem or cfg.name.startswith("demo")


def test_paper_configs_hold_the_papers_values():
    coco = load_config(REPO / "configs" / "yolov2_coco.yaml")
    assert (coco.train.lr, coco.train.burn_in, coco.train.lr_scales, coco.train.final_size) == (0.001, 1000, [0.1, 0.1], 608)
    nine = load_config(REPO / "configs" / "yolo9000.yaml")
    weights = {s.name: s.weight for s in nine.data.sources}
    assert len(nine.model.anchors) == 3 and weights == {"coco": 1, "imagenet": 4}
    classifier = load_config(REPO / "configs" / "darknet19_imagenet.yaml")
    assert (classifier.task, classifier.train.lr, classifier.train.policy, classifier.data.image_size) == ("classify", 0.1, "poly", 224)


def test_learning_rate_follows_darknets_burn_in_steps_and_poly():
    assert lr_at(0, 1e-3, "steps", burn_in=1000) == 0.0
    assert lr_at(500, 1e-3, "steps", burn_in=1000) == pytest.approx(1e-3 * 0.5**4)
    assert lr_at(1000, 1e-3, "steps", burn_in=1000, steps=(2000, 3000), scales=(0.1, 0.1)) == 1e-3
    assert lr_at(2000, 1e-3, "steps", steps=(2000, 3000), scales=(0.1, 0.1)) == pytest.approx(1e-4)
    assert lr_at(3500, 1e-3, "steps", steps=(2000, 3000), scales=(0.1, 0.1)) == pytest.approx(1e-5)
    assert lr_at(50, 0.1, "poly", power=4, max_steps=100) == pytest.approx(0.1 * 0.5**4)
    assert lr_at(7, 0.1, "constant") == 0.1


def test_the_last_updates_train_at_the_final_size_as_darknet_does():
    sizes = [train_size_at(s, 0, 416, True, final_size=608, final_steps=200, max_steps=1000) for s in range(1000)]
    assert set(sizes[801:]) == {608} and len(set(sizes[:801])) > 3  # darknet: batch + 200 > max_batches
    assert {train_size_at(s, 0, 416, False) for s in range(50)} == {416}


@pytest.mark.parametrize("task,data,recipe", [
    ("detect", {}, "detection"),  # darknet's joint training reads classification images as detection ones
    ("classify", {}, "classifier"),
    ("detect", {"classification_augment": "classifier"}, "classifier"),
])
def test_classification_images_are_augmented_by_the_jobs_recipe_unless_set(task, data, recipe):
    cfg = config_from_dict({**MINIMAL, "task": task, "data": {**MINIMAL["data"], **data}})
    assert cfg.data.classification_augment == recipe
