"""`summary.json` of a run, and its one-line form: samples, shards, counts per label, and every item that
was skipped, changed or noticed on the way, counted by reason with a few examples."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

MAX_EXAMPLES = 10
SKIPPED = {"corrupt_image", "unreadable_image"}  # no sample written
NOTICED = {"size_differs_from_annotation", "no_boxes"}  # written as they are; the rest are "changed"


def value_counts(values: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """{value: count} of a string column."""
    counts = pc.value_counts(values).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def summarise(table: pa.Table, parts: list[dict]) -> dict:
    """`summary.json`: samples, shards, counts per label; skipped, changed and noticed items with examples."""
    skipped, changed, noticed = {}, {}, {}
    for part in parts:
        for reason, count, example in part["events"]:
            group = skipped if reason in SKIPPED else noticed if reason in NOTICED else changed
            entry = group.setdefault(reason, {"count": 0, "examples": []})
            entry["count"] += count
            if len(entry["examples"]) < MAX_EXAMPLES:
                entry["examples"].append(example)
    box_labels = value_counts(pc.list_flatten(table["labels"]))
    image_labels = value_counts(table["image_label"].drop_null())
    return {
        "items": sum(part["items"] for part in parts),
        "samples": table.num_rows,
        "shards": len(parts),
        "detection_samples": table.num_rows - sum(image_labels.values()),
        "classification_samples": sum(image_labels.values()),
        "boxes": sum(box_labels.values()),
        "crowd_boxes": int(pc.sum(pc.list_flatten(table["crowd"]).cast(pa.int64())).as_py() or 0),
        "difficult_boxes": int(pc.sum(pc.list_flatten(table["difficult"]).cast(pa.int64())).as_py() or 0),
        "labels": {w: {"boxes": box_labels.get(w, 0), "images": image_labels.get(w, 0)}
                   for w in sorted(set(box_labels) | set(image_labels))},
        "skipped": skipped,
        "changed": changed,
        "noticed": noticed,
    }


def summary_line(summary: dict) -> str:
    """One line for the end of a run."""
    skipped = sum(v["count"] for v in summary["skipped"].values())
    changed = ", ".join(f"{k} {v['count']}" for k, v in sorted(summary["changed"].items())) or "none"
    noticed = ", ".join(f"{k} {v['count']}" for k, v in sorted(summary["noticed"].items())) or "none"
    return (f"{summary['samples']} samples ({summary['detection_samples']} detection, "
            f"{summary['classification_samples']} classification, {summary['boxes']} boxes) in "
            f"{summary['shards']} shards; {skipped} items skipped; changed: {changed}; noticed: {noticed} "
            "(details in summary.json)")
