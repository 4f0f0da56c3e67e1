"""Keep a background loop (relay, consumer) alive across broker and database failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def keep_running(step: Callable[[], Awaitable[None]], what: str, *, pause_s: float = 1.0, **context: Any) -> None:
    """Run ``step`` again after any failure, until the task itself is cancelled."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling() > 0:
                raise
            # aiokafka cancels in-flight futures when a broker connection drops: that is a
            # broker failure to recover from, not a request to stop.
            log.warning(f"{what}: kafka client futures cancelled; reconnecting", **context)
        except Exception:
            log.exception(f"{what} failed; retrying", **context)
        await asyncio.sleep(pause_s)
