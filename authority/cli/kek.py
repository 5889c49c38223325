"""`authority kek id|rotate`: the key-encryption key (services/kek_rotation.py does the work)."""

from __future__ import annotations

import argparse
import asyncio
import json

from authority.config import Settings
from authority.services.kek_rotation import kek_ring, rotate_kek


def run(args: argparse.Namespace, settings: Settings) -> int:
    """KEK rotation runs against the store directly (like ``migrate``): the admin API
    never handles private keys, and the command must work whatever the servers hold."""
    ring = kek_ring(settings)
    if args.kek_command == "id":
        print(json.dumps({"kek_id": ring.current_id, "previous_kek_ids": list(ring.ids[1:])}))
        return 0
    print(json.dumps({"kek_id": ring.current_id, **asyncio.run(rotate_kek(settings, ring))}))
    return 0
