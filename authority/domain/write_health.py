"""Whether this process can still write: consecutive failures per source, against a threshold.

A full disk or a read-only volume leaves reads working while every write fails, so a
readiness probe that only reads stays green while every login answers UNAVAILABLE.
Each writer reports its outcomes here (the store's write methods, the key-rotation
tick, the outbox relay); once any source has failed ``threshold`` times in a row the
process is not ready, and that source's next success makes it ready again. Counting
per source keeps one healthy writer (an idle relay committing nothing) from masking
another that keeps failing. Pure: no clock, no I/O.
"""

from __future__ import annotations

STORE = "store"
KEY_ROTATION = "key_rotation"
OUTBOX_RELAY = "outbox_relay"


class WriteHealth:
    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("the write failure threshold must be at least 1")
        self._threshold = threshold
        self._consecutive: dict[str, int] = {}
        self.failures_total: dict[str, int] = {}

    @property
    def threshold(self) -> int:
        return self._threshold

    def record(self, source: str, ok: bool) -> None:
        """One write outcome of ``source``."""
        if ok:
            self._consecutive[source] = 0
            return
        self._consecutive[source] = self._consecutive.get(source, 0) + 1
        self.failures_total[source] = self.failures_total.get(source, 0) + 1

    def consecutive(self, source: str) -> int:
        return self._consecutive.get(source, 0)

    def failing(self) -> dict[str, int]:
        """The sources at or past the threshold, with their consecutive failures."""
        return {s: n for s, n in sorted(self._consecutive.items()) if n >= self._threshold}

    @property
    def healthy(self) -> bool:
        return not self.failing()

    def sources(self) -> dict[str, int]:
        """Every source seen so far, with its consecutive failures (for metrics)."""
        return dict(sorted(self._consecutive.items()))
