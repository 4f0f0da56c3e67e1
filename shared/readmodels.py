"""Rebuilding a service's read models from its own events: one loop for every service."""

from __future__ import annotations

from collections.abc import Sequence

from shared import store
from shared.commands import Projector
from shared.db import Connection
from shared.messages import EventRegistry


async def rebuild(
    conn: Connection, tables: Sequence[str], events: EventRegistry, project: Projector, batch_size: int = 1000
) -> int:
    """Empty ``tables`` and project every stored event again, in one transaction.

    Returns how many events were applied. Reads through the commit horizon, like every tail.
    """
    count = 0
    async with conn.transaction():
        for table in tables:
            await conn.execute(f"DELETE FROM {table}")
        async for batch in store.replay(conn, events, batch_size):
            for envelope, event in batch:
                await project(conn, envelope, event)
                count += 1
    return count
