"""`authority revoke WHAT [VALUE]`: revoke tokens, sessions, subjects or clients."""

from __future__ import annotations

import argparse

from authority.cli.common import connect, print_message, secret
from authority.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    value = args.value if args.value is not None else secret(args, f"{args.what}: ")
    with connect(args, settings) as client:
        print_message(client.revoke(**{args.what.replace("-", "_"): value}))
    return 0
