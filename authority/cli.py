"""The `authority` command: run the server, and operate it over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable

import grpc
from authority_client import AuthorityClient
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from authority.app import serve
from authority.config import ConfigError, Settings
from authority.domain.errors import AuthorityError
from authority.log_setup import configure_logging
from authority.services.admin_credential import ADMIN_TOKEN_FILENAME, load_admin_secret
from authority.v1 import keys_pb2


def _print(message: Message) -> None:
    print(MessageToJson(message, indent=2, preserving_proto_field_name=True))


def _password(args: argparse.Namespace, prompt: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def _admin_token(settings: Settings) -> str | None:
    generated = settings.data_dir / ADMIN_TOKEN_FILENAME
    if not (settings.admin_token or settings.admin_token_file or generated.exists()):
        return None
    return load_admin_secret(
        env_value=settings.admin_token,
        file=settings.admin_token_file,
        generate_into=settings.data_dir,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    asyncio.run(serve(settings))
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    with AuthorityClient(
        args.target or settings.grpc_address, admin_token=_admin_token(settings)
    ) as client:
        if args.keys_command == "list":
            _print(keys_pb2.ListKeysResponse(keys=client.list_keys()))
        elif args.keys_command == "rotate":
            algorithm = (
                keys_pb2.SigningAlgorithm.Value("SIGNING_ALGORITHM_" + args.algorithm.upper())
                if args.algorithm
                else keys_pb2.SIGNING_ALGORITHM_UNSPECIFIED
            )
            _print(client.rotate_keys(algorithm))
        else:
            _print(client.compromise_key(args.kid, args.reason))
    return 0


def cmd_principals(args: argparse.Namespace, settings: Settings) -> int:
    with AuthorityClient(
        args.target or settings.grpc_address, admin_token=_admin_token(settings)
    ) as client:
        if args.principals_command == "create":
            _print(client.create_principal(args.name, _password(args, "password: ")))
        else:
            _print(client.get_principal(args.name))
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    with AuthorityClient(args.target or settings.grpc_address) as client:
        if args.token_command == "issue":
            pair = client.issue_with_password(
                args.principal,
                _password(args, "password: "),
                audience=args.audience,
                scope=args.scope,
            )
            if args.raw:
                print(pair.access_token)
            else:
                _print(pair)
            return 0
        response = client.verify(args.token, audience=args.audience)
        _print(response)
        return 0 if response.claims.subject else 3


def cmd_jwks(args: argparse.Namespace, settings: Settings) -> int:
    with AuthorityClient(args.target or settings.grpc_address) as client:
        print(client.jwks().jwks_json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description=__doc__)
    parser.add_argument(
        "--target", help="gRPC address of the server (default: AUTHORITY_GRPC_ADDRESS)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server until SIGTERM/SIGINT")
    serve.set_defaults(handler=cmd_serve)

    keys = commands.add_parser("keys", help="signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser("list", help="every known key and its state")
    rotate = keys_commands.add_parser("rotate", help="publish a new key now (planned rotation)")
    rotate.add_argument("--algorithm", choices=["eddsa", "es256", "rs256"])
    compromise = keys_commands.add_parser("compromise", help="remove a key at once")
    compromise.add_argument("kid")
    compromise.add_argument("--reason", default="")
    keys.set_defaults(handler=cmd_keys)

    principals = commands.add_parser("principals", help="principals (admin)")
    principal_commands = principals.add_subparsers(dest="principals_command", required=True)
    create = principal_commands.add_parser("create", help="create a principal with a password")
    create.add_argument("name")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    get = principal_commands.add_parser("get", help="show a principal")
    get.add_argument("name")
    principals.set_defaults(handler=cmd_principals)

    token = commands.add_parser("token", help="issue or verify access tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser("issue", help="issue a token with the password grant")
    issue.add_argument("--principal", required=True)
    issue.add_argument("--audience", action="append", default=[])
    issue.add_argument("--scope", action="append", default=[])
    issue.add_argument("--password-stdin", action="store_true")
    issue.add_argument("--raw", action="store_true", help="print only the access token")
    verify = token_commands.add_parser("verify", help="verify a token (exit 3 when invalid)")
    verify.add_argument("token")
    verify.add_argument("--audience", action="append", default=[])
    token.set_defaults(handler=cmd_token)

    jwks = commands.add_parser("jwks", help="print the published JWKS")
    jwks.set_defaults(handler=cmd_jwks)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings.load())
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except AuthorityError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else str(error)
        print(f"error: {code.name if code else 'RPC'}: {details}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
