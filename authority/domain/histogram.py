"""A fixed-bucket histogram (Prometheus-style cumulative buckets) with quantile estimates.

Kept in the pure core so the revocation-propagation lag can be recorded now and
exported by the metrics endpoint later without changing the recording side.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

DEFAULT_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: Sequence[float] = DEFAULT_LAG_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be strictly increasing")
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound), ending with (inf, count)."""
        total, rows = 0, []
        for bound, count in zip((*self.buckets, float("inf")), self._counts, strict=True):
            total += count
            rows.append((bound, total))
        return rows

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (an over-estimate)."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, total in self.cumulative():
            if total >= rank:
                return bound
        return float("inf")
