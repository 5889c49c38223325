"""CPU time of a process, so per-call cost can be measured where wall-clock throughput lies.

On a shared two-core machine the load generator is often the bottleneck; then calls/s
compresses every ratio toward 1, while the server's CPU seconds per call still show
what each RPC costs.
"""

from __future__ import annotations

import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of every thread of ``pid`` from /proc (None where unavailable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    # Fields 14 (utime) and 15 (stime) of proc(5), counted from field 3 here.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    """User + system CPU of this process, all threads (gRPC's C core included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
