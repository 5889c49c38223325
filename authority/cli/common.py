"""What the operator commands share: printing answers, reading secrets, connecting.

Operator commands talk to a running server (``--target``, default
AUTHORITY_GRPC_ADDRESS) and pick up the admin credential the same way the server
does: AUTHORITY_ADMIN_TOKEN, AUTHORITY_ADMIN_TOKEN_FILE, or the file generated in the
data directory on the embedded default.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from authority_client import AuthorityClient
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from authority.config import Settings
from authority.domain.errors import InvalidArgument
from authority.services.admin_credential import ADMIN_TOKEN_FILENAME, load_admin_secret


def print_message(message: Message) -> None:
    print(MessageToJson(message, indent=2, preserving_proto_field_name=True))


def secret(args: argparse.Namespace, prompt: str) -> str:
    """Secrets come from stdin or a prompt, never from argv (visible in `ps`)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def client_secret(args: argparse.Namespace) -> str:
    """The secret of ``--client-id`` when asked for; read after the command's own secret."""
    if not (args.client_secret_stdin or args.client_secret_prompt):
        return ""
    if not args.client_id:
        raise InvalidArgument("a client secret needs --client-id")
    if args.client_secret_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(f"client secret of {args.client_id}: ")


def _admin_token(settings: Settings) -> str | None:
    generated = settings.data_dir / ADMIN_TOKEN_FILENAME
    if not (settings.admin_token or settings.admin_token_file or generated.exists()):
        return None
    return load_admin_secret(
        env_value=settings.admin_token,
        file=settings.admin_token_file,
        generate_into=settings.data_dir,
    )


def connect(args: argparse.Namespace, settings: Settings) -> AuthorityClient:
    return AuthorityClient(args.target or settings.grpc_address, admin_token=_admin_token(settings))
