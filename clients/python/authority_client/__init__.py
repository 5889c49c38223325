"""Client library for the authority token service.

``AuthorityClient`` calls the authority; ``LocalVerifier`` verifies its tokens in-process
(with ``JwksCache`` and a revocation source); ``AuthorityInterceptor`` protects a gRPC
server with them, and handlers read ``current_claims()``.
"""

from authority_client.client import AuthorityClient
from authority_client.credentials import REVOCATIONS_READ_SCOPE, ClientCredentialsTokens
from authority_client.interceptors import (
    AuthorityInterceptor,
    Require,
    SyncAuthorityInterceptor,
    current_claims,
)
from authority_client.jwks import (
    GrpcJwksSource,
    HttpJwksSource,
    JwksCache,
    StaticJwksSource,
    parse_jwk,
    parse_jwks,
)
from authority_client.revocation import (
    CallbackRevocations,
    RevocationStatus,
    WatchedRevocations,
)
from authority_client.verifier import Claims, LocalVerifier, SyncLocalVerifier, Verification

__all__ = [
    "REVOCATIONS_READ_SCOPE",
    "AuthorityClient",
    "AuthorityInterceptor",
    "CallbackRevocations",
    "Claims",
    "ClientCredentialsTokens",
    "GrpcJwksSource",
    "HttpJwksSource",
    "JwksCache",
    "LocalVerifier",
    "Require",
    "RevocationStatus",
    "StaticJwksSource",
    "SyncAuthorityInterceptor",
    "SyncLocalVerifier",
    "Verification",
    "WatchedRevocations",
    "current_claims",
    "parse_jwk",
    "parse_jwks",
]
