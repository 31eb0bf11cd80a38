"""Sources mixed per sample at set weights (e.g. ImageNet : COCO = 4 : 1), with a realised-ratio counter."""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator


class MixError(ValueError):
    """The mixing configuration is unusable; the message names the source."""


def normalised_weights(names: list[str], weights: list[float]) -> list[float]:
    """Weights as probabilities; refuses negative weights or an all-zero set."""
    if len(names) != len(weights):
        raise MixError(f"{len(names)} sources but {len(weights)} weights")
    for name, weight in zip(names, weights):
        if not weight >= 0:
            raise MixError(f"source {name!r} has weight {weight}; weights must be >= 0")
    total = float(sum(weights))
    if total <= 0:
        raise MixError(f"sources {names} have weights summing to {total}; give at least one a positive weight")
    return [w / total for w in weights]


class Mix:
    """Iterates samples drawn per sample from named streams at the given weights.

    A stream that ends (a non-resampled source) is dropped and the others go on at their
    relative weights; the mix ends when every stream has ended. `counts` is the realised
    number of samples per source.
    """

    def __init__(self, streams: dict[str, Iterable], weights: dict[str, float], rng: random.Random):
        self.names = list(streams)
        self.iterators = {name: iter(streams[name]) for name in self.names}
        self.weights = {name: float(weights[name]) for name in self.names}
        normalised_weights(self.names, [self.weights[n] for n in self.names])
        self.rng = rng
        self.counts: Counter = Counter()

    def ratios(self) -> dict[str, float]:
        """Realised share of each source so far."""
        total = sum(self.counts.values()) or 1
        return {name: self.counts[name] / total for name in self.names}

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        live = [n for n in self.names if self.weights[n] > 0]
        while live:
            cumulative = list(itertools.accumulate(self.weights[n] for n in live))
            name = live[bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])]
            sample = next(self.iterators[name], None)
            if sample is None:
                live.remove(name)
                continue
            self.counts[name] += 1
            yield name, sample
