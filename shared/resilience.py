"""Keep a background loop (relay, sealer, consumer) alive across broker and database failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter

from shared import db

log = structlog.get_logger(__name__)

T = TypeVar("T")

RESTARTS = Counter("chengneng_background_restarts_total", "Background loops restarted after a failure", ["what"])

HEALTHY_RUN_S = 30.0
"""A step that ran this long before failing starts over from the shortest pause."""


async def keep_running(
    step: Callable[[], Awaitable[None]], what: str, *, pause_s: float = 1.0, max_pause_s: float = 5.0, **context: Any
) -> None:
    """Run ``step`` again after any failure, until the task itself is cancelled.

    The pause doubles while the step keeps failing at once (a database or broker that is
    away), up to ``max_pause_s``, so a long outage costs a log line every few seconds
    and recovery is noticed within ``max_pause_s`` of it.
    """
    pause = pause_s
    while True:
        began = time.monotonic()
        try:
            await step()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling() > 0:
                raise
            # aiokafka cancels in-flight futures when a broker connection drops: that is a
            # broker failure to recover from, not a request to stop.
            log.warning(f"{what}: kafka client futures cancelled; reconnecting", **context)
        except Exception as exc:
            if db.unavailable(exc) or _broker_unavailable(exc):
                log.warning(f"{what}: database or broker unavailable; retrying", error=repr(exc), **context)
            else:
                log.exception(f"{what} failed; retrying", **context)
        RESTARTS.labels(what).inc()
        if time.monotonic() - began >= HEALTHY_RUN_S:
            pause = pause_s
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_pause_s)


def _broker_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaConnectionError) or (isinstance(exc, KafkaError) and bool(exc.retriable))


class DatabaseAway(RuntimeError):
    """The database stayed unavailable longer than the caller would wait."""


async def wait_out_database(
    call: Callable[[], Awaitable[T]], what: str, *, max_wait_s: float | None = None, **context: Any
) -> T:
    """Run ``call``, and again while the database is unavailable: an outage is never the
    failure of the work in hand. Other errors are raised at once; after ``max_wait_s`` (never,
    by default) ``DatabaseAway`` is. The pause grows from 1 s to 5 s."""
    waiting_since: float | None = None
    while True:
        try:
            return await call()
        except Exception as exc:
            if not db.unavailable(exc):
                raise
            waiting_since = waiting_since or time.monotonic()
            waited = time.monotonic() - waiting_since
            if max_wait_s is not None and waited > max_wait_s:
                raise DatabaseAway(f"database unavailable for {waited:.0f} s") from exc
            log.warning(f"{what}: database unavailable; waiting for it", error=repr(exc), **context)
            await asyncio.sleep(min(1.0 + waited / 5, 5.0))
