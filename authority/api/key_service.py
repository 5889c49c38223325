"""authority.v1.KeyService. RotateKeys and CompromiseKey need the admin credential
(checked by ``authority.api.admin_auth.AdminGate``)."""

from __future__ import annotations

from typing import Any

import grpc

from authority.api.convert import ALGORITHM_FROM_PB, jwks_response, key_info
from authority.api.errors import rpc
from authority.domain.clock import Clock
from authority.domain.errors import InvalidArgument
from authority.keys.manager import KeyManager
from authority.v1 import keys_pb2, keys_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, *, keys: KeyManager, clock: Clock) -> None:
        self._keys = keys
        self._clock = clock

    @rpc
    async def GetJwks(
        self, request: keys_pb2.GetJwksRequest, context: Context
    ) -> keys_pb2.GetJwksResponse:
        return jwks_response(self._keys.snapshot().jwks)

    @rpc
    async def ListKeys(
        self, request: keys_pb2.ListKeysRequest, context: Context
    ) -> keys_pb2.ListKeysResponse:
        records = sorted(self._keys.snapshot().records, key=lambda r: r.published_at, reverse=True)
        now = self._clock.now()
        return keys_pb2.ListKeysResponse(
            keys=[key_info(r, self._keys.policy, now) for r in records]
        )

    @rpc
    async def RotateKeys(
        self, request: keys_pb2.RotateKeysRequest, context: Context
    ) -> keys_pb2.RotateKeysResponse:
        algorithm = None
        if request.algorithm != keys_pb2.SIGNING_ALGORITHM_UNSPECIFIED:
            algorithm = ALGORITHM_FROM_PB.get(request.algorithm)
            if algorithm is None:
                raise InvalidArgument(f"unknown signing algorithm {request.algorithm}")
        result = await self._keys.rotate(algorithm)
        now = self._clock.now()
        policy = self._keys.policy
        return keys_pb2.RotateKeysResponse(
            next_key=key_info(result.next_key, policy, now) if result.next_key else None,
            current_key=key_info(result.current_key, policy, now) if result.current_key else None,
        )

    @rpc
    async def CompromiseKey(
        self, request: keys_pb2.CompromiseKeyRequest, context: Context
    ) -> keys_pb2.CompromiseKeyResponse:
        if not request.kid:
            raise InvalidArgument("kid is required")
        result = await self._keys.compromise(request.kid)
        now = self._clock.now()
        policy = self._keys.policy
        return keys_pb2.CompromiseKeyResponse(
            compromised_key=key_info(result.current_key, policy, now)
            if result.current_key
            else None,
            active_key=key_info(result.next_key, policy, now) if result.next_key else None,
        )
