import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inference_fixtures import DOG, TERRIER, save_network, write_image
from yolo9000.cli import main
from yolo9000.detect import draw_boxes, label_colour, text_colour
from yolo9000.postprocess import PostprocessConfig
from yolo9000.predict import load_detector, predict, read_image


def test_detect_writes_annotated_images_and_json_boxes_equal_to_predicts(tmp_path, capsys):
    checkpoint = save_network(tmp_path / "net")
    photos = tmp_path / "photos"
    sizes = {"wide.jpg": (150, 70), "tall.jpg": (60, 130), "sub/square.jpg": (64, 64)}
    for name, (w, h) in sizes.items():
        write_image(photos / name, w, h, boxes=[[5, 5, w // 2, h // 2]])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    code = main(["detect", "--checkpoint", str(checkpoint), str(photos), "-o", str(tmp_path / "out"),
                 "--thresh", "0.3", "--hier-thresh", "0.4", "--device", "cpu", "--batch-size", "2", "--no-progress"])
    assert code == 0 and "1 skipped" in capsys.readouterr().out
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [s["file"] for s in document["skipped"]] == [str(photos / "broken.jpg")]
    detector = load_detector(checkpoint)
    config = PostprocessConfig(score_threshold=0.3, hier_thresh=0.4)
    by_file = {entry["file"]: entry for entry in document["images"]}
    assert set(by_file) == {str(photos / name) for name in sizes}
    total = 0
    for name, (w, h) in sizes.items():
        entry = by_file[str(photos / name)]
        (expected,) = predict(detector, [read_image(photos / name)], config)
        boxes = torch.tensor([d["box"] for d in entry["detections"]]).reshape(-1, 4)
        torch.testing.assert_close(boxes, expected.boxes, atol=0.006, rtol=0)  # the JSON rounds to 0.01 px
        assert [d["node"] for d in entry["detections"]] == expected.labels.tolist()
        assert [d["probability"] for d in entry["detections"]] == pytest.approx(expected.scores.tolist(), abs=1e-6)
        for d in entry["detections"]:
            assert d["path"][0] == d["label"] == detector.names[d["node"]]
            assert d["path"][-1] in ("animal", "artifact")  # the path ends at a root
        with Image.open(entry["output"]) as annotated:
            assert annotated.size == (w, h)
        total += len(entry["detections"])
    assert total > 0


def test_detect_of_one_image_to_an_image_name_writes_it_and_its_json_beside_it(tmp_path):
    checkpoint = save_network(tmp_path / "net")
    photo = write_image(tmp_path / "photo.jpg", 100, 80)
    (tmp_path / "set.txt").write_text("dog\tn02084071\nterrier\tn02092468\n")
    code = main(["detect", "--checkpoint", str(checkpoint), str(photo), "-o", str(tmp_path / "photo.out.jpg"),
                 "--thresh", "0.05", "--device", "cpu", "--label-set", str(tmp_path / "set.txt")])
    assert code == 0
    document = json.loads((tmp_path / "photo.out.json").read_text())
    labels = {d["node"] for d in document["images"][0]["detections"]}
    assert labels and labels <= {DOG, TERRIER}  # only the label set is scored
    assert (tmp_path / "photo.out.jpg").exists()


def test_labels_are_drawn_in_the_contrasting_colour_on_dark_and_light_tags():
    assert text_colour((250, 240, 60)) == (0, 0, 0) and text_colour((30, 30, 160)) == (255, 255, 255)
    image = torch.zeros(3, 120, 200, dtype=torch.uint8)
    record = {"box": [40.0, 50.0, 150.0, 110.0], "label": "dog", "node": 2, "probability": 0.87}
    drawn = np.asarray(draw_boxes(image, [record]))
    tag = {tuple(c) for c in drawn[:50, 40:150].reshape(-1, 3)}  # the tag sits above the box
    assert label_colour(2) in tag and text_colour(label_colour(2)) in tag
    assert (drawn[50, 40:150] == label_colour(2)).all()  # the box's top edge


def test_a_small_picture_is_drawn_enlarged_with_its_boxes_scaled_alike():
    image = torch.zeros(3, 60, 100, dtype=torch.uint8)
    record = {"box": [20.0, 25.0, 75.0, 55.0], "label": "dog", "node": 2, "probability": 0.87}
    drawn = np.asarray(draw_boxes(image, [record], min_side=240))
    assert drawn.shape == (240, 400, 3)
    assert (drawn[100, 80:300] == label_colour(2)).all()  # the top edge at 4 x 25, from 4 x 20 to 4 x 75
    assert not (drawn[120, 90:290] == label_colour(2)).all(axis=1).any()  # inside the box: not outlined
    assert np.asarray(draw_boxes(image, [record], min_side=40)).shape == (60, 100, 3)  # large enough already


def test_a_missing_checkpoint_exits_2_naming_it_without_a_traceback(tmp_path):
    photo = write_image(tmp_path / "photo.jpg", 40, 40)
    done = subprocess.run([sys.executable, "-m", "yolo9000.cli", "detect", "--checkpoint", str(tmp_path / "gone"),
                           str(photo), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and str(tmp_path / "gone") in done.stderr and "Traceback" not in done.stderr


def test_weights_for_another_architecture_exit_2_naming_the_file(tmp_path, capsys):
    from yolo9000.model import save_darknet_weights

    detector = load_detector(save_network(tmp_path / "net"))
    save_darknet_weights(detector.model, tmp_path / "tiny.weights")
    code = main(["detect", "--weights", str(tmp_path / "tiny.weights"), "--arch", "yolo9000", "--tree",
                 str(tmp_path / "net" / "wordtree.tree"), "--anchors", "1,1, 2,2", "--device", "cpu",
                 str(tmp_path), "-o", str(tmp_path / "out")])
    assert code == 2 and "tiny.weights" in capsys.readouterr().err
