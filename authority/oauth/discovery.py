"""The authorization server metadata (RFC 8414), served for OpenID discovery too.

Truthful by construction: it lists the endpoints this server serves, the client
authentication methods they accept and the grant types that work, nothing else. There is
no authorization endpoint (no browser flows), hence no ``code`` or ``implicit`` response
types and no PKCE methods; and no ID tokens, hence no ID-token algorithms or subject types.

``response_types_supported`` is omitted although RFC 8414 section 2 calls it REQUIRED:
every value it could hold names a response of the authorization endpoint, which a
token-only server does not have. Omitting it is what the OAuth working group advised for
such servers (openid/OpenID4VCI#248, which records it and the planned RFC 8414 erratum);
an empty list would be rejected by clients that validate the document (authlib does).
"""

from __future__ import annotations

from typing import Any

from authority.domain.exchange import GRANT_TYPE as TOKEN_EXCHANGE

TOKEN_PATH = "/oauth2/token"
REVOKE_PATH = "/oauth2/revoke"
INTROSPECT_PATH = "/oauth2/introspect"
JWKS_PATH = "/.well-known/jwks.json"
RFC8414_PATH = "/.well-known/oauth-authorization-server"
OPENID_PATH = "/.well-known/openid-configuration"

# client_secret_basic (RFC 6749 section 2.3.1) and client_secret_post; "none" is a public
# client naming itself by client_id only.
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
REVOKE_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
INTROSPECT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def grant_types(*, password: bool) -> list[str]:
    """The grant types the token endpoint serves, in this server's configuration."""
    return [
        *(["password"] if password else []),
        "client_credentials",
        "refresh_token",
        TOKEN_EXCHANGE,
    ]


def metadata(issuer: str, *, password: bool) -> dict[str, Any]:
    """The document for ``issuer`` (the URL every endpoint is relative to)."""
    return {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "grant_types_supported": grant_types(password=password),
        "revocation_endpoint": issuer + REVOKE_PATH,
        "revocation_endpoint_auth_methods_supported": list(REVOKE_AUTH_METHODS),
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "introspection_endpoint_auth_methods_supported": list(INTROSPECT_AUTH_METHODS),
    }
