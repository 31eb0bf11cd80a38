"""argparse types shared by the `yolo9000` commands and the prepare scripts.

Numbers are read in ASCII digits only (`int()` would also read `٣` or `³`) and checked against their
range, so a bad value is a usage error naming the option (exit status 2), never a crash later on.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from yolo9000.data.schema import NAME_PATTERN

INTEGER = re.compile(r"[+-]?[0-9]+")
SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*")
SIZE_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ASCII digits within [minimum, maximum] (either bound optional)."""

    def parse(text: str) -> int:
        if not INTEGER.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected a whole number in digits 0-9, got {text!r}")
        value = int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if None not in (minimum, maximum) else (
                f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def size_in_bytes(text: str) -> int:
    """An argparse type: bytes from `123456`, `100MB`, `1.5GB`, `512KiB` (decimal units; KiB/MiB/GiB binary)."""
    match = SIZE.fullmatch(str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"cannot read size {text!r}: use bytes or e.g. 100MB, 1.5GB, 512KiB")
    size = int(float(match.group(1)) * SIZE_UNITS[unit])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return size


def plain_name(text: str) -> str:
    """An argparse type: a name for files and sample keys (letters, digits, '_' and '-'; no dots or slashes)."""
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain name: use letters, digits, '_' and '-' (no dots, slashes or spaces)")
    return text
