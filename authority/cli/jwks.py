"""`authority jwks`: print the published JWKS."""

from __future__ import annotations

import argparse

from authority.cli.common import connect
from authority.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(args, settings) as client:
        print(client.jwks().jwks_json)
    return 0
