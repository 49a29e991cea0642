"""Mergeable latency histograms with logarithmic buckets of 1% relative accuracy.

A value x > 0 falls in bucket i = ceil(log(x) / log(GAMMA)) and is represented by the bucket's
midpoint 2 GAMMA**i / (GAMMA + 1), which is within `RELATIVE_ACCURACY` of every value of the
bucket (the DDSketch construction). Histograms are stored as sparse (bucket, count) pairs and
merge by adding counts, so hourly rollups combine into any longer range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np
import numpy.typing as npt

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
SMALLEST_MS = 1e-3
"""Values below a microsecond (including 0) share the lowest bucket."""

_ENTRY = np.dtype([("bucket", "<i2"), ("count", "<u4")])
_BUCKET_OFFSET = 1 << 15
"""Buckets are 16-bit signed (as stored): offset, they pack beside a group number."""


def bucket_of(value_ms: float) -> int:
    return math.ceil(math.log(max(value_ms, SMALLEST_MS)) / _LOG_GAMMA)


def buckets_of(values_ms: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """`bucket_of` of each value, by construction: the logarithms are `math.log`'s, as there
    (numpy's vectorised log may differ from it in the last place), so that the writer's
    rollups put every call in the bucket it always did."""
    floored = np.maximum(values_ms, SMALLEST_MS).tolist()
    logs = np.fromiter(map(math.log, floored), np.float64, len(floored))
    return np.ceil(logs / _LOG_GAMMA).astype(np.int64)


def bucket_counts(
    groups: npt.NDArray[np.intp], buckets: npt.NDArray[np.int64], size: int
) -> list[dict[int, int]]:
    """For each of `size` groups, the counts of its values' buckets (group i's values are those
    where `groups` is i)."""
    pairs = groups.astype(np.int64) << 16 | (buckets + _BUCKET_OFFSET)
    distinct, counts = np.unique(pairs, return_counts=True)
    owners = distinct >> 16
    found = ((distinct & 0xFFFF) - _BUCKET_OFFSET).tolist()
    counted = counts.tolist()
    edges = np.searchsorted(owners, np.arange(size + 1)).tolist()
    return [
        dict(zip(found[start:end], counted[start:end], strict=True))
        for start, end in pairwise(edges)
    ]


def encode(counts: dict[int, int]) -> bytes:
    """Sparse bytes of a bucket -> count mapping."""
    entries = np.empty(len(counts), dtype=_ENTRY)
    entries["bucket"] = list(counts)
    entries["count"] = list(counts.values())
    return entries.tobytes()


def merge_into(counts: dict[int, int], encoded: bytes | None) -> None:
    """Add an encoded histogram's counts to `counts`."""
    if not encoded:
        return
    entries = np.frombuffer(encoded, dtype=_ENTRY)
    add_counts(counts, zip(entries["bucket"].tolist(), entries["count"].tolist(), strict=True))


def add_counts(counts: dict[int, int], more: Iterable[tuple[int, int]]) -> None:
    """Add (bucket, count) pairs to `counts`."""
    for bucket, count in more:
        counts[bucket] = counts.get(bucket, 0) + count


class Histogram:
    """Bucket counts gathered from encoded histograms and raw values, and percentiles from them."""

    def __init__(self) -> None:
        self._encoded: list[bytes] = []
        self._raw: list[float] = []

    def add_encoded(self, encoded: bytes | None) -> None:
        if encoded:
            self._encoded.append(encoded)

    def add_values(self, values_ms: Iterable[float]) -> None:
        self._raw.extend(values_ms)

    def merge(self, other: Histogram) -> None:
        self._encoded += other._encoded
        self._raw += other._raw

    def percentiles(self, quantiles: Sequence[float]) -> list[float]:
        """Each quantile interpolated between order statistics as numpy.percentile's default
        does, every order statistic read as its bucket's midpoint; [] when empty."""
        entries = np.frombuffer(b"".join(self._encoded), dtype=_ENTRY)
        raw = buckets_of(np.asarray(self._raw, dtype=np.float64))
        buckets = np.concatenate([entries["bucket"].astype(np.int64), raw])
        counts = np.concatenate([entries["count"].astype(np.int64), np.ones(raw.size, np.int64)])
        if not buckets.size:
            return []
        lowest = int(buckets.min())  # buckets span a few thousand values: count them densely
        dense = np.bincount(buckets - lowest, weights=counts)
        present = np.flatnonzero(dense)
        cumulative = np.cumsum(dense[present])
        total = int(cumulative[-1])
        midpoints = 2 * GAMMA ** (present + lowest).astype(np.float64) / (GAMMA + 1)
        results = []
        for quantile in quantiles:
            rank = (total - 1) * quantile
            below, above = math.floor(rank), math.ceil(rank)
            low = midpoints[np.searchsorted(cumulative, below, side="right")]
            high = midpoints[np.searchsorted(cumulative, above, side="right")]
            results.append(float(low + (rank - below) * (high - low)))
        return results
