"""The `authority` command: one module per command group, loaded only when chosen.

``parser`` declares every command and its arguments and imports nothing but argparse.
``dispatch.main`` parses the command line, then imports only the chosen group's module
(``authority.cli.<command>``, e.g. ``authority.cli.keys``) and calls its
``run(args, settings)``. So the operator commands, which talk to a server through
``authority_client``, never load the server stack (gRPC servers, stores, Redis, aiohttp,
structlog); ``serve``, ``migrate`` and ``kek`` load what they run. To add a command
group: declare it in ``parser`` and add a module of the same name with ``run``.
"""

from authority.cli.dispatch import main
from authority.cli.parser import build_parser

__all__ = ["build_parser", "main"]
