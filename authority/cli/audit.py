"""`authority audit`: the audit log, page by page, one JSON object a line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from google.protobuf.json_format import MessageToJson

from authority.cli.common import connect
from authority.config import ConfigError, Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    """One JSON object per line, oldest first; ``--all`` follows every page, else the
    next page's token (if any) goes to stderr."""
    with connect(args, settings) as client:
        token = args.page_token
        while True:
            page = client.list_audit_events(
                target=args.target_id,
                action=args.action,
                start_time=_instant(args.since),
                end_time=_instant(args.until),
                page_size=args.page_size,
                page_token=token,
            )
            for event in page.events:
                print(MessageToJson(event, indent=None, preserving_proto_field_name=True))
            token = page.next_page_token
            if not token or not args.all:
                break
        if token:
            print(f"next page: --page-token {token}", file=sys.stderr)
    return 0


def _instant(text: str | None) -> datetime | None:
    """An ISO 8601 instant; one without an offset is taken as UTC."""
    if not text:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"not an ISO 8601 instant: {text!r}") from exc
    return instant if instant.utcoffset() is not None else instant.replace(tzinfo=UTC)
