"""`authority keys list|rotate|compromise`: signing keys, over the admin API."""

from __future__ import annotations

import argparse
import sys

from authority.cli.common import connect, print_message
from authority.config import Settings
from authority.v1 import keys_pb2


def run(args: argparse.Namespace, settings: Settings) -> int:
    with connect(args, settings) as client:
        if args.keys_command == "list":
            print_message(keys_pb2.ListKeysResponse(keys=client.list_keys()))
        elif args.keys_command == "rotate":
            algorithm = (
                keys_pb2.SigningAlgorithm.Value("SIGNING_ALGORITHM_" + args.algorithm.upper())
                if args.algorithm
                else keys_pb2.SIGNING_ALGORITHM_UNSPECIFIED
            )
            print_message(client.rotate_keys(algorithm))
        else:
            kids = {*args.kid_option, *([args.kid] if args.kid is not None else [])}
            if len(kids) != 1:
                print("error: name exactly one kid to compromise", file=sys.stderr)
                return 2
            print_message(client.compromise_key(kids.pop(), args.reason))
    return 0
