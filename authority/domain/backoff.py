"""How long to wait before trying again: one rule for every retry in the process.

Doubling from ``first`` up to ``cap``, drawn from the upper half of that ceiling (never
less than half of it, so a retry never comes right back; random within it, so peers
that failed together do not all retry in the same instant). Pure: the caller sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.1
    cap: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("a backoff needs 0 < first <= cap")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1, 2, ...)."""
        ceiling = min(self.cap, self.first * 2 ** (max(1, failures) - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


# Reconnecting to Redis (fan-out, event stream) and restarting a crashed loop.
RECONNECT = Backoff(first=0.1, cap=5.0)
