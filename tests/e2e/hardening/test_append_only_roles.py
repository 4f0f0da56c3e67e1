"""Append-only as the running services' own database roles (``chengneng_<service>``).

Each service of a stack started with `chengneng up` connects as its own login role; this
connects as that same role to the same database and tries every way to change or remove
what the service recorded (see tests/integration/append_only.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from shared import db
from tests.conftest import Stack
from tests.e2e.hardening.support import World
from tests.integration.append_only import assert_history_cannot_be_rewritten_by, counts

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("service", ["registry", "capability", "supervision", "disclosure"])
async def test_the_running_service_role_cannot_rewrite_what_the_service_recorded(
    stack: Stack, world: World, service: str
) -> None:
    conn = await db.connect(db.app_url(stack.database_url, service, None), service)
    try:
        deadline = time.monotonic() + 60
        while not all((await counts(conn)).values()):  # the sealer signs a checkpoint every few seconds
            assert time.monotonic() < deadline, f"{service} has not sealed and signed anything: {await counts(conn)}"
            await asyncio.sleep(0.5)
        await assert_history_cannot_be_rewritten_by(conn, db.role_name(service))
    finally:
        await conn.close()
