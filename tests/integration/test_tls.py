"""TLS on the public listeners and mTLS on the admin listener, with a throwaway CA."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from authority_client import AuthorityClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authority.v1 import token_pb2
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "a perfectly fine passphrase"


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Ca:
    """A throwaway certificate authority, made fresh for the test."""

    def __init__(self, name: str) -> None:
        self.key = _key()
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca, rogue = Ca("authority test CA"), Ca("someone else's CA")
    server = ca.issue("authority", server=True)
    files = {
        "ca": ca.pem,
        "server.pem": server.cert,
        "server.key": server.key,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {
        "dir": tmp_path,
        "ca": ca.pem,
        "client": ca.issue("operator", server=False),
        "rogue": rogue.issue("operator", server=False),
    }


@pytest.fixture
def tls_server(start_server: Callable[..., ServerProcess], pki: dict[str, object]) -> ServerProcess:
    directory = pki["dir"]
    assert isinstance(directory, Path)
    server = start_server(
        AUTHORITY_TLS_CERT_FILE=str(directory / "server.pem"),
        AUTHORITY_TLS_KEY_FILE=str(directory / "server.key"),
        AUTHORITY_ADMIN_ADDRESS="127.0.0.1:0",
        AUTHORITY_TLS_CLIENT_CA_FILE=str(directory / "ca"),
    )
    ready = next(e for e in server.events() if e.get("event") == "authority.ready")
    server.admin_port = int(ready["admin_port"])  # type: ignore[attr-defined]
    return server


def _admin(server: ServerProcess, pki: dict[str, object], who: str | None) -> AuthorityClient:
    issued = pki[who] if who else None
    assert issued is None or isinstance(issued, Issued)
    ca = pki["ca"]
    assert isinstance(ca, bytes)
    return AuthorityClient(
        f"127.0.0.1:{server.admin_port}",  # type: ignore[attr-defined]
        admin_token=ADMIN_TOKEN,
        root_certificates=ca,
        certificate_chain=issued.cert if issued else None,
        private_key=issued.key if issued else None,
        timeout=5,
    )


def test_admin_rpcs_need_a_client_certificate_from_the_client_ca(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    with _admin(tls_server, pki, "client") as admin:
        admin.create_principal("alice", PASSWORD)
    for who in (None, "rogue"):
        with _admin(tls_server, pki, who) as stranger, pytest.raises(grpc.RpcError) as caught:
            stranger.create_principal("mallory", PASSWORD)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_the_public_listener_speaks_tls_and_refuses_admin_rpcs(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    with _admin(tls_server, pki, "client") as admin:
        admin.create_principal("alice", PASSWORD)
    ca = pki["ca"]
    assert isinstance(ca, bytes)
    with AuthorityClient(
        tls_server.target, admin_token=ADMIN_TOKEN, root_certificates=ca, timeout=5
    ) as public:
        token = public.issue_with_password("alice", PASSWORD).access_token
        assert public.verify(token).result == token_pb2.VERIFY_RESULT_VALID
        with pytest.raises(grpc.RpcError) as caught:
            public.create_principal("mallory", PASSWORD)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert "admin listener" in caught.value.details()  # type: ignore[attr-defined]
    with AuthorityClient(tls_server.target, timeout=3) as plaintext, pytest.raises(grpc.RpcError):
        plaintext.verify(token)
    context = ssl.create_default_context(cadata=ca.decode())
    url = f"https://127.0.0.1:{tls_server.http_port}/.well-known/jwks.json"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert json.load(response)["keys"]
