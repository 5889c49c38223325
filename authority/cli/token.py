"""`authority token issue|refresh|exchange|verify`: tokens, over the token API."""

from __future__ import annotations

import argparse
from pathlib import Path

from authority.cli.common import client_secret, connect, print_message, secret
from authority.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(args, settings) as client:
        if args.token_command == "issue":
            password = secret(args, "password: ")
            pair = client.issue_with_password(
                args.principal,
                password,
                audience=args.audience,
                scope=args.scope,
                client_id=args.client_id,
                client_secret=client_secret(args),
            )
        elif args.token_command == "refresh":
            refresh_token = secret(args, "refresh token: ")
            pair = client.refresh(
                refresh_token, client_id=args.client_id, client_secret=client_secret(args)
            )
        elif args.token_command == "exchange":
            actor = _read_token(args.actor_token_file) if args.actor_token_file else ""
            pair = client.exchange(
                args.client_id,
                secret(args, "client secret: "),
                _read_token(args.subject_token_file),
                actor_token=actor,
                audience=args.audience,
                scope=args.scope,
            ).tokens
        else:
            response = client.verify(args.token, audience=args.audience)
            print_message(response)
            return 0 if response.claims.subject else 3
        if args.raw:
            print(pair.access_token)
        else:
            print_message(pair)
        return 0


def _read_token(path: str) -> str:
    """A token from a file (argv would show it in `ps`); surrounding whitespace dropped."""
    return Path(path).read_text(encoding="utf-8").strip()
