"""A small synchronous client over the generated stubs, so callers never touch protobuf channels."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import grpc

from authority.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)


class AuthorityClient:
    """One channel to the authority. ``admin_token`` is sent only on admin RPCs."""

    def __init__(
        self, target: str, *, admin_token: str | None = None, timeout: float = 10.0
    ) -> None:
        self._channel = grpc.insecure_channel(target)
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
    ) -> token_pb2.TokenPair:
        request = token_pb2.IssueRequest(
            password=token_pb2.PasswordGrant(principal=principal, password=password),
            audience=list(audience),
            scope=list(scope),
        )
        return self.tokens.Issue(request, timeout=self._timeout).tokens

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
