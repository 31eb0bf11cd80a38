"""A slow, loop-for-loop replica of darknet's region layer deltas (darknet-notes.md, "Region layer (train)").

Written from the notes' pseudocode, independently of yolo9000/targets.py and loss.py: per image, per cell,
per anchor, per truth, in darknet's order, with its overwrites. Returns the gradient of the loss with
respect to the raw head output (−delta, times σ' for x, y and objectness) and darknet's statistics.
"""

from __future__ import annotations

import math

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def box_iou(a, b):
    """darknet's box_iou on (x, y, w, h) tuples."""
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w = overlap(a[0], a[2], b[0], b[2])
    h = overlap(a[1], a[3], b[1], b[3])
    intersection = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - intersection
    return intersection / union


def sibling_groups(parent):
    """Lists of node indices, a new group wherever the parent changes (darknet's read_tree)."""
    groups = []
    for i, p in enumerate(parent):
        if i == 0 or p != parent[i - 1]:
            groups.append([])
        groups[-1].append(i)
    return groups


def class_probabilities(logits, parent):
    """(B, A, C, H, W) conditional probabilities: a softmax per sibling group (one group when flat)."""
    probs = np.empty_like(logits)
    for members in sibling_groups(parent):
        x = logits[:, :, members]
        e = np.exp(x - x.max(2, keepdims=True))
        probs[:, :, members] = e / e.sum(2, keepdims=True)
    return probs


def hierarchy_probability(p, node, parent):
    value = 1.0
    while node >= 0:
        value *= p[node]
        node = parent[node]
    return value


def delta_region_class(p, delta, node, parent, groups, group_of, scale):
    """Hierarchical delta_region_class; with one flat group it is the plain softmax delta."""
    value = 1.0
    while node >= 0:
        value *= p[node]
        for m in groups[group_of[node]]:
            delta[m] = scale * (0 - p[m])
        delta[node] = scale * (1 - p[node])
        node = parent[node]
    return value


def region_reference(output, boxes, labels, is_classification, image_label, anchors, num_classes, parent,
                     seen, version="paper", object_scale=5.0, noobject_scale=1.0, class_scale=1.0,
                     coord_scale=1.0, thresh=0.6, rescore=True, bias_match=True,
                     classification_noobject="darknet", classification_anchor="darknet"):
    """(gradient w.r.t. the raw output (B, A·(5+C), H, W), stats dict) for float64 numpy inputs.

    The two classification_* options are our departures from darknet (noobject push "off"; anchor chosen
    by σ(obj) alone with "objectness"); their defaults are darknet's code as the notes describe it.
    """
    B, _, H, W = output.shape
    A, C = len(anchors), num_classes
    parent = list(parent) if parent is not None else [-1] * C
    groups = sibling_groups(parent)
    group_of = {m: g for g, members in enumerate(groups) for m in members}
    raw = output.reshape(B, A, 5 + C, H, W)
    act = raw.copy()
    act[:, :, 0:2] = sigmoid(raw[:, :, 0:2])
    act[:, :, 4] = sigmoid(raw[:, :, 4])
    probs = class_probabilities(raw[:, :, 5:], parent)
    delta = np.zeros_like(raw)
    avg_iou = recall = avg_cat = avg_obj = avg_anyobj = 0.0
    count = class_count = 0

    def pred_box(b, a, j, i):
        return ((i + act[b, a, 0, j, i]) / W, (j + act[b, a, 1, j, i]) / H,
                math.exp(raw[b, a, 2, j, i]) * anchors[a][0] / W, math.exp(raw[b, a, 3, j, i]) * anchors[a][1] / H)

    for b in range(B):
        truths = []
        for m in range(len(labels[b])):
            if labels[b][m] >= 0:
                x0, y0, x1, y1 = boxes[b][m]
                truths.append(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, int(labels[b][m])))
        if is_classification[b]:
            node = int(image_label[b])
            best_p, best = 0.0, (0, 0, 0)
            for a in range(A):
                for j in range(H):
                    for i in range(W):
                        if classification_noobject == "darknet":
                            delta[b, a, 4, j, i] = noobject_scale * (0 - act[b, a, 4, j, i])
                        p = act[b, a, 4, j, i]
                        if classification_anchor == "darknet":
                            p *= hierarchy_probability(probs[b, a, :, j, i], node, parent)
                        if p > best_p:
                            best_p, best = p, (a, j, i)
            a, j, i = best
            class_delta = delta[b, a, 5:, j, i]
            avg_cat += delta_region_class(probs[b, a, :, j, i], class_delta, node, parent, groups, group_of,
                                          class_scale)
            delta[b, a, 5:, j, i] = class_delta
            sigma = act[b, a, 4, j, i]
            delta[b, a, 4, j, i] = object_scale * (0.3 - sigma) if sigma < 0.3 else 0.0
            if version == "final":
                delta[b, a, 4, j, i] = 0.0
            class_count += 1
            continue
        for j in range(H):
            for i in range(W):
                for a in range(A):
                    pred = pred_box(b, a, j, i)
                    best_iou = max([box_iou(pred, t[:4]) for t in truths], default=0.0)
                    avg_anyobj += act[b, a, 4, j, i]
                    delta[b, a, 4, j, i] = noobject_scale * (0 - act[b, a, 4, j, i])
                    if best_iou > thresh:
                        delta[b, a, 4, j, i] = 0
                    if seen < 12800:
                        delta[b, a, 0, j, i] = 0.01 * (0.5 - act[b, a, 0, j, i])
                        delta[b, a, 1, j, i] = 0.01 * (0.5 - act[b, a, 1, j, i])
                        delta[b, a, 2, j, i] = 0.01 * (0 - raw[b, a, 2, j, i])
                        delta[b, a, 3, j, i] = 0.01 * (0 - raw[b, a, 3, j, i])
        for x, y, w, h, label in truths:
            i, j = min(int(x * W), W - 1), min(int(y * H), H - 1)
            best_iou, best_n = 0.0, 0
            for n in range(A):
                shape = (anchors[n][0] / W, anchors[n][1] / H) if bias_match else pred_box(b, n, j, i)[2:]
                iou = box_iou((0, 0, shape[0], shape[1]), (0, 0, w, h))
                if iou > best_iou:
                    best_iou, best_n = iou, n
            n = best_n
            scale = coord_scale * (2 - w * h) if version == "final" else coord_scale
            delta[b, n, 0, j, i] = scale * ((x * W - i) - act[b, n, 0, j, i])
            delta[b, n, 1, j, i] = scale * ((y * H - j) - act[b, n, 1, j, i])
            delta[b, n, 2, j, i] = scale * (math.log(w * W / anchors[n][0]) - raw[b, n, 2, j, i])
            delta[b, n, 3, j, i] = scale * (math.log(h * H / anchors[n][1]) - raw[b, n, 3, j, i])
            iou = box_iou(pred_box(b, n, j, i), (x, y, w, h))
            recall += iou > 0.5
            avg_iou += iou
            avg_obj += act[b, n, 4, j, i]
            target = iou if rescore else 1.0
            delta[b, n, 4, j, i] = object_scale * (target - act[b, n, 4, j, i])
            class_delta = delta[b, n, 5:, j, i]
            avg_cat += delta_region_class(probs[b, n, :, j, i], class_delta, label, parent, groups, group_of,
                                          class_scale)
            delta[b, n, 5:, j, i] = class_delta
            count += 1
            class_count += 1

    gradient = -delta
    gradient[:, :, [0, 1, 4]] *= act[:, :, [0, 1, 4]] * (1 - act[:, :, [0, 1, 4]])
    nan = float("nan")
    stats = {
        "avg_iou": avg_iou / count if count else nan,
        "class": avg_cat / class_count if class_count else nan,
        "obj": avg_obj / count if count else nan,
        "no_obj": avg_anyobj / (W * H * A * B),
        "avg_recall": recall / count if count else nan,
        "count": float(count),
    }
    return gradient.reshape(output.shape), stats
