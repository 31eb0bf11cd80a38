import math

import pytest
import torch
from PIL import Image

from inference_fixtures import (
    ANCHORS,
    FixedHead,
    encoded,
    save_network,
    shapes_picture,
    small_tree,
    write_image,
    write_validation_shards,
)
from yolo9000.data.labelmap import LabelMap
from yolo9000.data.loader import Loader, LoaderConfig, SourceConfig
from yolo9000.model import save_darknet_weights
from yolo9000.postprocess import PostprocessConfig
from yolo9000.predict import (
    Detector,
    PredictError,
    label_set,
    letterbox_batch,
    load_detector,
    predict,
    predict_files,
    read_image,
)
from yolo9000.train.checkpoint import CheckpointError

NET = 64


def one_box_head() -> FixedHead:
    """One anchor on a 1×1 grid, sure of an object: cx = cy = .5, w = h = .5 of the network input, class 2."""
    output = torch.full((1, 5 + 3, 1, 1), -10.0)
    output[0, :2] = 0.0  # σ = .5
    output[0, 2:4] = math.log(0.5)  # w = h = .5 · anchor 1
    output[0, 4] = 10.0
    output[0, 5 + 2] = 10.0
    return FixedHead(output)


def expected_box(height: int, width: int) -> list[float]:
    """Where the network-input box [16, 16, 48, 48] of a 64 px letterbox lies in an h × w image (darknet's integer
    letterbox, computed here independently)."""
    if NET / width < NET / height:
        new_w, new_h = NET, (height * NET) // width
    else:
        new_w, new_h = (width * NET) // height, NET
    left, top = (NET - new_w) // 2, (NET - new_h) // 2
    x0, x1 = ((16 - left) * width / new_w, (48 - left) * width / new_w)
    y0, y1 = ((16 - top) * height / new_h, (48 - top) * height / new_h)
    return [max(0, x0), max(0, y0), min(width, x1), min(height, y1)]


def fixed_detector() -> Detector:
    return Detector(one_box_head(), torch.ones(1, 2), NET, ["n1", "n2", "n3"], ["a", "b", "c"])


def test_images_of_any_size_grey_cmyk_alpha_and_exif_rotated_get_boxes_in_their_own_pixels(tmp_path):
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # stored 40 wide × 90 high, shown rotated: 90 wide × 40 high
    files = {
        "grey.jpg": (encoded(shapes_picture(50, 30, mode="L")), (30, 50)),
        "cmyk.jpg": (encoded(shapes_picture(70, 20, mode="CMYK")), (20, 70)),
        "alpha.png": (encoded(shapes_picture(33, 77, mode="RGBA"), "PNG"), (77, 33)),
        "tiny.bmp": (encoded(shapes_picture(5, 3), "BMP"), (3, 5)),
        "large.jpg": (encoded(shapes_picture(1200, 700)), (700, 1200)),
        "rotated.jpg": (encoded(shapes_picture(40, 90), exif=exif.tobytes()), (40, 90)),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    run = predict_files(fixed_detector(), [tmp_path / name for name in files], batch_size=4,
                        config=PostprocessConfig(score_threshold=0.5))
    results = {item.path.name: item for item in run}
    assert not run.skipped and set(results) == set(files)
    for name, (_, (height, width)) in files.items():
        item = results[name]
        assert item.image.shape == (3, height, width) and item.image.dtype == torch.uint8, name
        assert item.detections.labels.tolist() == [2], name
        torch.testing.assert_close(item.detections.boxes[0], torch.tensor(expected_box(height, width)), atol=1e-3, rtol=0)


def test_an_unreadable_file_is_named_and_skipped_and_the_rest_still_predicted(tmp_path):
    good = write_image(tmp_path / "good.jpg", 80, 60)
    (tmp_path / "broken.jpg").write_bytes(encoded(shapes_picture(80, 60))[:300])
    (tmp_path / "text.jpg").write_text("not an image")
    run = predict_files(fixed_detector(), [tmp_path / "broken.jpg", good, tmp_path / "text.jpg", tmp_path / "gone.jpg"])
    assert [item.path for item in run] == [good]
    assert [path.name for path, _ in run.skipped] == ["broken.jpg", "text.jpg", "gone.jpg"]
    assert all(str(path) in reason for path, reason in run.skipped)


def test_training_side_and_inference_letterbox_the_same_image_identically(tmp_path):
    shards = write_validation_shards(tmp_path, [{"file": "odd.jpg", "width": 150, "height": 97,
                                                 "boxes": [[10, 20, 90, 80]], "labels": ["n02084071"]}])
    config = LoaderConfig(sources=[SourceConfig("val", str(shards))], batch_size=1, image_size=NET, num_workers=0,
                          shuffle_buffer=0, augment=False, resampled=False, persistent_workers=False)
    (batch,) = list(Loader(config, LabelMap.from_classes(["n02084071"])))
    boxed, sizes = letterbox_batch([read_image(tmp_path / "images" / "odd.jpg")], NET)
    assert torch.equal(batch["images"], boxed)
    assert torch.equal(batch["orig_sizes"], sizes) and sizes.tolist() == [[97, 150]]  # (height, width) on both sides


def test_batched_prediction_equals_one_image_at_a_time(tmp_path):
    detector = load_detector(save_network(tmp_path / "net"))
    images = [read_image(write_image(tmp_path / f"{i}.jpg", w, h, seed=i)) for i, (w, h) in enumerate([(90, 60), (40, 100), (64, 64)])]
    config = PostprocessConfig(score_threshold=0.3)
    together = predict(detector, images, config)
    for image, batched in zip(images, together):
        (alone,) = predict(detector, [image], config)
        assert len(alone.scores) > 0
        torch.testing.assert_close(batched.boxes, alone.boxes, atol=1e-3, rtol=1e-4)
        assert batched.labels.tolist() == alone.labels.tolist()


def test_a_missing_checkpoint_is_an_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        load_detector(tmp_path / "nowhere")


def test_weights_for_another_architecture_are_refused_naming_the_file(tmp_path):
    detector = load_detector(save_network(tmp_path / "net"))
    save_darknet_weights(detector.model, tmp_path / "tiny.weights")
    tree = small_tree()
    (tmp_path / "t.names").write_text("".join(f"{n}\n" for n in tree.names))
    with pytest.raises(PredictError, match="tiny.weights.*YOLOv2 expects"):
        load_detector(weights=tmp_path / "tiny.weights", arch="yolov2", names=tmp_path / "t.names",
                      anchors="1,1, 2.5,2.5")


def test_a_tree_with_another_node_count_than_the_head_is_refused(tmp_path):
    from wordtree.darknet_files import save_tree
    from wordtree.tree import WordTree

    checkpoint = save_network(tmp_path / "net")
    detector = load_detector(checkpoint)
    save_darknet_weights(detector.model, tmp_path / "net.weights")
    four = WordTree.from_parents(["n00015388", "n00021939", "n02084071", "n02121808"], [-1, -1, 0, 0])
    four_files = save_tree(four, tmp_path, stem="four")
    with pytest.raises(PredictError, match=r"fits a head of 6 classes.*four.tree gives 4"):
        load_detector(weights=tmp_path / "net.weights", arch="tiny-yolov2", tree=four_files["tree"], width=0.25,
                      anchors="1,1, 2.5,2.5")
    save_tree(four, checkpoint, stem="wordtree")  # a checkpoint whose tree was swapped
    with pytest.raises(PredictError, match="wordtree.tree has 4 nodes but the network's head predicts 6"):
        load_detector(checkpoint)


def test_darknet_weights_with_their_tree_predict_like_the_checkpoint(tmp_path):
    checkpoint = save_network(tmp_path / "net")
    ours = load_detector(checkpoint)
    save_darknet_weights(ours.model, tmp_path / "net.weights")
    theirs = load_detector(weights=tmp_path / "net.weights", arch="tiny-yolov2", tree=checkpoint / "wordtree.tree",
                           width=0.25, anchors=sum(ANCHORS, []), input_size=NET)
    image = read_image(write_image(tmp_path / "a.jpg", 100, 70))
    (a,), (b,) = predict(ours, [image]), predict(theirs, [image])
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
    assert theirs.names == ours.names and theirs.tree.wnids == ours.tree.wnids


def test_label_sets_resolve_to_the_detectors_nodes_or_name_what_is_missing(tmp_path):
    names = ["person", "bicycle", "car", "motorbike", "dog"]
    flat = Detector(one_box_head(), torch.ones(1, 2), NET, names, names)
    (tmp_path / "two.txt").write_text("dog\tn02084071\nmotorbike\tn03790512\n")  # by wnid, else by name
    chosen = label_set(flat, tmp_path / "two.txt")
    assert chosen.nodes.tolist() == [4, 3] and chosen.names == ["dog", "motorbike"]
    (tmp_path / "nodes.map").write_text("2\n0\n")
    assert label_set(flat, tmp_path / "nodes.map").nodes.tolist() == [2, 0]
    with pytest.raises(PredictError, match="75 classes are not among the detector's 5"):
        label_set(flat, "coco")  # 80 less the 5 it has (motorcycle through darknet's spelling motorbike)
