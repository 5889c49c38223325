"""`authority migrate`: bring the configured store's schema up to date."""

from __future__ import annotations

import argparse
import asyncio
import json

from authority.config import Settings
from authority.services.installation import refuse_lost_database
from authority.store.factory import make_store


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the schema up to date (servers also do it on start, once, under a lock)."""

    async def migrate() -> int:
        # Creating the schema where a database was lost would make a new installation.
        refuse_lost_database(settings)
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
