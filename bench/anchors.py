"""Benchmark: vectorised k-means (N×k IoU matrix per iteration) against a per-box Python loop baseline.

Both run the same Lloyd iterations from the same start on the same boxes; the script prints seconds
per iteration of each and the speed-up ratio, measured in this run.

    python bench/anchors.py [--boxes 20000] [--k 5] [--iterations 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from yolo9000.anchors import _mean_of_assigned, kmeans_plus_plus_init, wh_iou


def loop_assign(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Baseline: nearest centroid by 1 − IoU, one box and one centroid at a time."""
    assignment = np.empty(len(wh), dtype=np.int64)
    for i, (w, h) in enumerate(wh.tolist()):
        best, best_iou = 0, -1.0
        for j, (cw, ch) in enumerate(centroids.tolist()):
            inter = min(w, cw) * min(h, ch)
            iou = inter / (w * h + cw * ch - inter)
            if iou > best_iou:
                best, best_iou = j, iou
        assignment[i] = best
    return assignment


def vector_assign(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return wh_iou(wh, centroids).argmax(axis=1)


def run(assign, wh: np.ndarray, start: np.ndarray, iterations: int) -> tuple[float, np.ndarray]:
    centroids = start
    began = time.perf_counter()
    for _ in range(iterations):
        centroids = _mean_of_assigned(wh, assign(wh, centroids), len(start))
    return (time.perf_counter() - began) / iterations, centroids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    wh = np.exp(rng.normal(np.log(0.2), 0.8, size=(args.boxes, 2))).clip(0.005, 1.0)
    start = kmeans_plus_plus_init(wh, args.k, rng)
    loop_s, loop_centroids = run(loop_assign, wh, start, args.iterations)
    vector_s, vector_centroids = run(vector_assign, wh, start, args.iterations)
    same = np.allclose(loop_centroids, vector_centroids)
    print(f"{args.boxes} boxes, k={args.k}, {args.iterations} Lloyd iterations, same centroids: {same}")
    print(f"loop baseline   {loop_s * 1e3:9.2f} ms/iteration")
    print(f"vectorised      {vector_s * 1e3:9.2f} ms/iteration")
    print(f"speed-up        {loop_s / vector_s:9.1f}x")


if __name__ == "__main__":
    main()
