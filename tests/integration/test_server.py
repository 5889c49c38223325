"""The server as a user meets it: a real process, real gRPC and HTTP, on ephemeral ports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from authority.v1 import admin_pb2, keys_pb2, token_pb2
from tests.integration import reflection_v1
from tests.integration.server import ADMIN_TOKEN, ServerProcess

PASSWORD = "correct horse battery staple"
SERVICES = ("authority.v1.TokenService", "authority.v1.KeyService", "authority.v1.AdminService")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _login(server: ServerProcess, name: str = "alice", **kwargs: object) -> str:
    with server.client() as client:
        try:
            client.create_principal(name, PASSWORD)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        return client.issue_with_password(name, PASSWORD, **kwargs).access_token  # type: ignore[arg-type]


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    return error.code(), error.details()  # type: ignore[attr-defined]


def test_health_and_reflection_list_every_service(server: ServerProcess) -> None:
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICES):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
        listed = {s.name for s in response.list_services_response.service}
        assert set(SERVICES) <= listed
        assert "grpc.health.v1.Health" in listed
    # Reflection v1 too (grpcurl, grpcui and Postman ask for it first), listing the same.
    assert reflection_v1.services(server.target) == listed
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    for symbol, declared in (
        ("authority.v1.TokenService", "authority/v1/token.proto"),
        ("grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"),
    ):
        answer = reflection_v1.ask(server.target, file_containing_symbol=symbol)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        assert declared in {f.name for f in files}, symbol
    v1 = next(f for f in files if f.name == "grpc/reflection/v1/reflection.proto")
    assert v1.package == "grpc.reflection.v1"
    request = next(m for m in v1.message_type if m.name == "ServerReflectionRequest")
    assert {f.name: f.number for f in request.field}["list_services"] == 7


def test_quick_start_issue_then_verify(server: ServerProcess) -> None:
    token = _login(server)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "EdDSA"
    with server.client() as client:
        principal = client.get_principal("alice")
        answer = client.verify(token)
        jwks = json.loads(client.jwks().jwks_json)
    assert answer.result == token_pb2.VERIFY_RESULT_VALID
    claims = answer.claims
    assert claims.subject == principal.id
    assert claims.issuer == server.http
    assert list(claims.audience) == ["default"]
    assert claims.key_id == header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert claims.token_id and claims.session_id
    assert claims.expires_at.seconds - claims.issued_at.seconds == 600
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) >= {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "client_id"}


def test_admin_rpcs_need_the_admin_credential(server: ServerProcess) -> None:
    with server.client(admin=False) as client:
        request = admin_pb2.CreatePrincipalRequest(name="mallory", password=PASSWORD)
        code, details = _code(lambda: client.admin.CreatePrincipal(request, timeout=5))
        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert "admin credential" in details
        wrong = [("authorization", "Bearer " + "y" * 48)]
        code, _ = _code(lambda: client.admin.CreatePrincipal(request, metadata=wrong, timeout=5))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        rotate = keys_pb2.RotateKeysRequest()
        code, _ = _code(lambda: client.keys.RotateKeys(rotate, metadata=wrong, timeout=5))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        code, _ = _code(
            lambda: client.keys.CompromiseKey(keys_pb2.CompromiseKeyRequest(kid="x"), timeout=5)
        )
        assert code is grpc.StatusCode.UNAUTHENTICATED


def test_bad_input_gets_a_clear_status(server: ServerProcess) -> None:
    _login(server)
    with server.client() as client:
        cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
            (
                lambda: client.tokens.Issue(token_pb2.IssueRequest(), timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT,
                "grant is required",
            ),
            (
                lambda: client.issue_with_password("alice", "wrong password!"),
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid principal or password",
            ),
            (
                lambda: client.issue_with_password("nobody", PASSWORD),
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid principal or password",
            ),
            (
                lambda: client.issue_with_password("alice", PASSWORD, audience=["has space"]),
                grpc.StatusCode.INVALID_ARGUMENT,
                "audience",
            ),
            (
                lambda: client.create_principal("alice", PASSWORD),
                grpc.StatusCode.ALREADY_EXISTS,
                "already exists",
            ),
            (
                lambda: client.create_principal("bob", "short"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "at least 8",
            ),
            (
                lambda: client.create_principal(" bob", PASSWORD),
                grpc.StatusCode.INVALID_ARGUMENT,
                "whitespace",
            ),
            (lambda: client.get_principal("nobody"), grpc.StatusCode.NOT_FOUND, "nobody"),
            (
                lambda: client.compromise_key("no-such-kid"),
                grpc.StatusCode.NOT_FOUND,
                "no-such-kid",
            ),
            (
                lambda: client.tokens.Refresh(
                    token_pb2.RefreshRequest(refresh_token="r"), timeout=5
                ),
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid refresh token",
            ),
            (lambda: client.verify("x" * 100_000), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        ]
        for call, expected, fragment in cases:
            code, details = _code(call)
            assert code is expected, details
            assert fragment in details
            assert "Traceback" not in details
        # The server is still healthy after all of that.
        assert client.verify(_login(server)).result == token_pb2.VERIFY_RESULT_VALID


def test_attack_tokens_are_rejected_with_a_reason(server: ServerProcess) -> None:
    token = _login(server)
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = jwt.get_unverified_header(token)
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    with server.client() as client:
        jwk = json.loads(client.jwks().jwks_json)["keys"][0]
        public_bytes = base64.urlsafe_b64decode(jwk["x"] + "==")

        def forge(head: dict[str, object], body: dict[str, object], signature: bytes) -> str:
            h = _b64(json.dumps(head).encode())
            p = _b64(json.dumps(body).encode())
            return f"{h}.{p}.{_b64(signature)}"

        h_hs = _b64(json.dumps({**header, "alg": "HS256"}).encode())
        mac = hmac.new(public_bytes, f"{h_hs}.{payload_b64}".encode(), hashlib.sha256).digest()
        tampered = {**payload, "sub": "admin"}
        cases = {
            "alg none": (
                forge({**header, "alg": "none"}, payload, b""),
                token_pb2.VERIFY_RESULT_DISALLOWED_ALGORITHM,
            ),
            "HS256 with the public key": (
                f"{h_hs}.{payload_b64}.{_b64(mac)}",
                token_pb2.VERIFY_RESULT_DISALLOWED_ALGORITHM,
            ),
            "unknown kid": (
                forge({**header, "kid": "not-a-published-key"}, payload, b"sig"),
                token_pb2.VERIFY_RESULT_UNKNOWN_KEY,
            ),
            "tampered payload": (
                f"{header_b64}.{_b64(json.dumps(tampered).encode())}.{signature_b64}",
                token_pb2.VERIFY_RESULT_BAD_SIGNATURE,
            ),
            "oversized": (token + "A" * 9000, token_pb2.VERIFY_RESULT_TOO_LARGE),
            "garbage": ("not a token at all", token_pb2.VERIFY_RESULT_MALFORMED),
            "empty": ("", token_pb2.VERIFY_RESULT_MALFORMED),
            "wrong audience": (token, token_pb2.VERIFY_RESULT_WRONG_AUDIENCE),
        }
        for name, (attack, expected) in cases.items():
            audience = ["billing"] if name == "wrong audience" else []
            answer = client.verify(attack, audience=audience)
            assert answer.result == expected, name
            assert answer.detail, name
            assert not answer.HasField("claims"), name


def test_jwks_over_http_has_validators_and_matches_grpc(server: ServerProcess) -> None:
    status, headers, body = _get(server.http + "/.well-known/jwks.json")
    assert status == 200
    assert headers["Content-Type"].startswith("application/jwk-set+json")
    max_age = int(headers["Cache-Control"].split("max-age=")[1])
    assert 0 < max_age <= 3600  # never longer than the pre-publication period
    document = json.loads(body)
    for key in document["keys"]:
        assert {"kty", "kid", "alg", "use"} <= set(key)
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    status, _, body304 = _get(
        server.http + "/.well-known/jwks.json", {"If-None-Match": headers["ETag"]}
    )
    assert (status, body304) == (304, b"")
    with server.client() as client:
        answer = client.jwks()
    assert answer.jwks_json.encode() == body
    assert f'"{answer.etag}"' == headers["ETag"]
    assert answer.max_age.seconds == max_age
    status, _, discovery = _get(server.http + "/.well-known/openid-configuration")
    config = json.loads(discovery)
    assert config["issuer"] == server.http
    assert config["jwks_uri"] == server.http + "/.well-known/jwks.json"
    assert config["token_endpoint"] == server.http + "/oauth2/token"
    assert "id_token_signing_alg_values_supported" not in config  # no ID tokens


# joserfc warns that RFC 9864 deprecates "EdDSA" for "Ed25519"; verifiers in the field
# (Envoy, Istio, most JOSE libraries) still expect "EdDSA".
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_an_independent_jose_library_verifies_with_only_the_jwks_url(
    start_server: Callable[..., ServerProcess], algorithm: str
) -> None:
    server = start_server(AUTHORITY_ALGORITHM=algorithm, AUTHORITY_AUDIENCE="orders")
    token = _login(server)
    _, _, discovery = _get(server.http + "/.well-known/openid-configuration")
    config = json.loads(discovery)
    _, _, jwks = _get(config["jwks_uri"])
    key_set = KeySet.import_key_set(json.loads(jwks))
    decoded = jose_jwt.decode(token, key_set, algorithms=[algorithm])
    assert decoded.header["alg"] == algorithm
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": config["issuer"]},
        aud={"essential": True, "value": "orders"},
    )
    registry.validate(decoded.claims)
    # and a tampered copy fails in that library too
    head, _, signature = token.split(".")
    forged = _b64(json.dumps({**decoded.claims, "sub": "someone-else"}).encode())
    with pytest.raises(BadSignatureError):
        jose_jwt.decode(f"{head}.{forged}.{signature}", key_set, algorithms=[algorithm])


def test_rotation_prepublishes_and_compromise_removes_at_once(server: ServerProcess) -> None:
    old_token = _login(server)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    with server.client() as client:
        rotation = client.rotate_keys()
        new_kid = rotation.next_key.kid
        assert rotation.next_key.state == keys_pb2.KEY_STATE_PENDING
        assert rotation.current_key.kid == old_kid
        assert rotation.current_key.retires_at == rotation.next_key.activates_at
        assert client.rotate_keys().next_key.kid == new_kid  # idempotent while pending
        published = {k["kid"] for k in json.loads(client.jwks().jwks_json)["keys"]}
        assert published == {old_kid, new_kid}
        # The pending key does not sign yet.
        assert jwt.get_unverified_header(_login(server))["kid"] == old_kid

        compromise = client.compromise_key(old_kid, reason="test")
        assert compromise.compromised_key.state == keys_pb2.KEY_STATE_COMPROMISED
        assert compromise.active_key.kid == new_kid
        answer = client.verify(old_token)
        assert answer.result == token_pb2.VERIFY_RESULT_UNKNOWN_KEY
        published = {k["kid"] for k in json.loads(client.jwks().jwks_json)["keys"]}
        assert published == {new_kid}
        fresh = _login(server)
        assert jwt.get_unverified_header(fresh)["kid"] == new_kid
        assert client.verify(fresh).result == token_pb2.VERIFY_RESULT_VALID
        states = {k.kid: k.state for k in client.list_keys()}
        assert states == {
            old_kid: keys_pb2.KEY_STATE_COMPROMISED,
            new_kid: keys_pb2.KEY_STATE_ACTIVE,
        }


def test_keys_and_principals_survive_a_restart(
    start_server: Callable[..., ServerProcess],
) -> None:
    # A fixed issuer: the ephemeral HTTP port changes across restarts, a real issuer does not.
    first = start_server(AUTHORITY_ISSUER="https://auth.example.test")
    token = _login(first)
    assert first.terminate() == 0
    second = start_server(AUTHORITY_ISSUER="https://auth.example.test")
    with second.client() as client:
        assert client.verify(token).result == token_pb2.VERIFY_RESULT_VALID
        assert client.issue_with_password("alice", PASSWORD).access_token
    created = [e for e in second.events() if e.get("event") == "key.created"]
    assert created == []  # the restart loaded the existing key instead of making one


def test_sigterm_drains_in_flight_calls_then_exits_cleanly(
    start_server: Callable[..., ServerProcess],
) -> None:
    # One hashing worker and a costly hash: 12 logins queue for well over a second.
    server = start_server(
        AUTHORITY_HASH_WORKERS="1",
        AUTHORITY_ARGON2_MEMORY_KIB="65536",
        AUTHORITY_ARGON2_TIME_COST="3",
        AUTHORITY_LOGIN_ATTEMPTS_PER_MINUTE="100",
    )
    _login(server)
    with server.client() as client, ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(client.issue_with_password, "alice", PASSWORD) for _ in range(12)]
        time.sleep(0.3)
        assert not all(f.done() for f in futures), "calls finished before the shutdown began"
        assert server.process is not None
        server.process.send_signal(15)
        tokens = [f.result(timeout=30).access_token for f in futures]
    assert all(tokens)
    assert server.process.wait(30) == 0
    events = [e.get("event") for e in server.events()]
    assert events.index("authority.stopping") < events.index("authority.stopped")
    with pytest.raises(grpc.RpcError), server.client() as client:
        client.verify(tokens[0])


def test_invalid_configuration_fails_fast_with_every_problem(
    start_server: Callable[..., ServerProcess],
) -> None:
    with pytest.raises(RuntimeError) as caught:
        start_server(AUTHORITY_JWKS_MAX_AGE="2h", AUTHORITY_GRPC_ADDRESS="nowhere")
    message = str(caught.value)
    assert "AUTHORITY_JWKS_MAX_AGE must not exceed AUTHORITY_KEY_PREPUBLISH" in message
    assert "AUTHORITY_GRPC_ADDRESS" in message
    assert "Traceback" not in message


def test_secrets_stay_out_of_logs_and_the_database(server: ServerProcess) -> None:
    token = _login(server)
    assert server.terminate() == 0
    logs = "\n".join(server.lines)
    kek = (server.data_dir / "kek").read_text().strip()
    database = (server.data_dir / "authority.db").read_bytes()
    for secret in (PASSWORD, ADMIN_TOKEN, kek, token):
        assert secret not in logs
        assert secret.encode() not in database
    assert b"PRIVATE KEY" not in database
    assert oct((server.data_dir / "kek").stat().st_mode & 0o777) == "0o600"
    assert oct((server.data_dir / "authority.db").stat().st_mode & 0o777) == "0o600"
