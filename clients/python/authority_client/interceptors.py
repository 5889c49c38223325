"""Server interceptors: protect a gRPC server with one line, read the claims in handlers.

    server = grpc.aio.server(interceptors=[AuthorityInterceptor(verifier, requirements={
        "/shop.Orders/Create": Require(audience="orders", scopes={"orders:write"}),
    })])

Every call must carry ``authorization: Bearer <access token>``. A missing or invalid token
is UNAUTHENTICATED (the verdict's name and detail in the status details), a valid token
without the method's scopes is PERMISSION_DENIED, and a handler reads the verified claims
with ``current_claims()``.

Verification runs inside the wrapped handler, not in ``intercept_service``: the sync
server calls interceptors on its single polling thread, where a JWKS fetch or a
revocation RPC would stall every other call. Claims travel in a ``ContextVar``, set in a
copied context for sync handlers, so a pooled worker thread never carries one call's
claims into the next.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from authority_client.verifier import Claims, LocalVerifier, SyncLocalVerifier, Verification

_CLAIMS: contextvars.ContextVar[Claims] = contextvars.ContextVar("authority_claims")


def current_claims() -> Claims:
    """The verified claims of the call being handled. Raises LookupError outside a call
    protected by an ``AuthorityInterceptor`` (or in a ``Require(public=True)`` method)."""
    try:
        return _CLAIMS.get()
    except LookupError:
        raise LookupError(
            "no verified claims: is this method protected by an AuthorityInterceptor?"
        ) from None


@dataclass(frozen=True)
class Require:
    """What a method needs: a token for one of ``audience`` (None: the verifier's default)
    granting every scope in ``scopes``. ``public`` methods need no token at all."""

    audience: str | Iterable[str] | None = None
    scopes: Iterable[str] = field(default_factory=frozenset)
    public: bool = False

    def __post_init__(self) -> None:
        scopes = self.scopes
        object.__setattr__(
            self, "scopes", frozenset({scopes} if isinstance(scopes, str) else scopes)
        )
        audience = self.audience
        if audience is not None and not isinstance(audience, str):
            object.__setattr__(self, "audience", tuple(audience))


class Denied(Exception):
    """Why a call is refused: a status code and details for the caller."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Policy:
    """The per-method requirements and the bearer-token rules, shared by both interceptors."""

    def __init__(self, requirements: Mapping[str, Require] | None, default: Require) -> None:
        self.requirements = dict(requirements or {})
        self.default = default

    def requirement(self, method: str) -> Require:
        """Exact ``/pkg.Service/Method``, then ``/pkg.Service/*``, then the default."""
        found = self.requirements.get(method)
        if found is None:
            service = method.rpartition("/")[0]
            found = self.requirements.get(service + "/*", self.default)
        return found

    @staticmethod
    def bearer(metadata: Iterable[Any] | None) -> str:
        values = [
            value
            for key, value in (tuple(item) for item in metadata or ())
            if str(key).lower() == "authorization"
        ]
        if not values:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        if len(values) > 1:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "more than one authorization header")
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = str(value).strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED, "the authorization header is not 'Bearer <token>'"
            )
        return token

    @staticmethod
    def judge(verdict: Verification, requirement: Require) -> Claims:
        if not verdict.valid or verdict.claims is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED, f"{verdict.reason_name}: {verdict.detail}"
            )
        claims = verdict.claims
        missing = sorted(set(requirement.scopes).difference(claims.scope))
        if missing:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED, f"missing scope(s): {' '.join(missing)}"
            )
        return claims


def _handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behaviour wrapped, whatever its streaming kind."""
    if handler.unary_unary is not None:
        make, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    elif handler.unary_stream is not None:
        make, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    elif handler.stream_unary is not None:
        make, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.stream_stream is not None:
        make, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    else:  # pragma: no cover - grpc never builds such a handler
        return handler
    return make(
        wrap(behaviour),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _run_sync(
    behaviour: Callable[..., Any],
    authorize: Callable[[Any], Claims | None],
    streaming_response: bool,
) -> Callable[..., Any]:
    """A sync behaviour that authorizes, then runs ``behaviour`` in a context of its own."""
    if streaming_response:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            claims = authorize(context)
            run = contextvars.copy_context()
            if claims is not None:
                run.run(_CLAIMS.set, claims)
            responses = run.run(behaviour, request, context)
            while True:
                try:
                    item = run.run(next, responses)
                except StopIteration:
                    return
                yield item

        return stream

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        claims = authorize(context)
        run = contextvars.copy_context()
        if claims is not None:
            run.run(_CLAIMS.set, claims)
        return run.run(behaviour, request, context)

    return unary


class AuthorityInterceptor(grpc.aio.ServerInterceptor):
    """Protects a ``grpc.aio`` server: every method needs a valid token (``default``) unless
    ``requirements`` says otherwise for it (by full method name, or ``/pkg.Service/*``)."""

    def __init__(
        self,
        verifier: LocalVerifier,
        requirements: Mapping[str, Require] | None = None,
        *,
        default: Require | None = None,
    ) -> None:
        self.verifier = verifier
        self._policy = _Policy(requirements, default or Require())

    async def _authorize(self, method: str, metadata: Iterable[Any] | None) -> Claims | None:
        requirement = self._policy.requirement(method)
        if requirement.public:
            return None
        token = self._policy.bearer(metadata)
        verdict = await self.verifier.verify(token, requirement.audience)
        return self._policy.judge(verdict, requirement)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        loop = asyncio.get_running_loop()
        streaming_response = handler.response_streaming

        async def authorize(context: grpc.aio.ServicerContext[Any, Any]) -> Claims | None:
            try:
                return await self._authorize(method, metadata)
            except Denied as denied:
                await context.abort(denied.code, denied.details)
                raise  # abort raises; this only satisfies the type checker

        def authorize_from_thread(context: grpc.ServicerContext) -> Claims | None:
            # A sync handler on an aio server runs in a thread pool: verify on the loop.
            try:
                return asyncio.run_coroutine_threadsafe(
                    self._authorize(method, metadata), loop
                ).result()
            except Denied as denied:
                context.abort(denied.code, denied.details)
                raise

        def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(behaviour):

                async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    claims = await authorize(context)
                    if claims is not None:
                        _CLAIMS.set(claims)  # this call's own task: nothing leaks
                    async for item in behaviour(request, context):
                        yield item

                return stream
            if inspect.iscoroutinefunction(behaviour):

                async def unary(request: Any, context: Any) -> Any:
                    claims = await authorize(context)
                    if claims is not None:
                        _CLAIMS.set(claims)
                    return await behaviour(request, context)

                return unary
            return _run_sync(behaviour, authorize_from_thread, streaming_response)

        return _handler(handler, wrap)


class SyncAuthorityInterceptor(grpc.ServerInterceptor):
    """Protects a synchronous ``grpc.server`` (same rules as ``AuthorityInterceptor``)."""

    def __init__(
        self,
        verifier: SyncLocalVerifier,
        requirements: Mapping[str, Require] | None = None,
        *,
        default: Require | None = None,
    ) -> None:
        self.verifier = verifier
        self._policy = _Policy(requirements, default or Require())

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        policy = self._policy

        def authorize(context: grpc.ServicerContext) -> Claims | None:
            requirement = policy.requirement(method)
            if requirement.public:
                return None
            try:
                token = policy.bearer(metadata)
                try:
                    verdict = self.verifier.verify(token, requirement.audience)
                except TimeoutError:
                    raise Denied(
                        grpc.StatusCode.UNAVAILABLE, "token verification timed out"
                    ) from None
                return policy.judge(verdict, requirement)
            except Denied as denied:
                context.abort(denied.code, denied.details)
                raise

        streaming_response = handler.response_streaming
        return _handler(
            handler, lambda behaviour: _run_sync(behaviour, authorize, streaming_response)
        )
