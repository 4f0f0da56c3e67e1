"""Process managers: reactions of one service to another service's events.

A policy is a pure function from an incoming event to the commands this service should
run (``Reaction``). The consumer runs them through the service's own deciders inside the
inbox transaction, so a reaction happens exactly once however often the event arrives;
the resulting events carry the incoming event's correlation id, and its id as causation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from shared.commands import Aggregate, EventStore
from shared.consumer import Handler
from shared.db import Connection
from shared.errors import NotFound
from shared.jurisdiction import CENTRAL
from shared.kafka import IncomingEvent
from shared.messages import Command
from shared.principal import Principal, Role

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Reaction:
    """Run ``command`` on ``stream_id``; ``if_exists`` skips it when the stream is empty."""

    aggregate: Aggregate[Any]
    stream_id: str
    command: Command
    if_exists: bool = False


Policy = Callable[[IncomingEvent], list[Reaction]]


def system_principal(service: str) -> Principal:
    """Who a service's reactions are recorded as: the service itself, at the central level."""
    return Principal(
        subject=f"{service}-policy", organisation=f"chengneng.{service}", role=Role.SYSTEM, jurisdiction=CENTRAL
    )


def policy_handler(store: EventStore, policy: Policy) -> Handler:
    """A consumer handler that runs a policy's reactions in the inbox transaction."""

    async def handle(conn: Connection, event: IncomingEvent) -> None:
        for reaction in policy(event):
            try:
                await store.execute_within(
                    conn,
                    reaction.aggregate,
                    reaction.stream_id,
                    reaction.command,
                    correlation_id=event.correlation_id,
                    causation_id=event.event_id,
                )
            except NotFound:
                if not reaction.if_exists:
                    raise
                log.info("reaction skipped: no such stream", stream_id=reaction.stream_id, cause=str(event.event_id))

    return handle
