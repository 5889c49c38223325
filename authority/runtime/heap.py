"""The start-up heap, set aside from the garbage collector once serving.

A full collection walks every tracked object: the modules, gRPC, the key ring and the
configuration built at start-up (tens of thousands of objects that live as long as the
process) on top of the verify cache. Freezing them after start (``gc.freeze``) leaves
full collections only what serving created. Measured under the bench's verify-miss load,
collections cost a few microseconds per call either way; the freeze keeps the rare full
collection short, so it does not stall a burst of calls. Unfrozen on stop, so a process
that starts and stops many authorities (the tests) still collects their cycles.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect what start-up left behind, then exempt the survivors from collections."""
    gc.collect()
    gc.freeze()


def release_startup_heap() -> None:
    """Return frozen objects to the collector (stopping: their cycles may now be garbage)."""
    gc.unfreeze()
