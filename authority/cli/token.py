"""`authority token issue|refresh|verify`: tokens, over the token API."""

from __future__ import annotations

import argparse

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
        else:
            response = client.verify(args.token, audience=args.audience)
            print_message(response)
            return 0 if response.claims.subject else 3
        if args.raw:
            print(pair.access_token)
        else:
            print_message(pair)
        return 0
