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
