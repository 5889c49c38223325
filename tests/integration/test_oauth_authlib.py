"""A third-party OAuth 2.0 client (authlib, over httpx) against a real server: client
credentials with both client authentication methods, password and refresh, a public
client, revocation and introspection, each configured only from the discovery document."""

from __future__ import annotations

import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from authority.v1 import token_pb2
from tests.integration.server import ServerProcess
from tests.integration.test_oauth_http import (
    CLIENT_GRANTS,
    GRANTS,
    PASSWORD,
    discovery,
    make_client,
    make_principal,
    payload,
)


@pytest.fixture(autouse=True)
def _plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """authlib refuses http:// unless told; the test server has no TLS."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_with_each_authentication_method(
    server: ServerProcess, method: str
) -> None:
    document = discovery(server)
    assert method in document["token_endpoint_auth_methods_supported"]  # type: ignore[operator]
    secret = make_client(server, "svc", (GRANTS.GRANT_TYPE_CLIENT_CREDENTIALS,))
    with OAuth2Client("svc", secret, token_endpoint_auth_method=method, scope="read") as oauth:
        token = oauth.fetch_token(str(document["token_endpoint"]), grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["scope"] == "read"
        assert payload(token["access_token"])["client_id"] == "svc"
        wrong = OAuth2Client("svc", "cs_wrong", token_endpoint_auth_method=method)
        with wrong, pytest.raises(OAuthError) as caught:
            wrong.fetch_token(str(document["token_endpoint"]), grant_type="client_credentials")
        assert caught.value.error == "invalid_client"


def test_password_refresh_revoke_and_introspect(server: ServerProcess) -> None:
    document = discovery(server)
    secret = make_client(server, "app", CLIENT_GRANTS)
    make_principal(server)
    token_url = str(document["token_endpoint"])
    with OAuth2Client("app", secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        login = oauth.fetch_token(token_url, username="alice", password=PASSWORD)
        assert login["refresh_token"].startswith("rt_")
        refreshed = oauth.refresh_token(token_url, refresh_token=login["refresh_token"])
        assert refreshed["access_token"] != login["access_token"]
        assert refreshed["refresh_token"] != login["refresh_token"]

        introspected = oauth.introspect_token(
            str(document["introspection_endpoint"]), token=refreshed["access_token"]
        ).json()
        assert introspected["active"] is True and introspected["client_id"] == "app"

        revoked = oauth.revoke_token(
            str(document["revocation_endpoint"]),
            token=refreshed["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert revoked.status_code == 200
        after = oauth.introspect_token(
            str(document["introspection_endpoint"]), token=refreshed["access_token"]
        ).json()
        assert after == {"active": False}
        with pytest.raises(OAuthError) as caught:
            oauth.refresh_token(token_url, refresh_token=refreshed["refresh_token"])
        assert caught.value.error == "invalid_grant"
    with server.client(admin=False) as client:
        verdict = client.verify(refreshed["access_token"]).result
    assert verdict == token_pb2.VERIFY_RESULT_REVOKED


def test_a_public_client_logs_in_and_refreshes_by_client_id_alone(server: ServerProcess) -> None:
    document = discovery(server)
    assert "none" in document["token_endpoint_auth_methods_supported"]  # type: ignore[operator]
    make_client(
        server,
        "web",
        (GRANTS.GRANT_TYPE_PASSWORD, GRANTS.GRANT_TYPE_REFRESH_TOKEN),
        confidential=False,
    )
    make_principal(server)
    token_url = str(document["token_endpoint"])
    with OAuth2Client("web", token_endpoint_auth_method="none") as oauth:
        login = oauth.fetch_token(token_url, username="alice", password=PASSWORD)
        refreshed = oauth.refresh_token(token_url, refresh_token=login["refresh_token"])
        revoked = oauth.revoke_token(
            str(document["revocation_endpoint"]), token=refreshed["access_token"]
        )
        assert revoked.status_code == 200
        with pytest.raises(OAuthError) as caught:
            oauth.fetch_token(token_url, username="alice", password="wrong password!")
        assert caught.value.error == "invalid_grant"
    assert payload(refreshed["access_token"])["client_id"] == "web"
