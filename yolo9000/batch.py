"""The batch targets: one small typed structure that the collate step builds and the loss reads.

It moves whole (`.to(device)`), so no field is left behind on the CPU while the output is on a GPU.
Boxes are normalised to the image (x0 y0 x1 y1 in [0, 1]), so a resize of the batch needs nothing here.

One exception, inside the data pipeline only: a batch that carries `warp` (`augment_on: device`, see
data/collate.py) holds its boxes in source pixels, every box of each sample, until `warp.device_batch`
maps them; what reaches the loss is always the normalised, `max_boxes`-row form.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class BatchTargets:
    """What each image of a batch should be predicted as; padding rows have label -1."""

    boxes: Tensor  # (B, M, 4) float, x0 y0 x1 y1 normalised
    labels: Tensor  # (B, M) long class or tree node, -1 for padding
    is_classification: Tensor  # (B,) bool: classification-only images (their box rows are ignored)
    image_label: Tensor  # (B,) long tree node of a classification image, -1 for detection images
    keys: list[str] = field(default_factory=list)  # sample keys, to name the images in errors and reports

    def __post_init__(self) -> None:
        batch = self.boxes.shape[0]
        if (self.boxes.dim() != 3 or self.boxes.shape[-1] != 4 or self.labels.shape != self.boxes.shape[:2]
                or self.is_classification.shape != (batch,) or self.image_label.shape != (batch,)):
            raise ValueError(
                f"BatchTargets shapes do not fit: boxes {tuple(self.boxes.shape)} (B, M, 4), labels "
                f"{tuple(self.labels.shape)} (B, M), is_classification {tuple(self.is_classification.shape)} and "
                f"image_label {tuple(self.image_label.shape)} (B,)"
            )

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @classmethod
    def detection(cls, boxes: Tensor, labels: Tensor, keys: list[str] | None = None) -> "BatchTargets":
        """Targets of detection images only."""
        batch = boxes.shape[0]
        return cls(boxes, labels, torch.zeros(batch, dtype=torch.bool, device=boxes.device),
                   torch.full((batch,), -1, dtype=torch.long, device=boxes.device), keys or [])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "BatchTargets":
        """Every tensor on `device`."""
        return replace(
            self,
            boxes=self.boxes.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            is_classification=self.is_classification.to(device, non_blocking=non_blocking),
            image_label=self.image_label.to(device, non_blocking=non_blocking),
        )

    def select(self, index: slice | Tensor) -> "BatchTargets":
        """The targets of some images (a slice or an index tensor) of the batch."""
        keys = self.keys[index] if isinstance(index, slice) else [self.keys[i] for i in index.tolist()] if self.keys else []
        return BatchTargets(self.boxes[index], self.labels[index], self.is_classification[index],
                            self.image_label[index], keys)
