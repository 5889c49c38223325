"""``make bench``: ratios measured side by side in one run, never absolute timings.

``bare`` is the floor (a grpc.aio server with no interceptors), ``floor`` drives it and
a real ``authority serve`` with h2load (``h2``), ``server`` runs the authority with an
echo RPC in one process, ``load`` drives it over gRPC and reads the server's CPU from
/proc, ``local`` times client-side token decoding against raw Ed25519, ``lifecycle``
Issue and Refresh, ``pgrefresh`` Refresh on PostgreSQL against bare asyncpg,
``sustained`` latency under mixed load and memory per cached token; ``targets`` is the
closing table and ``__main__`` orchestrates and prints the report.
"""
