"""Logs and metrics: one JSON line and one set of Prometheus samples per RPC, secrets never.

``logging`` configures structlog (with the redaction processor) and holds the gRPC
interceptor; ``metrics`` holds the Prometheus metrics and the ``/metrics`` registry.
"""
