"""Small pure helpers of the bench, unit-tested in tests/unit/test_bench_helpers.py."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ascending ``ordered``: the smallest
    value with at least ``q`` of the samples at or below it (p99.9 of 1,000 is the max)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    rank = math.ceil(q * len(ordered) - 1e-9)
    return ordered[max(0, rank - 1)]


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def weighted_plan(weights: Sequence[tuple[str, int]], length: int) -> list[str]:
    """``length`` names spread evenly in proportion to integer ``weights`` (deterministic:
    each step picks the name furthest behind its share, smooth weighted round robin)."""
    total = sum(w for _, w in weights)
    if total <= 0 or any(w < 0 for _, w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    current = [0] * len(weights)
    plan: list[str] = []
    for _ in range(length):
        for i, (_, w) in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        plan.append(weights[best][0])
    return plan
