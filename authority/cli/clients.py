"""`authority clients ...`: OAuth clients, over the admin API."""

from __future__ import annotations

import argparse

from authority.cli.common import connect, print_message
from authority.cli.parser import GRANT_NAMES
from authority.config import Settings, parse_duration
from authority.v1 import admin_pb2

GRANTS = {name: admin_pb2.GrantType.Value("GRANT_TYPE_" + name.upper()) for name in GRANT_NAMES}


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(args, settings) as client:
        command = args.clients_command
        if command == "create":
            policy = admin_pb2.Client(
                id=args.id,
                confidential=not args.public,
                grant_types=[GRANTS[g] for g in args.grant],
                audiences=args.audience,
                scopes=args.scope,
                default_scopes=args.default_scope,
                allowed_claims=args.allow_claim,
                allowed_sensitive_claims=args.allow_sensitive_claim,
            )
            if args.access_token_ttl:
                policy.access_token_ttl.FromTimedelta(parse_duration(args.access_token_ttl))
            print_message(client.create_client(policy))
        elif command == "get":
            print_message(client.get_client(args.id))
        elif command == "set-claims":
            print_message(
                client.set_client_allowed_claims(
                    args.id, args.allow_claim, args.allow_sensitive_claim
                )
            )
        elif command == "rotate-secret":
            print(client.rotate_client_secret(args.id, keep_tokens=args.keep_tokens))
        elif command in {"disable", "enable"}:
            print_message(client.set_client_disabled(args.id, command == "disable"))
        else:
            print("deleted" if client.delete_client(args.id) else "no such client")
    return 0
