"""The entry point: parse the command line, then load and run only the chosen command."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

import grpc

from authority.cli.parser import build_parser, kid_arguments
from authority.config import ConfigError, Settings
from authority.domain.errors import AuthorityError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(kid_arguments(sys.argv[1:] if argv is None else argv))
    # Only the chosen command's module is imported: see the package docstring.
    command = importlib.import_module(f"authority.cli.{args.command}")
    handler: Callable[[argparse.Namespace, Settings], int] = command.run
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
