"""One error hierarchy with stable codes; the API layer maps each code to a gRPC status."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable machine-readable error codes."""

    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    CONFLICT = "conflict"
    INTERNAL = "internal"


class AuthorityError(Exception):
    """Base of every error the authority raises on purpose. The message is safe to show."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AuthorityError):
    code = ErrorCode.INVALID_ARGUMENT


class Unauthenticated(AuthorityError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(AuthorityError):
    code = ErrorCode.PERMISSION_DENIED


# Finer kinds of the errors above, for answers that tell them apart (the OAuth 2.0 error
# codes of RFC 6749 section 5.2); gRPC answers them by their code like their parents.


class ClientUnauthenticated(Unauthenticated):
    """The client's own credentials failed (``invalid_client``), not the grant's."""


class GrantDisabled(PermissionDenied):
    """The grant type is switched off on this server (``unsupported_grant_type``)."""


class GrantNotAllowed(PermissionDenied):
    """The client may not use this grant type (``unauthorized_client``)."""


class ScopeNotAllowed(PermissionDenied):
    """A requested scope is outside the client's policy (``invalid_scope``)."""


class AudienceNotAllowed(PermissionDenied):
    """A requested audience is outside the client's policy (``invalid_target``)."""


class NotFound(AuthorityError):
    code = ErrorCode.NOT_FOUND


class AlreadyExists(AuthorityError):
    code = ErrorCode.ALREADY_EXISTS


class ResourceExhausted(AuthorityError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class Unavailable(AuthorityError):
    """A dependency (storage, cache) cannot be reached; retrying later may succeed."""

    code = ErrorCode.UNAVAILABLE


class Conflict(AuthorityError):
    """A concurrent change won; the operation may be retried."""

    code = ErrorCode.CONFLICT
