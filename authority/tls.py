"""TLS for the gRPC and HTTP listeners, and mTLS for the admin listener.

Certificates and keys come from PEM files (Kubernetes-secret style mounts). The
admin listener, when configured, requires a client certificate issued by the
configured client CA: a caller without one never completes the handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from authority.config import Settings
from authority.domain.errors import InvalidArgument


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} {path}: {exc.strerror}") from exc


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the public gRPC listener, or None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (
        _read(settings.tls_key_file, "AUTHORITY_TLS_KEY_FILE"),
        _read(settings.tls_cert_file, "AUTHORITY_TLS_CERT_FILE"),
    )
    return grpc.ssl_server_credentials([pair])


def admin_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """mTLS for the admin listener: client certificates from the client CA are required."""
    if settings.tls_client_ca_file is None:
        return server_credentials(settings)
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise InvalidArgument(
            "AUTHORITY_TLS_CLIENT_CA_FILE needs AUTHORITY_TLS_CERT_FILE and _KEY_FILE"
        )
    pair = (
        _read(settings.tls_key_file, "AUTHORITY_TLS_KEY_FILE"),
        _read(settings.tls_cert_file, "AUTHORITY_TLS_CERT_FILE"),
    )
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=_read(settings.tls_client_ca_file, "AUTHORITY_TLS_CLIENT_CA_FILE"),
        require_client_auth=True,
    )


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot load the TLS certificate or key: {exc}") from exc
    return context
