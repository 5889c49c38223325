"""`authority principals ...`: principals, over the admin API."""

from __future__ import annotations

import argparse

from authority.cli.common import connect, print_message, secret
from authority.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(args, settings) as client:
        command = args.principals_command
        if command == "create":
            print_message(client.create_principal(args.name, secret(args, "password: ")))
        elif command == "get":
            print_message(client.get_principal(args.name))
        elif command in {"disable", "enable"}:
            print_message(client.set_principal_disabled(args.name, command == "disable"))
        elif command == "set-password":
            print_message(
                client.set_password(
                    args.name,
                    secret(args, "new password: "),
                    keep_sessions=args.keep_sessions,
                )
            )
        else:
            deleted = client.delete_principal(args.name)
            print("deleted" if deleted else "no such principal")
    return 0
