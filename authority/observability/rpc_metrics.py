"""The per-call RPC recorder: a call's count, latency and Verify reason.

Recording a call is two or three list appends (``RpcRecorder``); the calls are counted
into prometheus-client's values (``metrics``) when folded, before every scrape and within
``FOLD_DELAY`` of a call. With several workers each call is folded at once, straight into
the shared multiprocess files.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import Counter
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
_DIRTY: list[RpcRecorder] = []  # recorders holding calls not yet folded


class RpcRecorder:
    """One method's calls not yet in its Prometheus children, as plain lists: the call
    wrapper appends each call's latency and code (and Verify's result) and calls
    ``pending`` after the first one (``len(codes) == 1``). Counting them, and finding
    their buckets, is done per batch when folded (``fold``): a count of the OK codes, one
    sort of the latencies and a bisection per bucket bound, instead of a Python call, a
    bisection and a few dictionary operations per call (and, in the Prometheus children
    themselves, a lock and a walk of the buckets in Python per call). Folded before every
    scrape (so a scrape sees every call answered before it) and within ``FOLD_DELAY`` of
    a call (so other readers lag by at most that); with several workers at once (a
    scrape, whichever worker answers it, must count every call the others answered)."""

    __slots__ = (
        "by_code",
        "codes",
        "direct",
        "latencies",
        "latency",
        "name",
        "reasons",
        "results",
    )

    def __init__(self, name: str, *, verify: bool, direct: bool) -> None:
        self.name = name
        self.direct = direct
        self.latency = RPC_LATENCY.labels(name)
        self.by_code: dict[grpc.StatusCode, Any] = {}  # code -> its counter child
        self.latencies: list[float] = []
        self.codes: list[grpc.StatusCode] = []
        # Verify's results (VerifyResponse.result), None for every other method
        self.results: list[int] | None = [] if verify else None
        self.reasons: dict[int, Any] = {}  # result -> its counter child (several workers)

    def observe(self, code: grpc.StatusCode, elapsed: float, response: Any) -> None:
        """Record one call (what the unary call wrapper does inline)."""
        self.latencies.append(elapsed)
        self.codes.append(code)
        if self.results is not None and response is not None:
            self.results.append(response.result)
        if len(self.codes) == 1:
            self.pending()

    def pending(self) -> None:
        """The first call since the last fold was recorded: fold within ``FOLD_DELAY``
        (at once with several workers)."""
        if self.direct:
            self._observe_directly()
            return
        _DIRTY.append(self)
        if len(_DIRTY) == 1:
            _fold_soon()

    def _observe_directly(self) -> None:
        """The one call just recorded, straight into the children (several workers)."""
        code = self.codes.pop()
        self._counter(self.name, code).inc()
        self.latency.observe(self.latencies.pop())
        if self.results:
            result = self.results.pop()
            reason = self.reasons.get(result)
            if reason is None:
                reason = self.reasons[result] = VERIFY_RESULTS.labels(reason_name(result))
            reason.inc()

    def fold(self) -> None:
        codes = self.codes[:]
        if not codes:
            return
        latencies = self.latencies[:]
        # in place: the call wrapper holds their append methods
        del self.codes[:], self.latencies[:]
        name = self.name
        calls = len(codes)
        ok = codes.count(_OK)
        if ok:
            self._counter(name, _OK).inc(ok)
        if ok != calls:
            for code, count in Counter([c for c in codes if c is not _OK]).items():
                self._counter(name, code).inc(count)
        total = sum(latencies, 0.0)  # in the calls' order, as the child's own sum would
        latencies.sort()
        # The child's own per-bucket values (what observe() increments, one at a time):
        # a call counts in the first bucket whose bound it does not exceed.
        values = self.latency._buckets
        below = 0
        for index, bound in enumerate(_LATENCY_BOUNDS):
            upto = bisect_right(latencies, bound, below)
            if upto > below:
                values[index].inc(upto - below)
                below = upto
                if below == calls:
                    break
        if below < calls:
            values[-1].inc(calls - below)
        self.latency._sum.inc(total)
        results = self.results
        if results:
            counts = Counter(results)
            del results[:]
            for result, count in counts.items():
                VERIFY_RESULTS.labels(reason_name(result)).inc(count)

    def _counter(self, name: str, code: grpc.StatusCode) -> Any:
        counter = self.by_code.get(code)
        if counter is None:
            counter = self.by_code[code] = RPC_REQUESTS.labels(name, code.name)
        return counter


_LATENCY_BOUNDS = tuple(RPC_LATENCY._upper_bounds[:-1])  # without +Inf


def fold_rpc_counts() -> None:
    """Every method's recorded calls into its Prometheus values (see ``RpcRecorder``)."""
    dirty = _DIRTY[:]
    _DIRTY.clear()
    for recorder in dirty:
        recorder.fold()


def _fold_soon() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop in this thread: nothing would fold them later
        fold_rpc_counts()
        return
    loop.call_later(FOLD_DELAY, fold_rpc_counts)


def rpc_recorder(method: str) -> RpcRecorder:
    """The per-call recorder for one method (see ``RpcRecorder``)."""
    return RpcRecorder(
        method.lstrip("/"),
        verify=method == VERIFY_METHOD,
        direct=multiprocess_dir() is not None,
    )


def rpc_observer(method: str) -> RpcObserver:
    """One method's recorder as a function of (code, latency, response)."""
    return rpc_recorder(method).observe
