"""``make bench``: ratios measured side by side in one run, never absolute timings.

``server`` runs the authority with a bare echo RPC in one process, ``load`` drives it
over gRPC and reads the server's CPU from /proc, ``local`` times client-side token
decoding against raw Ed25519; ``__main__`` orchestrates and prints the report.
"""
