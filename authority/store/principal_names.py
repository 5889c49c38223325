"""The name columns every backend derives from a principal's name (migration 0006).

SQL can compute neither NFKC_Casefold nor a UTS #39 skeleton, so the backends call these
functions: on insert, and once for the existing rows inside migration 0006's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from authority.domain.errors import Unavailable
from authority.domain.principals import canonical_name, name_skeleton

log = structlog.get_logger(__name__)

# The migration that adds principals.canonical_name and principals.name_skeleton.
PRINCIPAL_NAMES_VERSION = 6
_CONFLICTS_SHOWN = 10


class MigrationRefused(Unavailable):
    """Existing data cannot be migrated as it is; the message says what to change."""


@dataclass(frozen=True, slots=True)
class NameKeys:
    """The derived columns of one existing principal. ``name_skeleton`` is None when an
    older principal already has the same skeleton: both are kept (they were created
    before look-alikes were refused), and the older one blocks new look-alikes."""

    principal_id: str
    canonical_name: str
    name_skeleton: str | None


def taken_messages(name: str) -> dict[str, str]:
    """AlreadyExists messages for the unique name columns ("table.column" keys)."""
    exists = f"a principal named {name!r} already exists"
    return {
        "principals.name": exists,
        "principals.canonical_name": f"{exists} (names are compared ignoring case and width)",
        "principals.name_skeleton": (
            f"a principal whose name looks like {name!r} already exists; choose a name "
            "that cannot be mistaken for it"
        ),
    }


def backfill_principal_names(rows: Sequence[tuple[str, str]]) -> list[NameKeys]:
    """Canonical names and skeletons for existing principals, given as (id, name) oldest
    first.

    Two principals with one canonical name (``Alice`` and ``alice``) cannot both stay: a
    login would not know which one it means. The migration is refused, naming them, so
    the operator deletes one first (see docs/runbook.md).
    """
    owners: dict[str, tuple[str, str]] = {}
    skeletons: set[str] = set()
    conflicts: list[str] = []
    keys: list[NameKeys] = []
    for principal_id, name in rows:
        canonical = canonical_name(name)
        if canonical in owners:
            other_id, other_name = owners[canonical]
            conflicts.append(
                f"{other_id} ({other_name!r}) and {principal_id} ({name!r}) are both {canonical!r}"
            )
            continue
        owners[canonical] = (principal_id, name)
        skeleton = name_skeleton(name)
        keys.append(NameKeys(principal_id, canonical, None if skeleton in skeletons else skeleton))
        skeletons.add(skeleton)
    if conflicts:
        shown = "; ".join(conflicts[:_CONFLICTS_SHOWN])
        more = len(conflicts) - _CONFLICTS_SHOWN
        raise MigrationRefused(
            f"migration {PRINCIPAL_NAMES_VERSION:04d} refused: principal names must be unique "
            f"once case and width are folded, and {len(conflicts)} pair(s) are not: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Delete one principal of each pair with the previous release"
            " (authority principals delete NAME), then start this release again."
        )
    shared = [k.principal_id for k in keys if k.name_skeleton is None]
    if shared:
        # Ids only: the operator looks them up; names stay out of logs.
        log.warning("migration.lookalike_names_kept", principal_ids=shared[:100])
    return keys
