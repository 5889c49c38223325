"""The `authority` command: run the server, and operate it over gRPC.

Operator commands talk to a running server (``--target``, default
AUTHORITY_GRPC_ADDRESS) and pick up the admin credential the same way the
server does: AUTHORITY_ADMIN_TOKEN, AUTHORITY_ADMIN_TOKEN_FILE, or the file
generated in the data directory on the embedded default.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

import grpc
from authority_client import AuthorityClient
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from authority.app import serve
from authority.config import ConfigError, Settings, parse_duration
from authority.domain.errors import AuthorityError
from authority.observability.logging import configure_logging
from authority.services.admin_credential import ADMIN_TOKEN_FILENAME, load_admin_secret
from authority.services.kek_rotation import kek_ring, rotate_kek
from authority.store.factory import make_store
from authority.supervisor import Supervisor
from authority.v1 import admin_pb2, keys_pb2

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

GRANTS = {
    "password": admin_pb2.GRANT_TYPE_PASSWORD,
    "client_credentials": admin_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
    "token_exchange": admin_pb2.GRANT_TYPE_TOKEN_EXCHANGE,
    "refresh_token": admin_pb2.GRANT_TYPE_REFRESH_TOKEN,
}


def _print(message: Message) -> None:
    print(MessageToJson(message, indent=2, preserving_proto_field_name=True))


def _secret(args: argparse.Namespace, prompt: str) -> str:
    """Secrets come from stdin or a prompt, never from argv (visible in `ps`)."""
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


def _connect(args: argparse.Namespace, settings: Settings) -> AuthorityClient:
    return AuthorityClient(args.target or settings.grpc_address, admin_token=_admin_token(settings))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers > 1:
        return Supervisor(settings, args.workers).run()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    asyncio.run(serve(settings))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the schema up to date (servers also do it on start, once, under a lock)."""

    async def migrate() -> int:
        store = make_store(settings.database_url, settings.database_path)
        await store.open()
        try:
            return await store.schema_version()
        finally:
            await store.close()

    version = asyncio.run(migrate())
    backend = "postgresql" if settings.database_url else f"sqlite ({settings.database_path})"
    print(json.dumps({"schema_version": version, "backend": backend}))
    return 0


def cmd_kek(args: argparse.Namespace, settings: Settings) -> int:
    """KEK rotation runs against the store directly (like ``migrate``): the admin API
    never handles private keys, and the command must work whatever the servers hold."""
    ring = kek_ring(settings)
    if args.kek_command == "id":
        print(json.dumps({"kek_id": ring.current_id, "previous_kek_ids": list(ring.ids[1:])}))
        return 0
    print(json.dumps({"kek_id": ring.current_id, **asyncio.run(rotate_kek(settings, ring))}))
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(args, settings) as client:
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
            kid = args.kid_option or args.kid
            if not kid:
                print("error: name the kid to compromise (--kid KID)", file=sys.stderr)
                return 2
            _print(client.compromise_key(kid, args.reason))
    return 0


def cmd_principals(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(args, settings) as client:
        command = args.principals_command
        if command == "create":
            _print(client.create_principal(args.name, _secret(args, "password: ")))
        elif command == "get":
            _print(client.get_principal(args.name))
        elif command in {"disable", "enable"}:
            _print(client.set_principal_disabled(args.name, command == "disable"))
        elif command == "set-password":
            _print(
                client.set_password(
                    args.name,
                    _secret(args, "new password: "),
                    revoke_sessions=args.revoke_sessions,
                )
            )
        else:
            deleted = client.delete_principal(args.name)
            print("deleted" if deleted else "no such principal")
    return 0


def cmd_clients(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(args, settings) as client:
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
            _print(client.create_client(policy))
        elif command == "get":
            _print(client.get_client(args.id))
        elif command == "set-claims":
            _print(
                client.set_client_allowed_claims(
                    args.id, args.allow_claim, args.allow_sensitive_claim
                )
            )
        elif command == "rotate-secret":
            print(client.rotate_client_secret(args.id))
        elif command in {"disable", "enable"}:
            _print(client.set_client_disabled(args.id, command == "disable"))
        else:
            print("deleted" if client.delete_client(args.id) else "no such client")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(args, settings) as client:
        if args.token_command == "issue":
            pair = client.issue_with_password(
                args.principal,
                _secret(args, "password: "),
                audience=args.audience,
                scope=args.scope,
                client_id=args.client_id,
            )
        elif args.token_command == "refresh":
            pair = client.refresh(_secret(args, "refresh token: "), client_id=args.client_id)
        else:
            response = client.verify(args.token, audience=args.audience)
            _print(response)
            return 0 if response.claims.subject else 3
        if args.raw:
            print(pair.access_token)
        else:
            _print(pair)
        return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    value = args.value if args.value is not None else _secret(args, f"{args.what}: ")
    with _connect(args, settings) as client:
        _print(client.revoke(**{args.what.replace("-", "_"): value}))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """One JSON object per line, oldest first; ``--all`` follows every page, else the
    next page's token (if any) goes to stderr."""
    with _connect(args, settings) as client:
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


def _add_audit(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="list the audit log (admin)")
    audit.add_argument("--target-id", default="", help="only records about this id")
    audit.add_argument("--action", default="", help="only this action, e.g. login.failed")
    audit.add_argument("--since", help="only records at or after this ISO 8601 instant")
    audit.add_argument("--until", help="only records before this ISO 8601 instant")
    audit.add_argument("--page-size", type=int, default=0, help="records per page (max 500)")
    audit.add_argument("--page-token", default="", help="continue after a previous page")
    audit.add_argument("--all", action="store_true", help="follow every page")
    audit.set_defaults(handler=cmd_audit)


def cmd_jwks(args: argparse.Namespace, settings: Settings) -> int:
    with _connect(args, settings) as client:
        print(client.jwks().jwks_json)
    return 0


def _stdin_flag(parser: argparse.ArgumentParser, what: str = "the password") -> None:
    parser.add_argument("--password-stdin", action="store_true", help=f"read {what} from stdin")


def _add_keys(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser("list", help="every known key and its state")
    rotate = keys_commands.add_parser("rotate", help="publish a new key now (planned rotation)")
    rotate.add_argument("--algorithm", choices=["eddsa", "es256", "rs256"])
    compromise = keys_commands.add_parser(
        "compromise",
        help="remove a key at once (a kid may start with '-': use --kid KID, or -- KID)",
    )
    compromise.add_argument("kid", nargs="?")
    compromise.add_argument("--kid", dest="kid_option", help="the kid (safe when it starts with -)")
    compromise.add_argument("--reason", default="")
    keys.set_defaults(handler=cmd_keys)


def _add_kek(commands: Commands) -> None:
    kek = commands.add_parser("kek", help="the key-encryption key (runs against the store)")
    kek_commands = kek.add_subparsers(dest="kek_command", required=True)
    kek_commands.add_parser("id", help="print the configured KEK's id (never the secret)")
    kek_commands.add_parser(
        "rotate",
        help="re-wrap every private key under AUTHORITY_KEK; AUTHORITY_KEK_PREVIOUS opens the rest",
    )
    kek.set_defaults(handler=cmd_kek)


def _add_principals(commands: Commands) -> None:
    principals = commands.add_parser("principals", help="principals (admin)")
    principal_commands = principals.add_subparsers(dest="principals_command", required=True)
    create = principal_commands.add_parser("create", help="create a principal with a password")
    create.add_argument("name")
    _stdin_flag(create)
    for name, text in (
        ("get", "show a principal"),
        ("disable", "disable a principal and revoke all its tokens"),
        ("enable", "enable a principal again"),
        ("delete", "delete a principal and revoke all its tokens"),
    ):
        principal_commands.add_parser(name, help=text).add_argument("name")
    set_password = principal_commands.add_parser("set-password", help="replace a password")
    set_password.add_argument("name")
    set_password.add_argument(
        "--revoke-sessions", action="store_true", help="also log the principal out everywhere"
    )
    _stdin_flag(set_password)
    principals.set_defaults(handler=cmd_principals)


def _add_clients(commands: Commands) -> None:
    clients = commands.add_parser("clients", help="OAuth clients (admin)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser(
        "create", help="register a client; a confidential client's secret is printed once"
    )
    create.add_argument("id")
    create.add_argument("--public", action="store_true", help="no secret (mobile/SPA)")
    create.add_argument("--grant", action="append", choices=sorted(GRANTS), required=True)
    create.add_argument("--audience", action="append", required=True)
    create.add_argument("--scope", action="append", default=[])
    create.add_argument("--default-scope", action="append", default=[])
    create.add_argument("--access-token-ttl", help="e.g. 5m (at most the server's)")
    set_claims = client_commands.add_parser(
        "set-claims", help="replace the claim names the client may set in token exchange"
    )
    set_claims.add_argument("id")
    for parser in (create, set_claims):
        parser.add_argument(
            "--allow-claim",
            action="append",
            default=[],
            metavar="NAME",
            help="a claim name the client may set in token exchange (repeatable)",
        )
        parser.add_argument(
            "--allow-sensitive-claim",
            action="append",
            default=[],
            metavar="NAME",
            help="a security-sensitive claim name (roles, groups, act, cnf, acr, ...) the "
            "client may set: relying parties may trust it, so only for trusted clients",
        )
    for name, text in (
        ("get", "show a client's policy"),
        ("rotate-secret", "replace a confidential client's secret (printed once)"),
        ("disable", "disable a client and revoke its tokens"),
        ("enable", "enable a client again"),
        ("delete", "delete a client and revoke its tokens"),
    ):
        client_commands.add_parser(name, help=text).add_argument("id")
    clients.set_defaults(handler=cmd_clients)


def _add_token(commands: Commands) -> None:
    token = commands.add_parser("token", help="issue, refresh or verify tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser("issue", help="issue a token with the password grant")
    issue.add_argument("--principal", required=True)
    issue.add_argument("--client-id", default="")
    issue.add_argument("--audience", action="append", default=[])
    issue.add_argument("--scope", action="append", default=[])
    issue.add_argument("--raw", action="store_true", help="print only the access token")
    _stdin_flag(issue)
    refresh = token_commands.add_parser("refresh", help="exchange a refresh token")
    refresh.add_argument("--client-id", default="")
    refresh.add_argument("--raw", action="store_true", help="print only the access token")
    _stdin_flag(refresh, "the refresh token")
    verify = token_commands.add_parser("verify", help="verify a token (exit 3 when invalid)")
    verify.add_argument("token")
    verify.add_argument("--audience", action="append", default=[])
    token.set_defaults(handler=cmd_token)


def _add_revoke(commands: Commands) -> None:
    revoke = commands.add_parser(
        "revoke", help="revoke tokens (session, subject, client and token-id need admin)"
    )
    revoke.add_argument(
        "what",
        choices=["access-token", "refresh-token", "session-id", "subject", "client-id", "token-id"],
    )
    revoke.add_argument("value", nargs="?", help="omit for tokens, to read them from stdin")
    _stdin_flag(revoke, "the value")
    revoke.set_defaults(handler=cmd_revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description=__doc__)
    parser.add_argument(
        "--target", help="gRPC address of the server (default: AUTHORITY_GRPC_ADDRESS)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the server until SIGTERM/SIGINT")
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the ports (SO_REUSEPORT), e.g. one per core",
    )
    serve_parser.set_defaults(handler=cmd_serve)
    commands.add_parser(
        "migrate", help="apply pending schema migrations to the configured store"
    ).set_defaults(handler=cmd_migrate)
    for add in (_add_keys, _add_kek, _add_principals, _add_clients, _add_token, _add_revoke):
        add(commands)
    _add_audit(commands)
    commands.add_parser("jwks", help="print the published JWKS").set_defaults(handler=cmd_jwks)
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
