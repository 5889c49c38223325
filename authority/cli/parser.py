"""Every command of `authority` and its arguments; argparse only, so it loads in no time.

``dispatch`` runs the module named after the chosen command (``args.command``).
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """The `authority` command: run the server, and operate it over gRPC.

Operator commands talk to a running server (``--target``, default
AUTHORITY_GRPC_ADDRESS) and pick up the admin credential the same way the
server does: AUTHORITY_ADMIN_TOKEN, AUTHORITY_ADMIN_TOKEN_FILE, or the file
generated in the data directory on the embedded default.
"""

# The grant types a client may be given (clients.py maps them to the contract's enum).
GRANT_NAMES = ("password", "client_credentials", "token_exchange", "refresh_token")


def _stdin_flag(parser: argparse.ArgumentParser, what: str = "the password") -> None:
    parser.add_argument("--password-stdin", action="store_true", help=f"read {what} from stdin")


def _client_secret_flags(parser: argparse.ArgumentParser) -> None:
    """A confidential client's secret: from stdin or a prompt, never from argv."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--client-secret-stdin",
        action="store_true",
        help="read the --client-id's secret from stdin (the line after the password or "
        "refresh token when that comes from stdin too)",
    )
    source.add_argument(
        "--client-secret-prompt",
        action="store_true",
        help="ask for the --client-id's secret on the terminal",
    )


def _add_keys(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser("list", help="every known key and its state")
    rotate = keys_commands.add_parser("rotate", help="publish a new key now (planned rotation)")
    rotate.add_argument("--algorithm", choices=["eddsa", "es256", "rs256"])
    compromise = keys_commands.add_parser(
        "compromise", help="remove a key at once (a kid starting with '-' is taken as is)"
    )
    compromise.add_argument("kid", nargs="?")
    compromise.add_argument(
        "--kid", dest="kid_option", action="append", default=[], help="the kid (as the positional)"
    )
    compromise.add_argument("--reason", default="")


def _add_kek(commands: Commands) -> None:
    kek = commands.add_parser("kek", help="the key-encryption key (runs against the store)")
    kek_commands = kek.add_subparsers(dest="kek_command", required=True)
    kek_commands.add_parser("id", help="print the configured KEK's id (never the secret)")
    kek_commands.add_parser(
        "rotate",
        help="re-wrap every private key under AUTHORITY_KEK; AUTHORITY_KEK_PREVIOUS opens the rest",
    )


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
    sessions = set_password.add_mutually_exclusive_group()
    sessions.add_argument(
        "--keep-sessions",
        action="store_true",
        help="keep the principal's existing sessions (by default every one is revoked)",
    )
    # Deprecated: revoking is the default now; still accepted so existing scripts run.
    sessions.add_argument("--revoke-sessions", action="store_true", help=argparse.SUPPRESS)
    _stdin_flag(set_password)


def _add_clients(commands: Commands) -> None:
    clients = commands.add_parser("clients", help="OAuth clients (admin)")
    client_commands = clients.add_subparsers(dest="clients_command", required=True)
    create = client_commands.add_parser(
        "create", help="register a client; a confidential client's secret is printed once"
    )
    create.add_argument("id")
    create.add_argument("--public", action="store_true", help="no secret (mobile/SPA)")
    create.add_argument("--grant", action="append", choices=sorted(GRANT_NAMES), required=True)
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
        ("disable", "disable a client and revoke its tokens"),
        ("enable", "enable a client again"),
        ("delete", "delete a client and revoke its tokens"),
    ):
        client_commands.add_parser(name, help=text).add_argument("id")
    rotate = client_commands.add_parser(
        "rotate-secret",
        help="replace a confidential client's secret (printed once) and revoke its tokens",
    )
    rotate.add_argument("id")
    rotate.add_argument(
        "--keep-tokens",
        action="store_true",
        help="keep the tokens and sessions issued through the client (a routine rotation)",
    )


def _add_token(commands: Commands) -> None:
    token = commands.add_parser("token", help="issue, refresh, exchange or verify tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    issue = token_commands.add_parser("issue", help="issue a token with the password grant")
    issue.add_argument("--principal", required=True)
    issue.add_argument("--client-id", default="", help="the client logging in (default: built-in)")
    _client_secret_flags(issue)
    issue.add_argument("--audience", action="append", default=[])
    issue.add_argument("--scope", action="append", default=[])
    issue.add_argument("--raw", action="store_true", help="print only the access token")
    _stdin_flag(issue)
    refresh = token_commands.add_parser("refresh", help="exchange a refresh token")
    refresh.add_argument("--client-id", default="", help="the client the session belongs to")
    _client_secret_flags(refresh)
    refresh.add_argument("--raw", action="store_true", help="print only the access token")
    _stdin_flag(refresh, "the refresh token")
    exchange = token_commands.add_parser(
        "exchange",
        help="RFC 8693 token exchange: a confidential client trades a principal's access "
        "token for a narrower one (tokens are read from files, never from argv)",
    )
    exchange.add_argument("--client-id", required=True)
    exchange.add_argument(
        "--subject-token-file", required=True, help="file holding the subject access token"
    )
    exchange.add_argument(
        "--actor-token-file", help="file holding the actor's access token (sets `act`)"
    )
    exchange.add_argument("--audience", action="append", default=[])
    exchange.add_argument("--scope", action="append", default=[])
    exchange.add_argument("--raw", action="store_true", help="print only the access token")
    _stdin_flag(exchange, "the client secret")
    verify = token_commands.add_parser("verify", help="verify a token (exit 3 when invalid)")
    verify.add_argument("token")
    verify.add_argument("--audience", action="append", default=[])


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


def _add_audit(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="list the audit log (admin)")
    audit.add_argument("--target-id", default="", help="only records about this id")
    audit.add_argument("--action", default="", help="only this action, e.g. login.failed")
    audit.add_argument("--since", help="only records at or after this ISO 8601 instant")
    audit.add_argument("--until", help="only records before this ISO 8601 instant")
    audit.add_argument("--page-size", type=int, default=0, help="records per page (max 500)")
    audit.add_argument("--page-token", default="", help="continue after a previous page")
    audit.add_argument("--all", action="store_true", help="follow every page")


# `keys compromise`'s own options; anything else there that starts with "-" is a kid.
_COMPROMISE_OPTIONS = ("--kid", "--reason", "--help", "-h")
_COMPROMISE_TAKES_VALUE = ("--kid", "--reason")


def _is_compromise_option(arg: str) -> bool:
    """An option string of `keys compromise`, or an abbreviation argparse would expand."""
    name = arg.split("=", 1)[0]
    if name in _COMPROMISE_OPTIONS:
        return True
    return (
        name.startswith("--")
        and len(name) > 2
        and any(o.startswith(name) for o in _COMPROMISE_OPTIONS)
    )


def kid_arguments(argv: list[str]) -> list[str]:
    """Spell a kid that starts with "-" (one in 64 does) as ``--kid=KID`` for argparse.

    A kid is base64url, so about one in 64 begins with "-", and argparse takes such a
    word for an unknown option. After ``keys compromise`` every word starting with "-"
    that is none of the command's options, and the value after ``--kid`` or ``--reason``,
    is rewritten to ``--kid=WORD`` (or ``--reason=WORD``); ``--`` keeps working.
    """
    start = _compromise_start(argv)
    if start is None:
        return argv
    out, rest = argv[:start], argv[start:]
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg == "--":
            out.extend(rest[index:])
            break
        if arg in _COMPROMISE_TAKES_VALUE and index + 1 < len(rest):
            out.append(f"{arg}={rest[index + 1]}")
            index += 2
            continue
        if arg.startswith("-") and arg != "-" and not _is_compromise_option(arg):
            out.append(f"--kid={arg}")
        else:
            out.append(arg)
        index += 1
    return out


def _compromise_start(argv: list[str]) -> int | None:
    """The index after ``keys compromise``, past the global options, or None."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        # The global options: --target takes a value (unless spelt --target=VALUE).
        index += 1 if "=" in argv[index] or argv[index] in ("-h", "--help") else 2
    if argv[index : index + 2] == ["keys", "compromise"]:
        return index + 2
    return None


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, read only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import version  # noqa: PLC0415 (only when asked for)

        print(f"authority {version('authority')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authority", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version)
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
    serve_parser.add_argument(
        "--init",
        action="store_true",
        help="allow creating a new, empty installation where the data directory still"
        " holds a KEK or admin token but the database is missing (AUTHORITY_ALLOW_FRESH_INSTALL)",
    )
    commands.add_parser("migrate", help="apply pending schema migrations to the configured store")
    for add in (_add_keys, _add_kek, _add_principals, _add_clients, _add_token, _add_revoke):
        add(commands)
    _add_audit(commands)
    commands.add_parser("jwks", help="print the published JWKS")
    return parser
