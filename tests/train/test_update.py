"""One update of the loop against darknet's update written out by hand; the pieces around it (optimizer
groups, non-finite skips, precise BN, checkpoint files) on small real networks, without Ray."""

import copy
import itertools
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from yolo9000.batch import BatchTargets
from yolo9000.hierarchy import TreeArrays
from yolo9000.loss import RegionLoss, RegionLossConfig
from yolo9000.model import build_detector
from yolo9000.train.checkpoint import CheckpointError, ModelSpec, load_model, load_state, save_checkpoint
from yolo9000.train.config import config_from_dict
from yolo9000.train.loop import (
    Meter, NonFiniteLossError, Progress, apply_update, classification_terms, make_optimizer, precise_bn, update,
)
from yolo9000.train.setup import Labels
from yolo9000.data.labelmap import LabelMap

ANCHORS = [[1.0, 1.0], [2.0, 1.5]]
CLASSES = 3


def config(run: dict | None = None, **train):
    return config_from_dict({
        "model": {"arch": "tiny-yolov2", "width": 0.125, "anchors": ANCHORS},
        "labels": {"classes": "voc"}, "data": {"sources": [{"name": "x", "urls": "x"}]},
        "train": {"subdivisions": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.005, **train},
        "run": run or {},
    })


def random_batch(seed: int, images: int = 3) -> dict:
    """A batch as the loader makes it: uint8 images, targets with a box or a classification label each."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(images, 1, 2, generator=gen) * 0.5 + 0.25
    boxes = torch.cat([centre - 0.15, centre + 0.15], -1)
    labels = torch.randint(0, CLASSES, (images, 1), generator=gen)
    is_classification = torch.arange(images) == 0
    targets = BatchTargets(boxes, labels, is_classification, torch.where(is_classification, 1, -1))
    return {"images": torch.randint(0, 256, (images, 3, 64, 64), dtype=torch.uint8, generator=gen),
            "targets": targets, "hsv": None, "keys": [f"s{seed}-{i}" for i in range(images)]}


def network():
    torch.manual_seed(0)
    return build_detector("tiny-yolov2", CLASSES, len(ANCHORS), width=0.125)


def darknet_update(model, criterion, micro_batches, accumulators, lr, momentum, decay):
    """darknet-notes "Optimiser": accumulate −∂(summed loss) over the update's B images, add −decay·B·W to
    the conv weights' accumulators only, W += (lr / B)·accumulator, then accumulator ·= momentum."""
    model.zero_grad()
    images = 0
    for batch in micro_batches:
        x = batch["images"].float() / 255
        criterion(model(x), batch["targets"]).total.backward()
        images += len(x)
    with torch.no_grad():
        for module in model.modules():
            for name, weight in module.named_parameters(recurse=False):
                accumulator = accumulators.setdefault(weight, torch.zeros_like(weight))
                accumulator -= weight.grad
                if name == "weight" and isinstance(module, nn.Conv2d):
                    accumulator -= decay * images * weight
                weight += lr / images * accumulator
                accumulator *= momentum


def test_two_updates_of_the_loop_equal_darknets_update_written_by_hand():
    cfg = config()
    ours, reference = network(), network()
    criterion = RegionLoss(torch.tensor(ANCHORS), CLASSES, config=RegionLossConfig(darknet_version="final"))
    reference_criterion = copy.deepcopy(criterion)
    optimizer = make_optimizer(ours, cfg)
    labels = Labels(["a", "b", "c"], LabelMap.from_classes(["a", "b", "c"]))
    batches = [random_batch(seed) for seed in range(4)]
    accumulators = {}
    for step in range(2):
        update(cfg, ours, criterion, optimizer, iter(batches[2 * step : 2 * step + 2]), Meter(), 64,
               torch.device("cpu"), labels, Progress(), with_stats=False)
        darknet_update(reference, reference_criterion, batches[2 * step : 2 * step + 2], accumulators,
                       lr=0.01, momentum=0.9, decay=0.005)
    for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(ours.state_dict()["detect.weight"], network().state_dict()["detect.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_applies_to_conv_weights_only(optimizer):
    model = network()
    groups = make_optimizer(model, config(optimizer=optimizer)).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.005 and groups[1]["weight_decay"] == 0.0
    for name, parameter in model.named_parameters():
        assert (id(parameter) in decayed) == (name.endswith("conv.weight") or name == "detect.weight"), name


def test_a_non_finite_gradient_skips_the_update_names_the_batch_and_ten_in_a_row_stop():
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    progress = Progress()
    for count in range(1, 10):
        model(torch.tensor([[float("nan"), 1.0]])).sum().backward()
        with pytest.warns(UserWarning, match="non-finite.*bad-key"):
            assert not apply_update(model, optimizer, progress, ["bad-key"], max_nonfinite=10)
        assert progress.skipped_updates == count and torch.equal(model.weight, before)
    model(torch.tensor([[float("inf"), 1.0]])).sum().backward()
    with pytest.raises(NonFiniteLossError, match="10 updates in a row.*bad-key"), pytest.warns(UserWarning):
        apply_update(model, optimizer, progress, ["bad-key"], max_nonfinite=10)
    model(torch.tensor([[1.0, 1.0]])).sum().backward()
    assert apply_update(model, optimizer, Progress(), [], max_nonfinite=10)


def test_precise_bn_sets_batch_norm_statistics_to_the_mean_over_the_batches():
    cfg = config()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.01))
    batches = [random_batch(seed, images=2) for seed in range(5)]
    precise_bn(model, iter(batches), cfg, torch.device("cpu"), num_batches=5)
    features = [model[0](b["images"].float() / 255).detach() for b in batches]
    expected_mean = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    assert model[1].momentum == 0.01


def test_tree_classification_loss_is_minus_the_log_probability_of_every_group_on_the_path():
    tree = TreeArrays.from_parent([-1, -1, 0, 0])  # groups {0, 1}, {2, 3}
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5]])
    targets = BatchTargets(torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.long), torch.tensor([True]),
                           torch.tensor([3]))
    terms, stats = classification_terms(logits, targets, tree, with_stats=True)
    expected = -(torch.log_softmax(torch.tensor([0.0, 1.0]), 0)[0] + torch.log_softmax(torch.tensor([2.0, 0.5]), 0)[1])
    torch.testing.assert_close(terms["class"], expected)
    assert stats["top1"] == 0.0 and stats["top5"] == 1.0  # P(node 1) = .73 > P(node 3) = .05


def test_tree_top1_ranks_leaves_not_their_ancestors():
    tree = TreeArrays.from_parent([-1, -1, 0, 0])
    logits = torch.tensor([[2.0, 0.0, 2.0, 0.5]])  # P(node 0) = .88 > P(node 2) = .72 > P(node 3), P(node 1)
    targets = BatchTargets(torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.long), torch.tensor([True]),
                           torch.tensor([2]))
    _, stats = classification_terms(logits, targets, tree, with_stats=True)
    assert stats["top1"] == 1.0


def spec() -> ModelSpec:
    return ModelSpec("detect", "tiny-yolov2", CLASSES, anchors=ANCHORS, width=0.125, input_size=64)


def test_a_checkpoint_folder_round_trips_and_a_foreign_file_is_refused(tmp_path):
    model = network()
    save_checkpoint(tmp_path / "ck", {"model": model.state_dict(), "step": 3}, spec(), "name: x\n", ["a", "b", "c"])
    loaded = load_model(tmp_path / "ck")
    assert loaded.labels == ["a", "b", "c"] and loaded.state["step"] == 3 and loaded.spec == spec()
    for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    (tmp_path / "foreign").mkdir()
    torch.save({"model": {}}, tmp_path / "foreign" / "state.pt")
    with pytest.raises(CheckpointError, match="foreign.*not a yolo9000-checkpoint"):
        load_state(tmp_path / "foreign")
    (tmp_path / "ck" / "state.pt").write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="state.pt: not a readable"):
        load_state(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_state(tmp_path / "missing")


def test_an_arbitrary_pickle_in_a_checkpoint_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    (tmp_path / "ck").mkdir()
    torch.save({"format": "yolo9000-checkpoint/1", "x": Evil()}, tmp_path / "ck" / "state.pt")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_state(tmp_path / "ck")


def test_sigkill_during_checkpoint_writes_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A writer rewriting one checkpoint folder in a loop is SIGKILLed at several moments; every time, the
    folder still loads, holding one whole version."""
    script = textwrap.dedent(f"""
        import torch
        from yolo9000.train.checkpoint import ModelSpec, save_checkpoint
        spec = ModelSpec("detect", "tiny-yolov2", 3, anchors={ANCHORS}, width=0.125, input_size=64)
        for version in range(1_000_000):
            big = torch.full((4_000_000,), float(version))
            save_checkpoint({str(tmp_path / "ck")!r}, {{"model": {{}}, "version": version, "big": big}}, spec, "x: 1\\n", ["a"])
            print(version, flush=True)
    """)
    for delay in (0.3, 0.7, 1.1):
        writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "0"  # one whole checkpoint written
        try:
            writer.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            writer.kill()
        writer.wait()
        state = load_state(tmp_path / "ck")
        assert bool((state["big"] == state["version"]).all())


def test_init_from_a_classifier_checkpoint_loads_its_trunk_into_the_detector(tmp_path):
    from yolo9000.model import build_classifier
    from yolo9000.train.config import ModelConfig
    from yolo9000.train.setup import init_weights

    classifier = build_classifier("tiny-yolov2", 5, width=0.125)
    save_checkpoint(tmp_path / "cls", {"model": classifier.state_dict()},
                    ModelSpec("classify", "tiny-yolov2", 5, width=0.125), "x: 1\n", list("abcde"))
    detector = network()
    head_before = detector.detect.weight.detach().clone()
    message = init_weights(detector, ModelConfig(arch="tiny-yolov2", width=0.125, init_from=str(tmp_path / "cls")))
    trunk = {k: v for k, v in classifier.state_dict().items() if k.startswith("features.")}
    for name, value in trunk.items():
        assert torch.equal(detector.state_dict()[name], value), name
    assert torch.equal(detector.detect.weight, head_before) and f"{len(trunk)} of" in message


def all_reduced_gradient(rank: int, world: int, store: str, compression: str, out: str) -> None:
    """One DDP backward on a rank of a gloo group (loopback); rank 0 saves its all-reduced and its own gradient."""
    import os

    import torch.distributed as dist

    from yolo9000.train.loop import compress_gradients

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    layer = nn.Linear(64, 8)
    cfg = config(run={"gradient_compression": compression})
    ddp = compress_gradients(nn.parallel.DistributedDataParallel(layer), cfg)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(rank)) * (rank + 1)
    ddp(x).square().sum().backward()
    own = nn.Linear(64, 8)
    own.load_state_dict(layer.state_dict())
    own(x).square().sum().backward()
    gathered = [torch.zeros_like(own.weight.grad) for _ in range(world)]
    dist.all_gather(gathered, own.weight.grad)
    if rank == 0:
        torch.save({"reduced": layer.weight.grad, "each": gathered}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("compression", ["none", "bf16"])
def test_gradient_compression_all_reduces_bf16_rounded_gradients_only_when_asked(compression, tmp_path):
    out = tmp_path / "grads.pt"
    torch.multiprocessing.spawn(all_reduced_gradient, args=(2, str(tmp_path / "store"), compression, str(out)),
                                nprocs=2)
    saved = torch.load(out)
    mean = (saved["each"][0] + saved["each"][1]) / 2
    bf16 = ((saved["each"][0] / 2).bfloat16() + (saved["each"][1] / 2).bfloat16()).float()
    if compression == "none":
        assert torch.allclose(saved["reduced"], mean, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(saved["reduced"], bf16) and not torch.equal(saved["reduced"], mean)
        assert (saved["reduced"] - mean).abs().max() <= 2**-7 * mean.abs().max()  # bf16 keeps 8 bits of mantissa


def test_an_unknown_gradient_compression_is_a_config_error_naming_the_key():
    from yolo9000.train.config import ConfigError

    with pytest.raises(ConfigError, match="run.gradient_compression"):
        config(run={"gradient_compression": "fp8"})
