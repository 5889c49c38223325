"""The closing summary of ``make bench`` and the table of issue 13's targets."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from tools.bench import client, floor, local, pgrefresh, propagation, scaling, sustained
from tools.bench.inprocess import ServerSummary, fmt_ratio, fmt_us
from tools.bench.lifecycle import LifecycleResult
from tools.bench.targets import Target, print_targets


@dataclass
class LaterParts:
    """Parts 4 to 8; None where a part was skipped (it printed why)."""

    client_local: client.LocalResult
    propagated: propagation.PropagationResult | None = None
    scaled: scaling.ScalingResult | None = None
    refreshed: pgrefresh.RefreshResult | None = None
    sustained: sustained.SustainedResult | None = None


def print_summary(
    summary: ServerSummary,
    decoded: list[local.VariantResult],
    lifecycle: list[LifecycleResult],
    later: LaterParts,
    *,
    all_failures: int,
    args: argparse.Namespace,
    started: float,
) -> None:
    """The one-line summary of the run (older parts' headline numbers)."""
    propagated, scaled = later.propagated, later.scaled
    ratios = {r.name: r.ratio_to_raw for r in decoded}
    names = [r.name for r in decoded]
    print()
    print(
        "Summary: Verify vs echo, calls/s (server CPU/call echo/verify):"
        f" miss {fmt_ratio(summary.throughput['verify-miss'])}"
        f" ({fmt_ratio(summary.cpu['verify-miss'])}), target 0.75x;"
        f" hit {fmt_ratio(summary.throughput['verify-hit'])}"
        f" ({fmt_ratio(summary.cpu['verify-hit'])}), target 0.90x;"
        f"{' client-bound;' if summary.starved else ''}"
        f" decode vs raw Ed25519: ours {fmt_ratio(ratios[names[3]])},"
        f" PyJWT {fmt_ratio(ratios[names[1]])}, PyJWT by kid {fmt_ratio(ratios[names[2]])};"
        f" issue(password) {lifecycle[2].rate:,.0f}/s, issue(client credentials)"
        f" {lifecycle[3].rate:,.0f}/s, refresh {lifecycle[4].rate:,.0f}/s;"
        + (
            f" revocation lag p50 {propagated.quantile(0.5) * 1000:.1f} ms"
            f" p99 {propagated.quantile(0.99) * 1000:.1f} ms over {propagated.revocations};"
            if propagated
            else " propagation skipped;"
        )
        + (
            f" 2 workers {scaled.median(2) / scaled.median(1):.2f}x of 1;"
            if scaled
            else " scaling skipped;"
        )
        + f" failures {all_failures};"
        f" {os.cpu_count()} CPUs, {args.rounds}x{args.duration:g}s,"
        f" {time.monotonic() - started:.0f}s total."
    )


def report_issue(
    floored: floor.FloorResult | None,
    summary: ServerSummary,
    raw: local.VariantResult,
    lifecycle: list[LifecycleResult],
    later: LaterParts,
) -> int:
    """Print the closing table; returns the errors of the parts that gate on them."""
    print()
    print("Issue 13: every ratio next to its target (measured in this run)")
    raw_us = 1e6 / raw.ops_per_second
    print_targets(issue_targets(floored, summary, raw_us, {r.name: r for r in lifecycle}, later))
    return (
        (floored.errors if floored else 0)
        + (later.refreshed.failures if later.refreshed else 0)
        + (later.sustained.errors if later.sustained else 0)
    )


def issue_targets(
    floored: floor.FloorResult | None,
    summary: ServerSummary,
    raw_us: float,
    lifecycle: dict[str, LifecycleResult],
    later: LaterParts,
) -> list[Target]:
    """The rows of the closing table, in the order of issue 13."""
    bare = lifecycle["bare echo (floor process)"].cpu_per_call

    def times_bare(name: str) -> float | None:
        per_call = lifecycle[name].cpu_per_call
        return per_call / bare if per_call is not None and bare else None

    extra = summary.miss_extra_us
    # Part 1's reference (CPU time on the server's core, per round) where it ran.
    miss_raw_us = summary.raw_us or raw_us
    miss_in_raw = summary.miss_in_raw
    if miss_in_raw is None and extra is not None:
        miss_in_raw = extra / miss_raw_us
    local_raw = later.client_local.raw
    fill = later.sustained.memory if later.sustained else []
    rows = [
        Target(
            "Health/Check vs bare Health/Check, calls/s (h2load)",
            floored.ratio("authority health") if floored else None,
            0.95,
        ),
        Target(
            "Verify, repeated token, vs bare Health/Check (h2load)",
            floored.ratio("verify repeat") if floored else None,
            0.90,
        ),
        Target(
            "ext_authz Check, valid token, vs bare Health/Check (h2load)",
            floored.ratio("ext_authz") if floored else None,
            0.85,
        ),
        Target(
            "cache-miss Verify CPU above bare echo, in raw verifies",
            miss_in_raw,
            1.25,
            at_least=False,
            note=f"({fmt_us(extra)} us above bare {fmt_us(summary.bare_us)} us; raw Ed25519"
            f" verify, cryptography's (OpenSSL), the issue's reference: {miss_raw_us:.0f} us"
            " CPU on the server's core)",
        ),
        Target(
            "client-credentials Issue CPU, x bare echo",
            times_bare("issue: client credentials"),
            2.0,
            at_least=False,
        ),
        Target("Refresh on SQLite CPU, x bare echo", times_bare("refresh"), 2.5, at_least=False),
        Target(
            "Refresh on PostgreSQL vs its statements on bare asyncpg, calls/s",
            later.refreshed.ratio if later.refreshed else None,
            0.5,
        ),
        Target(
            "LocalVerifier never-seen token vs raw verify",
            later.client_local.miss / local_raw,
            0.85,
        ),
        Target(
            "LocalVerifier repeated token vs raw verify", later.client_local.hit / local_raw, 10
        ),
        Target(
            "sustained load errors",
            float(later.sustained.errors) if later.sustained else None,
            0,
            at_least=False,
            unit="",
        ),
    ]
    rows += [
        Target(
            f"bytes per cached token, worker {m.pid} ({m.tokens:,} tokens)",
            m.per_token,
            sustained.TARGET_BYTES_PER_TOKEN,
            at_least=False,
            unit="B",
        )
        for m in fill
    ]
    return rows
