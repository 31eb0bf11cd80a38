import onnxruntime
import torch

from inference_fixtures import save_network
from yolo9000.cli import main
from yolo9000.export import ONNX_TOLERANCE
from yolo9000.model import load_darknet_weights
from yolo9000.train.checkpoint import load_model


def test_onnx_export_equals_pytorch_at_other_batch_and_input_sizes(tmp_path, capsys):
    checkpoint = save_network(tmp_path / "net", input_size=64)
    code = main(["export", "--onnx", str(checkpoint), "-o", str(tmp_path / "model.onnx")])
    assert code == 0 and "onnxruntime equals PyTorch" in capsys.readouterr().out
    model = load_model(checkpoint).model
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 96, 160), (5, 3, 32, 32)]:  # neither the export's (1, 3, 64, 64) nor the export's own checks
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.inference_mode():
            expected = model(x)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= ONNX_TOLERANCE * max(1.0, float(expected.abs().max()))


def test_darknet_export_reads_back_equal(tmp_path, capsys):
    checkpoint = save_network(tmp_path / "net")
    code = main(["export", "--darknet", str(checkpoint), "-o", str(tmp_path / "model.weights")])
    assert code == 0 and "seen = 56" in capsys.readouterr().out
    loaded = load_model(checkpoint)
    fresh = loaded.spec.build()
    assert load_darknet_weights(fresh, tmp_path / "model.weights") == 56
    for name, tensor in loaded.model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, fresh.state_dict()[name]), name


def test_inspect_prints_step_images_seen_tree_metrics_and_config(tmp_path, capsys):
    checkpoint = save_network(tmp_path / "net")
    assert main(["inspect", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    for expected in ("step        7", "images seen 56", "WordTree of 6 nodes", "loss = 1.5", "arch: tiny-yolov2"):
        assert expected in out
    assert main(["inspect", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
