"""Pure schedule functions of the step: the same answer on every rank, on resume, without communication."""

from __future__ import annotations

import hashlib

MULTI_SCALE_SIZES = tuple(range(320, 609, 32))  # 320, 352, ..., 608 (YOLOv2 paper, section 2)


def input_size_at(step: int, seed: int, sizes: tuple[int, ...] = MULTI_SCALE_SIZES, every: int = 10) -> int:
    """Network input size for `step`: a hash of (seed, step // every) picks one of `sizes`.

    A hash, not an RNG stream, so every rank agrees and a resumed run picks the same sizes.
    """
    if every < 1 or not sizes:
        raise ValueError(f"input_size_at needs every >= 1 and at least one size (got every={every}, sizes={sizes})")
    digest = hashlib.blake2b(f"{seed}/{step // every}".encode(), digest_size=8).digest()
    return sizes[int.from_bytes(digest, "little") % len(sizes)]


def lr_at(step: int, lr: float, policy: str = "constant", burn_in: int = 0, power: float = 4.0,
          steps: tuple[int, ...] = (), scales: tuple[float, ...] = (), max_steps: int = 1) -> float:
    """darknet's get_current_rate for update `step` (0-based, updates done so far): burn-in
    lr·(step/burn_in)^power, then `steps` (× scales[i] once step ≥ steps[i]), `poly` lr·(1 − step/max)^power
    or `constant` (darknet-notes "Optimiser, BN and activation facts", LR)."""
    if step < burn_in:
        return lr * (step / burn_in) ** power
    if policy == "steps":
        for boundary, scale in zip(steps, scales):
            if step < boundary:
                break
            lr *= scale
        return lr
    if policy == "poly":
        return lr * max(0.0, 1 - step / max_steps) ** power
    if policy == "constant":
        return lr
    raise ValueError(f"unknown lr policy {policy!r}: use constant, steps or poly")


def train_size_at(step: int, seed: int, base_size: int, multi_scale: bool, sizes: tuple[int, ...] = MULTI_SCALE_SIZES,
                  every: int = 10, final_size: int | None = None, final_steps: int = 200, max_steps: int = 0) -> int:
    """Input size of update `step`: multi-scale (input_size_at) or the base size, and darknet's
    `final_size` (608) for the last `final_steps` updates when set."""
    if final_size is not None and step + final_steps > max_steps:
        return final_size
    return input_size_at(step, seed, tuple(sizes), every) if multi_scale else base_size
