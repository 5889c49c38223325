"""The per-call RPC recorder: a call's count, latency and Verify reason.

Recording a call is a few integer and list operations (``_RpcTally``); the counts reach
prometheus-client's values (``metrics``) when folded, before every scrape and within
``FOLD_DELAY`` of a call. With several workers each call goes straight into the shared
multiprocess files instead (``_direct_observer``).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

import grpc

from authority.observability.metrics import (
    RPC_LATENCY,
    RPC_REQUESTS,
    VERIFY_METHOD,
    VERIFY_RESULTS,
    RpcObserver,
    multiprocess_dir,
    reason_name,
)

FOLD_DELAY = 0.1  # seconds a call's counts may wait before they reach Prometheus's values
_OK = grpc.StatusCode.OK
_DIRTY: list[_RpcTally] = []  # tallies holding counts not yet folded


class _RpcTally:
    """One method's calls not yet in its Prometheus children. Recording a call here is a
    few integer and list operations; the children's own ``inc``/``observe`` take a lock
    each and walk the buckets in Python, which was a visible part of every call's cost.
    ``fold_rpc_counts`` moves the counts into the children: before every scrape (so a
    scrape sees every call answered before it) and within ``FOLD_DELAY`` of a call (so
    other readers, and with several workers the shared files, lag by at most that)."""

    __slots__ = (
        "buckets",
        "by_code",
        "codes",
        "dirty",
        "latency",
        "name",
        "ok",
        "reasons",
        "total",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.latency = RPC_LATENCY.labels(name)
        self.codes: dict[grpc.StatusCode, Any] = {}  # code -> its counter child
        self.ok = 0
        self.by_code: dict[grpc.StatusCode, int] = {}  # other codes' counts
        self.buckets = [0] * (len(_LATENCY_BOUNDS) + 1)
        self.total = 0.0
        self.reasons: dict[int, int] = {}
        self.dirty = False

    def fold(self) -> None:
        name = self.name
        self.dirty = False
        ok, self.ok = self.ok, 0
        if ok:
            self._counter(name, _OK).inc(ok)
        if self.by_code:
            counts, self.by_code = self.by_code, {}
            for code, count in counts.items():
                self._counter(name, code).inc(count)
        buckets = self.buckets
        if any(buckets):
            self.buckets = [0] * len(buckets)
            total, self.total = self.total, 0.0
            # The child's own per-bucket values (what observe() increments, one at a time).
            values = self.latency._buckets
            for index, count in enumerate(buckets):
                if count:
                    values[index].inc(count)
            self.latency._sum.inc(total)
        if self.reasons:
            reasons, self.reasons = self.reasons, {}
            for result, count in reasons.items():
                VERIFY_RESULTS.labels(reason_name(result)).inc(count)

    def _counter(self, name: str, code: grpc.StatusCode) -> Any:
        counter = self.codes.get(code)
        if counter is None:
            counter = self.codes[code] = RPC_REQUESTS.labels(name, code.name)
        return counter


_LATENCY_BOUNDS = tuple(RPC_LATENCY._upper_bounds[:-1])  # without +Inf


def fold_rpc_counts() -> None:
    """Every method's recorded calls into its Prometheus values (see ``_RpcTally``)."""
    dirty = _DIRTY[:]
    _DIRTY.clear()
    for tally in dirty:
        tally.fold()


def _fold_soon() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: nothing would fold them later
        fold_rpc_counts()
        return
    loop.call_later(FOLD_DELAY, fold_rpc_counts)


def rpc_observer(method: str) -> RpcObserver:
    """The per-call recorder for one method (see ``_RpcTally``). With several workers
    each call goes straight into the shared files: a scrape, whichever worker answers
    it, must count every call the others answered before it."""
    name = method.lstrip("/")
    if multiprocess_dir() is not None:
        return _direct_observer(name, verify=method == VERIFY_METHOD)
    tally = _RpcTally(name)
    verify = method == VERIFY_METHOD
    bounds = _LATENCY_BOUNDS
    dirty = _DIRTY

    def observe(code: grpc.StatusCode, elapsed: float, response: Any) -> None:
        if code is _OK:
            tally.ok += 1
        else:
            tally.by_code[code] = tally.by_code.get(code, 0) + 1
        tally.buckets[bisect_left(bounds, elapsed)] += 1
        tally.total += elapsed
        if verify and response is not None:
            result: int = response.result
            tally.reasons[result] = tally.reasons.get(result, 0) + 1
        if not tally.dirty:
            tally.dirty = True
            if not dirty:
                _fold_soon()
            dirty.append(tally)

    return observe


def _direct_observer(name: str, *, verify: bool) -> RpcObserver:
    latency = RPC_LATENCY.labels(name)
    by_code: dict[grpc.StatusCode, Any] = {}
    by_reason: dict[int, Any] = {}

    def observe(code: grpc.StatusCode, elapsed: float, response: Any) -> None:
        counter = by_code.get(code)
        if counter is None:
            counter = by_code[code] = RPC_REQUESTS.labels(name, code.name)
        counter.inc()
        latency.observe(elapsed)
        if verify and response is not None:
            result: int = response.result
            reason = by_reason.get(result)
            if reason is None:
                reason = by_reason[result] = VERIFY_RESULTS.labels(reason_name(result))
            reason.inc()

    return observe
