"""Checkpoints → ONNX (dynamic batch and input size, checked against PyTorch with onnxruntime) and darknet .weights.

    difference = export_onnx("runs/x/checkpoint", "model.onnx")       # largest |onnxruntime − PyTorch| on two inputs
    export_darknet("runs/x/checkpoint", "model.weights")              # read back equal by load_darknet_weights
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from yolo9000.model import load_darknet_weights, save_darknet_weights
from atomicio import write_file
from yolo9000.train.checkpoint import load_model

ONNX_TOLERANCE = 1e-4  # relative to the output's largest magnitude; fp32 convolutions reorder sums


class ExportError(ValueError):
    """An export that failed or does not reproduce the network; the message names the file."""


def check_inputs(input_size: int, stride: int = 32) -> list[torch.Tensor]:
    """Two seeded inputs of other batch sizes and input sizes than the export's dummy: proves the axes are dynamic."""
    generator = torch.Generator().manual_seed(0)
    other = max(stride, input_size - 2 * stride)
    return [torch.rand(1, 3, input_size, input_size, generator=generator),
            torch.rand(3, 3, other, other + stride, generator=generator)]


def onnx_difference(model: nn.Module, path: str | Path, inputs: list[torch.Tensor]) -> float:
    """Largest |onnxruntime − PyTorch| over the inputs, relative to the largest |PyTorch output| (at least 1)."""
    import onnxruntime  # only export needs it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            expected = model(x)
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
            if got.shape != expected.shape:
                raise ExportError(f"{path}: ONNX output {tuple(got.shape)} for input {tuple(x.shape)}, PyTorch "
                                  f"{tuple(expected.shape)}")
            worst = max(worst, float((got - expected).abs().max()) / max(1.0, float(expected.abs().max())))
    return worst


def export_onnx(checkpoint: str | Path, output: str | Path, opset: int = 17) -> float:
    """Write the checkpoint's network as ONNX (input `images` (B, 3, H, W) in [0, 1], output the raw head),
    batch and input size dynamic; returns the checked relative difference, refusing one above ONNX_TOLERANCE."""
    loaded = load_model(checkpoint)
    model = loaded.model.eval()
    size = loaded.spec.input_size
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "rows", 3: "columns"}}
    if loaded.spec.task == "classify":
        dynamic["output"] = {0: "batch"}
    output = Path(output)
    write_file(output, lambda path: write_onnx(model, path, size, dynamic, opset))
    difference = onnx_difference(model, output, check_inputs(size))
    if difference > ONNX_TOLERANCE:
        output.unlink()
        raise ExportError(f"{output}: onnxruntime differs from PyTorch by {difference:.2e} (relative), above "
                          f"{ONNX_TOLERANCE:.0e}; removed")
    return difference


def write_onnx(model: nn.Module, path: Path, size: int, dynamic: dict, opset: int) -> None:
    """torch.onnx's TorchScript exporter (no onnxscript needed); its tracer warnings are silenced, the result checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["images"],
                          output_names=["output"], dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def export_darknet(checkpoint: str | Path, output: str | Path) -> int:
    """Write the checkpoint's network as a darknet .weights file (seen = images seen) and check it reads back equal."""
    loaded = load_model(checkpoint)
    seen = int(loaded.state.get("images_seen") or 0)
    save_darknet_weights(loaded.model, output, seen=seen)
    again = loaded.spec.build()
    load_darknet_weights(again, output)
    expected, got = loaded.model.state_dict(), again.state_dict()
    different = [name for name, tensor in expected.items()
                 if tensor.is_floating_point() and not torch.equal(tensor.cpu(), got[name])]
    if different:
        raise ExportError(f"{output}: tensors {different[:5]} do not read back equal")
    return seen
