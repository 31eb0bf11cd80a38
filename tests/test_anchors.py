import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yolo9000.anchors import (
    AnchorError,
    darknet_anchors_line,
    kmeans_anchors,
    mean_iou_curve,
    plot_mean_iou_curve,
    read_manifest_boxes,
    to_grid_units,
    wh_iou,
)
from yolo9000.data.schema import MANIFEST_SCHEMA, SampleRecord, SchemaError

SHAPES = np.array([[0.05, 0.30], [0.20, 0.20], [0.60, 0.35]])  # tall thin, square, wide large


def three_shape_clusters(n_per_cluster: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), n_per_cluster)
    wh = SHAPES[truth] * np.exp(rng.normal(0, 0.05, size=(len(truth), 2)))
    return wh, truth


def slow_iou(a, b) -> float:
    inter = min(a[0], b[0]) * min(a[1], b[1])
    return inter / (a[0] * a[1] + b[0] * b[1] - inter)


def test_kmeans_with_k3_recovers_three_well_separated_shape_clusters():
    wh, truth = three_shape_clusters()
    result = kmeans_anchors(wh, 3, seed=0)
    order = np.argsort(SHAPES.prod(axis=1))
    np.testing.assert_allclose(result.anchors, SHAPES[order], rtol=0.03)
    # every true cluster maps to exactly one anchor
    assert len({(t, a) for t, a in zip(truth, result.assignment)}) == 3
    assert result.mean_iou > 0.9


def test_anchors_are_sorted_by_area_and_assignment_points_at_the_best_anchor():
    wh, _ = three_shape_clusters()
    result = kmeans_anchors(wh, 4, seed=3)
    areas = result.anchors.prod(axis=1)
    assert np.all(np.diff(areas) >= 0)
    iou = wh_iou(wh, result.anchors)
    np.testing.assert_array_equal(result.assignment, iou.argmax(axis=1))
    assert result.mean_iou == pytest.approx(iou.max(axis=1).mean())


def test_same_seed_gives_the_same_anchors_and_another_seed_may_differ():
    rng = np.random.default_rng(7)
    wh = rng.uniform(0.01, 1.0, size=(500, 2))
    a = kmeans_anchors(wh, 5, seed=11)
    b = kmeans_anchors(wh, 5, seed=11)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    np.testing.assert_array_equal(a.assignment, b.assignment)


def test_iou_matrix_equals_a_slow_loop_reference():
    rng = np.random.default_rng(0)
    wh = rng.uniform(0.01, 1.0, size=(23, 2))
    centroids = rng.uniform(0.01, 1.0, size=(5, 2))
    expected = np.array([[slow_iou(w, c) for c in centroids] for w in wh])
    np.testing.assert_allclose(wh_iou(wh, centroids), expected, rtol=1e-12)


def test_mean_iou_never_decreases_with_k_on_the_curve(tmp_path):
    rng = np.random.default_rng(5)
    wh = np.exp(rng.normal(np.log(0.2), 0.8, size=(800, 2))).clip(0.005, 1.0)
    results = mean_iou_curve(wh, range(1, 9), seed=0)
    ious = [r.mean_iou for r in results]
    assert [len(r.anchors) for r in results] == list(range(1, 9))
    assert all(later >= earlier for earlier, later in zip(ious, ious[1:]))
    png = plot_mean_iou_curve(results, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_clusters_are_reseeded_instead_of_producing_nan():
    # 4 anchors for boxes of only 2 distinct shapes: two clusters must end up (near) empty
    wh = np.array([[0.1, 0.1]] * 10 + [[0.5, 0.5]] * 10 + [[0.11, 0.1], [0.5, 0.52]])
    duplicated = np.array([[0.1, 0.1], [0.1, 0.1], [0.5, 0.5], [0.5, 0.5]])  # argmax ties leave 2 empty
    result = kmeans_anchors(wh, 4, seed=0, init=duplicated)
    assert np.all(np.isfinite(result.anchors))
    assert len(np.unique(result.anchors, axis=0)) == 4
    assert result.mean_iou > 0.99


def test_grid_units_match_darknet_13_by_13_cells_at_416():
    anchors = np.array([[1.08 / 13, 1.19 / 13], [0.5, 1.0]])
    grid = to_grid_units(anchors, input_size=416, stride=32)
    np.testing.assert_allclose(grid, [[1.08, 1.19], [6.5, 13.0]])
    np.testing.assert_allclose(to_grid_units(anchors, input_size=608), anchors * 19)
    assert darknet_anchors_line(grid) == "anchors = 1.08,1.19, 6.5,13"
    with pytest.raises(AnchorError, match="multiple of the stride"):
        to_grid_units(anchors, input_size=400)


def write_manifest(path, boxes_column, boxes_type):
    table = pa.table(
        {
            "source": ["coco", "coco", "imagenet", "coco"],
            "width": [200, 100, 300, 400],
            "height": [100, 50, 300, 400],
            "boxes": pa.array(boxes_column, type=boxes_type),
            "labels": [["n1", "n2"], ["n1"], None, []],
            "image_label": [None, None, "n01440764", None],
            "shard": ["s0.tar"] * 4,
        }
    )
    pq.write_table(table, path)


def test_manifest_boxes_are_normalised_by_image_size_and_classification_rows_skipped(tmp_path):
    nested = [[[0, 0, 100, 50], [10, 10, 30, 60]], [[0, 0, 100, 25]], None, []]
    write_manifest(tmp_path / "nested.parquet", nested, pa.list_(pa.list_(pa.float32())))
    flat = [[0, 0, 100, 50, 10, 10, 30, 60], [0, 0, 100, 25], None, []]
    write_manifest(tmp_path / "flat.parquet", flat, pa.list_(pa.float64()))
    expected = [[0.5, 0.5], [0.1, 0.5], [1.0, 0.5]]
    for name in ("nested.parquet", "flat.parquet"):
        sizes = read_manifest_boxes([tmp_path / name])
        np.testing.assert_allclose(sizes.wh, expected)
        assert (sizes.skipped_zero_size, sizes.rows_without_boxes) == (0, 2)
    both = read_manifest_boxes([tmp_path / "nested.parquet", tmp_path / "flat.parquet"])
    assert len(both.wh) == 6 and both.rows_without_boxes == 4


def test_zero_size_boxes_are_skipped_with_a_count_when_reading_and_refused_when_clustering(tmp_path):
    boxes = [[[0, 0, 100, 50], [10, 10, 10, 60]], [[5, 5, 50, 5]], None, [[0, 0, 40, 40]]]
    write_manifest(tmp_path / "m.parquet", boxes, pa.list_(pa.list_(pa.float64())))
    sizes = read_manifest_boxes([tmp_path / "m.parquet"])
    np.testing.assert_allclose(sizes.wh, [[0.5, 0.5], [0.1, 0.1]])
    assert sizes.skipped_zero_size == 2
    with pytest.raises(AnchorError, match="zero or negative size"):
        kmeans_anchors(np.array([[0.1, 0.2], [0.0, 0.3]]), 1)


def test_unreadable_manifests_raise_errors_that_name_the_file(tmp_path):
    with pytest.raises(SchemaError, match="manifest not found"):
        read_manifest_boxes([tmp_path / "missing.parquet"])
    pq.write_table(pa.table({"width": [1], "height": [1]}), tmp_path / "nobox.parquet")
    with pytest.raises(SchemaError, match="lacks column"):
        read_manifest_boxes([tmp_path / "nobox.parquet"])
    write_manifest(tmp_path / "odd.parquet", [[0, 0, 1], [], None, []], pa.list_(pa.float64()))
    with pytest.raises(AnchorError, match="row 0 has 3 box values"):
        read_manifest_boxes([tmp_path / "odd.parquet"])
    with pytest.raises(AnchorError, match="no boxes"):
        kmeans_anchors(np.zeros((0, 2)), 1)


def test_manifest_written_with_the_shard_schema_is_read_and_crowd_regions_are_skipped(tmp_path):
    records = [
        SampleRecord("a", "coco", "a.jpg", 200, 100, b"", boxes=[[0, 0, 100, 50], [0, 0, 200, 100]],
                     labels=["n02084071", "n07942152"], crowd=[False, True], difficult=[False, False]),
        SampleRecord("b", "imagenet", "b.jpg", 300, 300, b"", image_label="n01440764"),
        SampleRecord("c", "coco", "c.jpg", 400, 400, b"", boxes=[[0, 0, 40, 80]], labels=["n02084071"],
                     crowd=[False], difficult=[False]),
    ]
    table = pa.Table.from_pylist([r.manifest_row("s-000000.tar") for r in records], schema=MANIFEST_SCHEMA)
    pq.write_table(table, tmp_path / "manifest.parquet")
    sizes = read_manifest_boxes([tmp_path / "manifest.parquet"])
    np.testing.assert_allclose(sizes.wh, [[0.5, 0.5], [0.1, 0.2]])
    assert (sizes.skipped_crowd, sizes.skipped_zero_size, sizes.rows_without_boxes) == (1, 0, 1)


def test_a_file_that_is_not_parquet_is_reported_by_name(tmp_path):
    (tmp_path / "manifest.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match="manifest.parquet: not a readable Parquet manifest"):
        read_manifest_boxes([tmp_path / "manifest.parquet"])
