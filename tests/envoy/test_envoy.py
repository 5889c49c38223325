"""Envoy in front of an upstream, guarded by the authority: jwt_authn against our JWKS,
ext_authz against our Check, and a planned key rotation under traffic without a 401.

Everything is real and on loopback: an ``authority serve`` process, an Envoy process (from
``make envoy``) with a bootstrap generated per test, and an upstream that echoes the
request headers it received.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import jwt
import pytest
from authority_client import AuthorityClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authority.v1 import admin_pb2
from tests.envoy.conftest import EnvoyProcess, envoy_config, example_config
from tests.integration.server import ServerProcess

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
CHECK_SERVICE = "envoy.service.auth.v3.Authorization"
GENEROUS = {
    "AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE": "1000",
    "AUTHORITY_SOURCE_ATTEMPTS_PER_MINUTE": "100000",
    "AUTHORITY_LOCKOUT_THRESHOLD": "1000",
}

StartServer = Callable[..., ServerProcess]
StartEnvoy = Callable[..., EnvoyProcess]


def _setup(server: ServerProcess) -> tuple[str, str]:
    """Principal alice and clients: public ``web`` (password grant, scopes read and admin)
    and confidential ``svc`` (client credentials). Returns alice's id and svc's secret."""
    with server.client() as admin:
        alice = admin.create_principal("alice", PASSWORD).id
        admin.create_client(
            admin_pb2.Client(
                id="web",
                confidential=False,
                grant_types=[admin_pb2.GRANT_TYPE_PASSWORD],
                audiences=["default", "other"],
                scopes=["read", "admin"],
                default_scopes=["read"],
            )
        )
        secret = admin.create_client(
            admin_pb2.Client(
                id="svc",
                confidential=True,
                grant_types=[admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS],
                audiences=["default"],
                scopes=["read"],
                default_scopes=["read"],
            )
        ).client_secret
    return alice, secret


def _login(
    client: AuthorityClient, *, audience: Sequence[str] = (), scope: Sequence[str] = ()
) -> str:
    """alice's access token through the public client ``web``."""
    pair = client.issue_with_password(
        "alice", PASSWORD, client_id="web", audience=audience, scope=scope
    )
    return pair.access_token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tampered(token: str) -> str:
    """Same header and signature, the subject changed in the payload."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


def test_jwt_authn_verifies_against_the_jwks(
    start_server: StartServer, start_envoy: StartEnvoy, upstream: int
) -> None:
    server = start_server(AUTHORITY_ACCESS_TOKEN_TTL="3s", **GENEROUS)
    _setup(server)
    envoy = start_envoy(envoy_config(server, upstream, jwks_cache_duration="60s"))
    with server.client(admin=False) as client:
        soon_expired = _login(client)
        expires_at = jwt.decode(soon_expired, options={"verify_signature": False})["exp"]
        valid = _login(client)
        wrong_audience = _login(client, audience=["other"])

    answer = envoy.get("/jwt/hello", _bearer(valid))
    assert answer.status == 200, answer.body
    assert answer.upstream_headers()["authorization"] == [f"Bearer {valid}"]

    refused = {
        "missing": envoy.get("/jwt/hello"),
        "tampered": envoy.get("/jwt/hello", _bearer(_tampered(valid))),
        "wrong audience": envoy.get("/jwt/hello", _bearer(wrong_audience)),
    }
    # A real token that really expired (clock_skew_seconds is 1 in the test bootstrap;
    # Envoy reads 0 as its default, 60).
    time.sleep(max(0.0, expires_at + 2.2 - time.time()))
    refused["expired"] = envoy.get("/jwt/hello", _bearer(soon_expired))
    statuses = {case: answer.status for case, answer in refused.items()}
    # Envoy answers a wrong audience with 403 by design (envoyproxy/envoy#7679): the token
    # is authentic, just not for this API. Every other failure is a 401.
    assert statuses == {"missing": 401, "tampered": 401, "wrong audience": 403, "expired": 401}
    assert refused["expired"].body == b"Jwt is expired"
    assert refused["tampered"].body == b"Jwt verification fails"
    assert refused["wrong audience"].body == b"Audiences in Jwt are not allowed"
    for case in ("tampered", "expired"):
        assert 'error="invalid_token"' in refused[case].headers["www-authenticate"]


def test_ext_authz_checks_revocation_and_scope_and_sets_identity_headers(
    start_server: StartServer, start_envoy: StartEnvoy, upstream: int
) -> None:
    server = start_server(**GENEROUS)
    alice, _ = _setup(server)
    envoy = start_envoy(envoy_config(server, upstream, jwks_cache_duration="60s"))
    with server.client(admin=False) as client:
        pair = client.issue_with_password("alice", PASSWORD, client_id="web")
        token = pair.access_token

        spoofed = {**_bearer(token), "X-Authority-Subject": "admin", "X-Authority-Role": "root"}
        answer = envoy.get("/authz/orders", spoofed)
        assert answer.status == 200, answer.body
        seen = answer.upstream_headers()
        assert seen["x-authority-subject"] == [alice]  # the client's "admin" was overwritten
        assert seen["x-authority-client-id"] == ["web"]
        assert seen["x-authority-scope"] == ["read"]
        assert seen["x-authority-session-id"] == [pair.session_id]
        assert "x-authority-role" not in seen

        other = _login(client, audience=["other"])
        wrong_audience = envoy.get("/authz/orders", _bearer(other))
        assert wrong_audience.status == 401
        assert "not for this audience" in wrong_audience.headers["www-authenticate"]

        missing = envoy.get("/authz/orders")
        assert (missing.status, missing.headers.get("www-authenticate")) == (401, "Bearer")

        scope = envoy.get("/authz/admin/users", _bearer(token))
        assert scope.status == 403
        challenge = scope.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope", scope="admin"')
        admin_token = _login(client, scope=["read", "admin"])
        assert envoy.get("/authz/admin/users", _bearer(admin_token)).status == 200

        client.revoke(access_token=token)
        revoked = envoy.get("/authz/orders", _bearer(token))
    assert revoked.status == 401
    assert revoked.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="the token has been revoked"'
    )
    assert envoy.get("/authz/orders", _bearer(admin_token)).status == 200  # others unaffected


@dataclass
class Traffic:
    """Requests through Envoy from one thread, with a fresh token every ``refresh`` seconds."""

    envoy: EnvoyProcess
    mint: Callable[[], str]
    refresh: float = 0.5
    statuses: Counter[int] = field(default_factory=Counter)
    by_kid: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported by the test, not lost in the thread
            self.failures.append(f"traffic stopped: {exc!r}")

    def _run(self) -> None:
        token, kid, minted = "", "", 0.0
        while not self.stop.is_set():
            if time.monotonic() - minted >= self.refresh:
                token, minted = self.mint(), time.monotonic()
                kid = jwt.get_unverified_header(token)["kid"]
            answer = self.envoy.get("/both/data", _bearer(token))
            self.statuses[answer.status] += 1
            self.by_kid[kid] += 1
            if answer.status != 200:
                self.failures.append(f"{answer.status} kid={kid}: {answer.body[:200]!r}")
            time.sleep(0.02)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


@pytest.mark.parametrize("async_fetch", [False, True], ids=["on-demand-fetch", "async-fetch"])
def test_planned_rotation_under_traffic_gives_no_401(
    start_server: StartServer, start_envoy: StartEnvoy, upstream: int, async_fetch: bool
) -> None:
    """The JWKS cache (2s) is shorter than the pre-publication period (4s), so Envoy has
    refetched the JWKS, and knows the new kid, before the first token it signs arrives.

    (With a 30s cache instead, every request carrying a new-kid token gets 401 "Jwks
    doesn't have key to match kid": the traffic here is what would show it.)"""
    server = start_server(
        AUTHORITY_KEY_PREPUBLISH="4s",
        AUTHORITY_JWKS_MAX_AGE="2s",
        AUTHORITY_LEEWAY="1s",
        **GENEROUS,
    )
    _, secret = _setup(server)
    envoy = start_envoy(
        envoy_config(server, upstream, jwks_cache_duration="2s", async_fetch=async_fetch)
    )
    with server.client() as client:

        def mint() -> str:
            return client.issue_with_client_credentials("svc", secret).access_token

        old_kid = jwt.get_unverified_header(mint())["kid"]
        traffic = Traffic(envoy, mint)
        thread = threading.Thread(target=traffic.run, daemon=True)
        thread.start()
        try:
            time.sleep(1.5)
            rotation = client.rotate_keys()
            new_kid = rotation.next_key.kid
            activates = rotation.next_key.activates_at.seconds
            # Until the new key has signed for longer than two JWKS cache periods.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                time.time() < activates + 5 or traffic.by_kid[new_kid] < 20
            ):
                time.sleep(0.1)
        finally:
            traffic.stop.set()
            thread.join(15)
    print(
        f"\nrotation under traffic ({'async' if async_fetch else 'on-demand'} JWKS fetch):"
        f" {traffic.sent} requests, {traffic.statuses[401]} 401s,"
        f" {traffic.by_kid[old_kid]} with the old kid, {traffic.by_kid[new_kid]} with the new;"
        f" statuses {dict(traffic.statuses)}"
    )
    assert new_kid != old_kid
    assert traffic.by_kid[old_kid] > 0
    assert traffic.by_kid[new_kid] >= 20, "the new key never signed the traffic's tokens"
    assert traffic.statuses[401] == 0, traffic.failures[:5]
    assert traffic.failures == []


def test_the_example_configuration_works_as_documented(
    start_server: StartServer, start_envoy: StartEnvoy, upstream: int
) -> None:
    """deploy/envoy/envoy.yaml itself (ports aside): both filters on every route."""
    server = start_server(**GENEROUS)
    alice, _ = _setup(server)
    envoy = start_envoy(example_config(server, upstream))
    with server.client(admin=False) as client:
        pair = client.issue_with_password("alice", PASSWORD, client_id="web")
        admin_token = _login(client, scope=["read", "admin"])
        answer = envoy.get("/orders", {**_bearer(pair.access_token), "X-Authority-Subject": "x"})
        assert answer.status == 200, answer.body
        seen = answer.upstream_headers()
        assert seen["x-authority-subject"] == [alice]
        assert seen["authorization"] == [f"Bearer {pair.access_token}"]
        assert envoy.get("/admin/users", _bearer(pair.access_token)).status == 403
        assert envoy.get("/admin/users", _bearer(admin_token)).status == 200
        # jwt_authn refuses these before the authority is asked.
        assert envoy.get("/orders").body == b"Jwt is missing"
        assert envoy.get("/orders", _bearer(_tampered(admin_token))).status == 401
        # A revoked token is still authentic: only ext_authz can refuse it.
        client.revoke(access_token=pair.access_token)
        revoked = envoy.get("/orders", _bearer(pair.access_token))
    assert revoked.status == 401
    assert 'error="invalid_token"' in revoked.headers["www-authenticate"]


def test_reflection_and_health_list_the_check_service(start_server: StartServer) -> None:
    """Operators can find Check with grpcurl, and health-check it from Envoy."""
    server = start_server()
    with grpc.insecure_channel(server.target) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
        assert CHECK_SERVICE in {s.name for s in response.list_services_response.service}
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=CHECK_SERVICE), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
