"""A burst of calls on one channel is served, not turned away.

The server bounds what one peer holds: at most 256 streams per connection, counted as
gRPC core counts them for its Rapid Reset defence (streams still *allocated*, not just
open). A burst from a well-behaved client then overruns that count, because a call whose
answer the client already has may not be released on the server yet, and gRPC core
refuses the next streams (``RST_STREAM`` ``REFUSED_STREAM``: ``UNAVAILABLE``, never run).
A downstream service verifying tokens for its own traffic through one channel sees that
as errors although the authority is not overloaded. The client library's channels carry
a retry policy for it (``authority_client.channels``); the server keeps its bound.

Each round sends 1,000 concurrent Verify calls of one valid token on one channel of a
real server process, three rounds per channel kind. The library's channel must answer
every call VALID. A plain channel is measured alongside for the report (``pytest -rP``):
it saw 15-201 refusals per round here, but that depends on the machine, so it is not
asserted.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import grpc
from authority_client.channels import RETRIED_METHODS, aio_channel

from authority.v1 import admin_pb2, keys_pb2, token_pb2, token_pb2_grpc
from tests.integration.server import ServerProcess

BURST = 1_000
ROUNDS = 3
PASSWORD = "a perfectly fine passphrase"

StartServer = Callable[..., ServerProcess]


async def _bursts(open_channel: Callable[[], grpc.aio.Channel], token: str) -> list[dict[str, int]]:
    channel = open_channel()  # in the loop that uses it
    stub = token_pb2_grpc.TokenServiceStub(channel)
    request = token_pb2.VerifyRequest(token=token)

    async def one(outcomes: collections.Counter[str]) -> None:
        try:
            answer = await stub.Verify(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            outcomes[f"{error.code().name}: {error.details()}"] += 1
        else:
            outcomes[token_pb2.VerifyResult.Name(answer.result)] += 1

    rounds: list[dict[str, int]] = []
    for _ in range(ROUNDS):
        outcomes: collections.Counter[str] = collections.Counter()
        await asyncio.gather(*(one(outcomes) for _ in range(BURST)))
        rounds.append(dict(outcomes))
    await channel.close()
    return rounds


def test_a_burst_on_one_library_channel_is_answered_in_full(start_server: StartServer) -> None:
    server = start_server()
    admin = server.client()
    admin.create_principal("alice", PASSWORD)
    token = admin.issue_with_password("alice", PASSWORD).access_token

    plain = asyncio.run(_bursts(lambda: grpc.aio.insecure_channel(server.target), token))
    library = asyncio.run(_bursts(lambda: aio_channel(server.target, None), token))
    print(f"refusal: plain channel {plain}")
    print(f"refusal: library channel {library}")

    assert library == [{"VERIFY_RESULT_VALID": BURST}] * ROUNDS
    refused = [
        outcome
        for round_ in plain
        for outcome in round_
        if outcome != "VERIFY_RESULT_VALID" and "RST_STREAM" not in outcome
    ]
    assert not refused, f"a plain channel failed for another reason than a refusal: {plain}"


def test_no_method_that_must_not_run_twice_is_retried() -> None:
    """Issue would start a second session, the admin and key writes would act twice."""
    retried = {f"{service}/{method}" for service, method in RETRIED_METHODS}
    writes = {"authority.v1.TokenService/Issue"} | {
        f"{service.full_name}/{method.name}"
        for service in (
            admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            keys_pb2.DESCRIPTOR.services_by_name["KeyService"],
        )
        for method in service.methods
        if not method.name.startswith(("Get", "List"))
    }
    assert "authority.v1.KeyService/RotateKeys" in writes  # the descriptor walk works
    assert not retried & writes
