"""A small synchronous client over the generated stubs, so callers never touch protobuf channels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc

from authority.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from authority_client.channels import sync_channel

# RFC 8693 section 3: the token type of this authority's access tokens.
ACCESS_TOKEN_TYPE_URN = "urn:ietf:params:oauth:token-type:access_token"


class AuthorityClient:
    """One channel to the authority. ``admin_token`` is sent only on admin RPCs."""

    def __init__(
        self,
        target: str,
        *,
        admin_token: str | None = None,
        timeout: float = 10.0,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
    ) -> None:
        """TLS when ``root_certificates`` (the server's CA, PEM) is given; mTLS when a client
        ``certificate_chain`` and ``private_key`` are given too."""
        if root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
        else:
            credentials = None
        self._channel = sync_channel(target, credentials)
        self._admin_token = admin_token
        self._timeout = timeout
        self.tokens = token_pb2_grpc.TokenServiceStub(self._channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def __enter__(self) -> AuthorityClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _admin_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        if not self._admin_token:
            raise ValueError("this call needs the admin token")
        return (("authorization", f"Bearer {self._admin_token}"),)

    # -- tokens ---------------------------------------------------------------

    def issue_with_password(
        self,
        principal: str,
        password: str,
        *,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        client_id: str = "",
        client_secret: str = "",
    ) -> token_pb2.TokenPair:
        request = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal=principal, password=password),
            audience=list(audience),
            scope=list(scope),
            client_id=client_id,
            client_secret=client_secret,
        )
        return self.tokens.Issue(request, timeout=self._timeout).tokens

    def issue_with_client_credentials(
        self,
        client_id: str,
        client_secret: str,
        *,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
    ) -> token_pb2.TokenPair:
        request = token_pb2.IssueRequest(
            client_credentials=token_pb2.ClientCredentialsGrant(
                client_id=client_id, client_secret=client_secret
            ),
            audience=list(audience),
            scope=list(scope),
        )
        return self.tokens.Issue(request, timeout=self._timeout).tokens

    def exchange_token(
        self,
        client_id: str,
        client_secret: str,
        subject: str,
        *,
        claims: Mapping[str, Any] | None = None,
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
    ) -> token_pb2.TokenPair:
        """Deprecated: the client names a principal (use ``exchange``, RFC 8693)."""
        grant = token_pb2.TokenExchangeGrant(
            client_id=client_id, client_secret=client_secret, subject=subject
        )
        if claims is not None:
            grant.claims.update(dict(claims))
        request = token_pb2.IssueRequest(
            token_exchange=grant, audience=list(audience), scope=list(scope)
        )
        return self.tokens.Issue(request, timeout=self._timeout).tokens

    def exchange(
        self,
        client_id: str,
        client_secret: str,
        subject_token: str,
        *,
        actor_token: str = "",
        audience: Sequence[str] = (),
        scope: Sequence[str] = (),
        subject_token_type: str = ACCESS_TOKEN_TYPE_URN,
        requested_token_type: str = "",
    ) -> token_pb2.IssueResponse:
        """RFC 8693 token exchange: ``subject_token`` (an access token of this authority,
        issued to or for ``client_id``) for a new access token of its principal, with at
        most its scope; ``actor_token`` sets ``act``. The answer's ``issued_token_type``
        names the token's type."""
        grant = token_pb2.TokenExchangeGrant(
            client_id=client_id,
            client_secret=client_secret,
            subject_token=subject_token,
            subject_token_type=subject_token_type,
            actor_token=actor_token,
            actor_token_type=ACCESS_TOKEN_TYPE_URN if actor_token else "",
            requested_token_type=requested_token_type,
        )
        request = token_pb2.IssueRequest(
            token_exchange=grant, audience=list(audience), scope=list(scope)
        )
        return self.tokens.Issue(request, timeout=self._timeout)

    def refresh(
        self, refresh_token: str, *, client_id: str = "", client_secret: str = ""
    ) -> token_pb2.TokenPair:
        request = token_pb2.RefreshRequest(
            refresh_token=refresh_token, client_id=client_id, client_secret=client_secret
        )
        return self.tokens.Refresh(request, timeout=self._timeout).tokens

    def revoke(self, *, reason: str = "", **target: str) -> token_pb2.RevokeResponse:
        """Revoke one target: access_token=, refresh_token= (no credential needed), or
        session_id=, subject=, client_id=, token_id= (admin). ``reason`` goes into the
        audit log."""
        if len(target) != 1:
            raise ValueError("name exactly one revocation target")
        request = token_pb2.RevokeRequest(reason=reason, **target)
        admin_targets = {"session_id", "subject", "client_id", "token_id"}
        metadata = self._admin_metadata() if admin_targets & set(target) else None
        return self.tokens.Revoke(request, metadata=metadata, timeout=self._timeout)

    def verify(self, token: str, *, audience: Sequence[str] = ()) -> token_pb2.VerifyResponse:
        request = token_pb2.VerifyRequest(token=token, audience=list(audience))
        return self.tokens.Verify(request, timeout=self._timeout)

    # -- keys -----------------------------------------------------------------

    def jwks(self) -> keys_pb2.GetJwksResponse:
        return self.keys.GetJwks(keys_pb2.GetJwksRequest(), timeout=self._timeout)

    def list_keys(self) -> list[keys_pb2.KeyInfo]:
        return list(self.keys.ListKeys(keys_pb2.ListKeysRequest(), timeout=self._timeout).keys)

    def rotate_keys(
        self,
        algorithm: keys_pb2.SigningAlgorithm.ValueType = keys_pb2.SIGNING_ALGORITHM_UNSPECIFIED,
    ) -> keys_pb2.RotateKeysResponse:
        return self.keys.RotateKeys(
            keys_pb2.RotateKeysRequest(algorithm=algorithm),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        )

    def compromise_key(self, kid: str, reason: str = "") -> keys_pb2.CompromiseKeyResponse:
        return self.keys.CompromiseKey(
            keys_pb2.CompromiseKeyRequest(kid=kid, reason=reason),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        )

    # -- principals -------------------------------------------------------------

    def create_principal(self, name: str, password: str) -> admin_pb2.Principal:
        request = admin_pb2.CreatePrincipalRequest(name=name, password=password)
        return self.admin.CreatePrincipal(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        ).principal

    def get_principal(self, name: str) -> admin_pb2.Principal:
        request = admin_pb2.GetPrincipalRequest(name=name)
        return self.admin.GetPrincipal(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        ).principal

    def set_principal_disabled(self, name: str, disabled: bool) -> admin_pb2.Principal:
        request = admin_pb2.SetPrincipalDisabledRequest(name=name, disabled=disabled)
        return self.admin.SetPrincipalDisabled(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        ).principal

    def set_password(
        self, name: str, password: str, *, keep_sessions: bool = False
    ) -> admin_pb2.Principal:
        """Replace the password. Every session and access token of the principal is
        revoked with it unless ``keep_sessions=True``."""
        request = admin_pb2.SetPasswordRequest(
            name=name, password=password, keep_sessions=keep_sessions
        )
        return self.admin.SetPassword(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        ).principal

    def delete_principal(self, name: str) -> bool:
        request = admin_pb2.DeletePrincipalRequest(name=name)
        return self.admin.DeletePrincipal(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        ).deleted

    # -- clients ----------------------------------------------------------------

    def create_client(self, client: admin_pb2.Client) -> admin_pb2.CreateClientResponse:
        """Returns the stored client and, for a confidential client, its secret (once)."""
        return self.admin.CreateClient(
            admin_pb2.CreateClientRequest(client=client),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        )

    def get_client(self, client_id: str) -> admin_pb2.Client:
        return self.admin.GetClient(
            admin_pb2.GetClientRequest(id=client_id),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        ).client

    def rotate_client_secret(self, client_id: str, *, keep_tokens: bool = False) -> str:
        """The new secret. The client's tokens and sessions are revoked unless
        ``keep_tokens``; calls in flight with the old secret get no token either way."""
        return self.admin.RotateClientSecret(
            admin_pb2.RotateClientSecretRequest(id=client_id, keep_tokens=keep_tokens),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        ).client_secret

    def set_client_disabled(self, client_id: str, disabled: bool) -> admin_pb2.Client:
        return self.admin.SetClientDisabled(
            admin_pb2.SetClientDisabledRequest(id=client_id, disabled=disabled),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        ).client

    def set_client_allowed_claims(
        self,
        client_id: str,
        allowed_claims: Sequence[str] = (),
        allowed_sensitive_claims: Sequence[str] = (),
    ) -> admin_pb2.Client:
        """Replace the claim names the client may set in token exchange."""
        return self.admin.SetClientAllowedClaims(
            admin_pb2.SetClientAllowedClaimsRequest(
                id=client_id,
                allowed_claims=list(allowed_claims),
                allowed_sensitive_claims=list(allowed_sensitive_claims),
            ),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        ).client

    def delete_client(self, client_id: str) -> bool:
        return self.admin.DeleteClient(
            admin_pb2.DeleteClientRequest(id=client_id),
            metadata=self._admin_metadata(),
            timeout=self._timeout,
        ).deleted

    # -- audit log --------------------------------------------------------------

    def list_audit_events(
        self,
        *,
        target: str = "",
        action: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> admin_pb2.ListAuditEventsResponse:
        """One page of the audit log, oldest first; pass ``next_page_token`` back for more."""
        request = admin_pb2.ListAuditEventsRequest(
            target=target, action=action, page_size=page_size, page_token=page_token
        )
        if start_time is not None:
            request.start_time.FromDatetime(start_time)
        if end_time is not None:
            request.end_time.FromDatetime(end_time)
        response: admin_pb2.ListAuditEventsResponse = self.admin.ListAuditEvents(
            request, metadata=self._admin_metadata(), timeout=self._timeout
        )
        return response
