"""The storage interface every backend implements, and that one contract suite tests.

Backends translate their driver errors once, into the domain errors of
``authority.domain.errors`` (AlreadyExists, Unavailable, ...), so callers never
see a driver exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from authority.domain.audit import AuditQuery, AuditRecord
from authority.domain.clients import Client
from authority.domain.events import Event, OutboxEntry
from authority.domain.keys import KeyRecord, KeyUpdate
from authority.domain.principals import Principal
from authority.domain.revocation import Revocation
from authority.domain.sessions import RefreshRecord, Session
from authority.domain.webhooks import DeadLetter, Webhook


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """What ``Store.change_credentials`` did, in one transaction."""

    principal: Principal | None  # after the change (as it was, if deleted); None: unknown
    revocations: tuple[Revocation, ...] = ()  # recorded: the subject's, one per ended session


@dataclass(frozen=True, slots=True)
class ClientChange:
    """What ``Store.change_client`` did, in one transaction."""

    client: Client | None  # after the change (as it was, if deleted); None: unknown
    revocation: Revocation | None = None  # the client's not-before, as recorded


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token minted for a client, to commit with its event (``record_issued``): only
    while the client is enabled and still at ``generation``. ``issued_at`` is its ``iat``."""

    event: Event
    client_id: str
    generation: int
    issued_at: float


@dataclass(frozen=True, slots=True)
class RefreshState:
    """What a refresh decides on, read together in one statement: the presented token,
    its session, its successor (if consumed), the session's principal and its client's
    row (None for the built-in default client, a deleted client or principal)."""

    record: RefreshRecord
    session: Session
    successor: RefreshRecord | None
    principal: Principal | None
    client: Client | None


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a refresh writes: the presented token consumed at ``consumed_at``, its
    successor with the sealed pair, and the events, in one transaction."""

    consumed_at: datetime
    successor: RefreshRecord
    sealed: bytes
    events: Sequence[Event] = ()


T = TypeVar("T")
RefreshStep = Callable[[RefreshState | None], tuple[T, Rotation | None]]
"""A refresh's decision on what the store read (None: no such token): its answer, and
the rotation to write (None: write nothing). Pure computation, no I/O: a store may run
it on its own thread, inside its transaction (in the caller's context variables)."""


class KeyRingTransaction(Protocol):
    """Changes to the key ring made under an exclusive lock, committed together.

    Only one transaction per key ring runs at a time across every process that
    shares the store, so two replicas racing to rotate see each other's keys and
    never both create one.
    """

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, including compromised ones not yet pruned, in no particular order."""
        ...

    async def insert_key(self, key: KeyRecord) -> None:
        """Add a key. AlreadyExists if its kid is taken."""
        ...

    async def update_key(self, update: KeyUpdate) -> None:
        """Apply new schedule times (see ``apply_update``). NotFound if the key does not exist.

        Compromising a key also erases its private material.
        """
        ...

    async def delete_keys(self, kids: tuple[str, ...]) -> None:
        """Remove keys for good. Unknown kids are ignored."""
        ...

    async def add_event(self, event: Event) -> None:
        """Write ``event`` to the outbox; it commits (or rolls back) with the key ring."""
        ...

    async def rewrap_key(self, kid: str, wrapped_private_key: bytes, kek_id: str) -> None:
        """Replace a key's envelope and the id of the KEK that sealed it (KEK rotation).

        Nothing else changes: the schedule and the public key stay as they are. A
        compromised key has no private material to re-wrap, and must never get some
        back, so it is left alone. NotFound if the key does not exist.
        """
        ...


class KeyStore(Protocol):
    """The signing-key ring (consumer: the key manager)."""

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, without taking the key-ring lock (for loading and polling)."""
        ...

    async def key_ring_generation(self) -> int:
        """A number that grows with every committed key-ring transaction (cheap to poll)."""
        ...

    def key_ring_transaction(self) -> AbstractAsyncContextManager[KeyRingTransaction]:
        """An exclusive, atomic transaction over the key ring. Rolled back on exception."""
        ...


class PrincipalStore(Protocol):
    """Principals (users) and their names."""

    async def create_principal(self, principal: Principal, *, events: Sequence[Event] = ()) -> None:
        """Store a new principal. AlreadyExists if the id or the name is taken, or if the
        name looks like an existing one: the store derives ``canonical_name`` and
        ``name_skeleton`` from ``principal.name`` and both are unique.

        ``events`` (here and in every other writing method) go to the outbox in the same
        transaction as the change, and only if something changed."""
        ...

    async def get_principal_by_name(self, name: str) -> Principal | None:
        """The principal whose canonical name (``canonical_name``) is that of ``name``,
        or None: every spelling of a name finds the same principal."""
        ...

    async def get_principal(self, principal_id: str) -> Principal | None:
        """The principal with this id, or None."""
        ...

    async def update_principal(
        self,
        principal_id: str,
        *,
        password_hash: str | None = None,
        disabled: bool | None = None,
        events: Sequence[Event] = (),
    ) -> Principal | None:
        """Change the given fields; the principal after the change, or None if unknown.

        Changing the password or ``disabled`` is a credential change: the generation grows
        (see ``change_credentials`` for the whole ordered change)."""
        ...

    async def delete_principal(self, principal_id: str, *, events: Sequence[Event] = ()) -> bool:
        """True if a principal was deleted."""
        ...


class CredentialStore(Protocol):
    """Credential changes of principals, ordered with logins by the credential generation.

    ``change_credentials`` spans principals, sessions, revocations and the outbox in one
    transaction; it lives here, with its consumer's view, not in any one of them."""

    async def rehash_password(
        self, principal_id: str, *, generation: int, password_hash: str
    ) -> bool:
        """Replace the hash of the same password (stronger parameters), only while the
        principal is still at ``generation``: a password set meanwhile is never overwritten.
        The generation does not change. True if replaced."""
        ...

    async def change_credentials(
        self,
        principal_id: str,
        *,
        at: datetime,
        password_hash: str | None = None,
        disabled: bool | None = None,
        delete: bool = False,
        revocation: Revocation | None = None,
        events: Sequence[Event] = (),
    ) -> CredentialChange:
        """A credential change, atomically: the principal's generation grows (and
        ``credentials_changed_at`` becomes ``at``), the given fields change (or the row is
        deleted), and with ``revocation`` (the subject's not-before) every session of the
        subject not yet revoked is revoked and recorded as a session revocation covering all
        its tokens (``session_revocation``, expiring with ``revocation``).

        Ordered with ``create_session(..., generation=...)``: a login's session is either
        committed first, and then revoked here, or refused. With no such principal, the
        revocation (if any) is still recorded: a subject may be a client."""
        ...


class ClientStore(Protocol):
    """OAuth clients."""

    async def create_client(self, client: Client, *, events: Sequence[Event] = ()) -> None:
        """Store a new client. AlreadyExists if the id is taken."""
        ...

    async def get_client(self, client_id: str) -> Client | None: ...

    async def update_client(
        self,
        client_id: str,
        *,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        events: Sequence[Event] = (),
    ) -> Client | None:
        """Change the given fields; the client after the change, or None if unknown."""
        ...

    async def delete_client(self, client_id: str, *, events: Sequence[Event] = ()) -> bool: ...

    async def change_client(
        self,
        client_id: str,
        *,
        at: datetime,
        secret_hash: bytes | None = None,
        disabled: bool | None = None,
        allowed_claims: frozenset[str] | None = None,
        sensitive_claims: frozenset[str] | None = None,
        delete: bool = False,
        revoke_for: timedelta | None = None,
        events: Sequence[Event] = (),
        revocation_events: Callable[[Revocation], Sequence[Event]] | None = None,
    ) -> ClientChange:
        """A change of the client, atomically, under its row lock: its generation grows,
        the given fields change (or the row is deleted), and with ``revoke_for`` every
        session of the client not yet revoked is revoked and the client's not-before is
        recorded (lasting ``revoke_for`` after it) and kept as the row's ``changed_at``.
        The not-before is ``at`` or later: never before a token committed for the client
        (``record_issued``'s ``issued_until``, or a session it ends), whatever clock minted
        it. ``revocation_events(revocation)`` are written with it, after ``events``.

        Ordered with ``record_issued`` and ``create_session(..., client_generation=...)``:
        their write either commits first, and its token is covered here, or finds the new
        generation and writes nothing. With no such client the revocation (if any) is still
        recorded."""
        ...

    async def record_issued(self, issued: Sequence[IssuedToken]) -> list[bool]:
        """Commit the events of tokens minted for clients, in one transaction: each only
        while its client is enabled and at its generation (raising the row's
        ``issued_until`` to its ``iat``); the others write nothing. Per token, whether it
        was committed."""
        ...


class SessionStore(Protocol):
    """Sessions and their refresh tokens."""

    async def create_session(
        self,
        session: Session,
        first: RefreshRecord | None,
        *,
        events: Sequence[Event] = (),
        generation: int | None = None,
        client_generation: int | None = None,
    ) -> bool:
        """Store a new session with its first refresh token (None: an access-only grant,
        kept so that a credential change can revoke its token), atomically.

        With ``generation``, only while the subject is an enabled principal still at that
        credential generation (checked under a lock that orders it with
        ``change_credentials``); with ``client_generation``, only while the session's client
        is enabled and still at that generation (ordered the same way with
        ``change_client``); otherwise nothing is written and the answer is False."""
        ...

    async def find_refresh(
        self, token_hash: bytes
    ) -> tuple[RefreshRecord, Session, RefreshRecord | None] | None:
        """The refresh token, its session and its successor (if consumed), or None."""
        ...

    async def consume_refresh(
        self,
        token_hash: bytes,
        *,
        consumed_at: datetime,
        successor: RefreshRecord,
        sealed: bytes,
        events: Sequence[Event] = (),
    ) -> bool:
        """Atomically consume an unconsumed token and store its successor.

        False, with nothing changed, when the token was already consumed (a concurrent
        refresh won) or its session was revoked meanwhile.
        """
        ...

    async def consume_refresh_with(self, token_hash: bytes, step: RefreshStep[T]) -> T | None:
        """A whole refresh in as few trips as the backend allows: read the ``RefreshState``,
        run ``step`` on it, and write its rotation as ``consume_refresh`` would. The step's
        answer, or None when its rotation lost (nothing written: decide again). An
        exception from ``step`` writes nothing and propagates."""
        ...


class RevocationStore(Protocol):
    """Durable revocations (and the pruning of what they and sessions leave behind)."""

    async def record_revocation(
        self, revocation: Revocation, *, at: datetime, events: Sequence[Event] = ()
    ) -> int | None:
        """Durably record a revocation and revoke the sessions it covers, atomically.

        A jti or sid revocation already recorded is complete (``FINAL_KINDS``); a subject
        or client revocation already recorded is widened, never narrowed. A call that
        would change nothing writes nothing (no row, no event) and returns None; the
        decision is the insert's own, so of concurrent twins exactly one writes.
        Otherwise returns how many sessions were revoked by this call.
        """
        ...

    async def list_revocations(self, now: float) -> list[Revocation]:
        """Every revocation that has not expired at ``now`` (epoch seconds)."""
        ...

    async def revocations_since(self, since: datetime, now: float) -> list[Revocation]:
        """Unexpired revocations recorded (or widened) at or after ``since``: how processes
        sharing the store learn of each other's revocations without a message bus. Callers
        overlap their windows; adding a revocation twice is harmless."""
        ...

    async def prune(self, now: datetime, *, sealed_before: datetime) -> int:
        """Delete expired revocations and sessions past their absolute expiry, and wipe
        sealed successors consumed before ``sealed_before``. Returns rows deleted."""
        ...


class LockoutStore(Protocol):
    """The durable lockouts ledger of the attempt gates (``ports.attempts.LockoutLedger``)."""

    async def record_lockout(self, key: str, locked_until: float) -> None:
        """Record that the attempt key ``key`` is locked until ``locked_until`` (epoch
        seconds); an existing lock is only ever extended. Pruned once it has ended."""
        ...

    async def lockout_until(self, key: str, now: float) -> float | None:
        """When the recorded lock on ``key`` ends, or None if none is in force at ``now``."""
        ...


class EventLog(Protocol):
    """Events that come with no state change; changes write theirs with ``events=``."""

    async def append_events(self, events: Sequence[Event]) -> None:
        """Write events that come with no state change (login failed, lockout)."""
        ...


class OutboxStore(Protocol):
    """The relay's side of the outbox: claim, publish, measure, prune."""

    async def claim_unpublished(
        self, limit: int, *, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """Up to ``limit`` unpublished events in sequence order, leased to the caller until
        ``now + lease``: other relays skip them meanwhile (and take them over once the
        lease has lapsed, if the caller died before ``mark_published``)."""
        ...

    async def mark_published(self, ids: Sequence[str], *, at: datetime) -> None:
        """Record that the sink accepted these events (by event id); unknown ids are ignored."""
        ...

    async def read_outbox(self, *, after: int = 0, limit: int = 1000) -> list[OutboxEntry]:
        """Events with a sequence above ``after``, published or not, in sequence order."""
        ...

    async def outbox_published(self, ids: Sequence[str]) -> set[str]:
        """Which of these event ids are marked published."""
        ...

    async def outbox_depth(self) -> int:
        """How many events wait to be relayed (a metric: a growing depth means the relay
        is stuck or slower than the writers)."""
        ...

    async def prune_outbox(self, published_before: datetime) -> int:
        """Delete events published before ``published_before`` (relayed for good; the
        audit log keeps its own copy). Unpublished events are never deleted."""
        ...


class AuditStore(Protocol):
    """The append-only audit log."""

    async def append_audit(self, records: Sequence[AuditRecord]) -> int:
        """Append records; one already present (same event id) is skipped, so redelivery
        is harmless. Returns how many were new."""
        ...

    async def list_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """Records matching ``query``, in event-sequence order, at most ``query.limit``."""
        ...


class WebhookStore(Protocol):
    """Webhook subscriptions and their dead letters."""

    async def create_webhook(self, webhook: Webhook, *, events: Sequence[Event] = ()) -> None:
        """Store a subscription. AlreadyExists if the id is taken."""
        ...

    async def rewrap_webhook_secret(self, webhook_id: str, wrapped_secret: bytes) -> None:
        """Replace a webhook's wrapped signing secret (KEK rotation). Unknown ids are ignored."""
        ...

    async def list_webhooks(self) -> list[Webhook]:
        """Every subscription, oldest first."""
        ...

    async def delete_webhook(self, webhook_id: str, *, events: Sequence[Event] = ()) -> bool:
        """True if it existed; its dead letters go with it."""
        ...

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a failed delivery (ignored if its webhook was deleted meanwhile)."""
        ...

    async def list_dead_letters(
        self, *, webhook_id: str = "", limit: int = 100
    ) -> list[DeadLetter]:
        """Failed deliveries, oldest first, optionally of one webhook."""
        ...

    async def take_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """Remove and return one (for replay), or None if unknown."""
        ...


class Store(
    KeyStore,
    PrincipalStore,
    CredentialStore,
    ClientStore,
    SessionStore,
    RevocationStore,
    LockoutStore,
    EventLog,
    OutboxStore,
    AuditStore,
    WebhookStore,
    Protocol,
):
    """Durable state: one object per backend exposing every facet above on one connection
    pool (or file), so a change and its outbox events commit in one transaction. Only the
    wiring (``backends``, the app, the CLI) holds it; every other consumer types against the
    facets it uses.

    Constructors do no I/O; ``open`` connects and migrates, ``close`` is idempotent.
    """

    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    async def close(self) -> None:
        """Release connections. Safe to call twice; use after close raises Unavailable."""
        ...

    async def schema_version(self) -> int:
        """The number of the last applied migration."""
        ...
