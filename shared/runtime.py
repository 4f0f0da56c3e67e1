"""Runs one service process: migrations, pool, relay, consumers and the HTTP server.

Every service declares a ``ServiceDefinition`` in its ``app.py``; this module is the
only place that knows how to wire one, so all services start, run and stop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request

from shared import db
from shared.audit_api import router as audit_router
from shared.auth import load_public_key
from shared.commands import EventStore, Projector
from shared.consumer import Handler, InboxConsumer, Sources
from shared.envelope import Envelope
from shared.http import (
    PROBLEM_RESPONSES,
    RequestContextMiddleware,
    install_common_routes,
    install_error_handlers,
    problem_schema,
)
from shared.kafka import OutgoingMessage, events_topic
from shared.messages import EventRegistry
from shared.policies import Policy, policy_handler
from shared.relay import Relay
from shared.sealer import Sealer
from shared.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer of other services' topics; ``name`` is its inbox and consumer-group name.

    Give a ``handler`` to update read models directly, or a ``policy`` whose reactions run
    as commands through this service's deciders. ``sources`` is the contract: the producing
    services and their event types; a record outside it goes to the dead letters, so a type
    or schema version this code does not know is never applied, nor ignored, unseen.
    """

    name: str
    topics: list[str]
    handler: Handler | None = None
    policy: Policy | None = None
    sources: Sources = field(default_factory=dict)

    @classmethod
    def reacting(
        cls, service: str, source: str, events: EventRegistry, policy: Policy, *, topic: str | None = None
    ) -> ConsumerSpec:
        """``service`` applying ``policy`` to the events of ``source`` (its topic unless ``topic``
        is given): the one way every service declares what it consumes, named ``service-source``."""
        return cls(f"{service}-{source}", [topic or events_topic(source)], policy=policy, sources={source: events})


@dataclass
class ServiceContext:
    """What a running service's API and handlers need."""

    name: str
    settings: Settings
    pool: asyncpg.Pool
    store: EventStore


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    title: str
    description: str
    events: EventRegistry
    migrations: Sequence[db.Migration]
    router: APIRouter
    projector: Projector | None = None
    consumers: Sequence[ConsumerSpec] = field(default_factory=tuple)
    publishes: bool = True
    topic: str | None = None
    """Where the relay publishes; default ``chengneng.<name>.events``."""
    message_mapper: Callable[[Envelope], OutgoingMessage] | None = None
    """How a stored event becomes a Kafka record; default the internal CloudEvent mapping."""


async def service_context(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context (``async``: a plain ``def`` would go
    through FastAPI's thread pool on every request)."""
    context: ServiceContext = request.app.state.context
    return context


Context = Annotated[ServiceContext, Depends(service_context)]


def require_infrastructure(settings: Settings) -> tuple[str, str]:
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise SystemExit(
            "DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set to run a single service; "
            "`chengneng up` sets them for the embedded stack"
        )
    return settings.database_url, settings.kafka_bootstrap_servers


def build_app(definition: ServiceDefinition, settings: Settings) -> FastAPI:
    """The service's ASGI app; its lifespan migrates, connects and starts background tasks."""
    admin_url, bootstrap = require_infrastructure(settings)
    dsn = db.app_url(admin_url, definition.name, settings.db_app_password)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.migrate(admin_url, definition.name, definition.migrations, app_password=settings.db_app_password)
        pool = await db.create_pool(dsn, definition.name)
        app.state.pool = pool
        app.state.public_key = load_public_key(settings.public_key_path)
        app.state.context = ServiceContext(
            definition.name, settings, pool, EventStore(pool, definition.events, definition.projector)
        )
        tasks: list[asyncio.Task[Any]] = []
        if definition.publishes:
            relay = Relay(
                definition.name,
                pool,
                dsn,
                definition.name,
                bootstrap,
                batch_size=settings.relay_batch_size,
                poll_interval_s=settings.poll_interval_s,
                topic_check_interval_s=settings.topic_check_interval_s,
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
                topic=definition.topic,
                mapper=definition.message_mapper,
            )
            app.state.relay = relay
            tasks.append(asyncio.create_task(relay.run(), name=f"{definition.name}-relay"))
        sealer = Sealer(
            definition.name,
            pool,
            dsn,
            bootstrap,
            settings.keys_dir,
            interval_s=settings.checkpoint_interval_s,
        )
        app.state.sealer = sealer
        tasks.append(asyncio.create_task(sealer.run(), name=f"{definition.name}-sealer"))
        for spec in definition.consumers:
            if not spec.sources:
                raise ValueError(f"consumer {spec.name} declares no sources: its contract would go unchecked")
            handler = spec.handler
            if handler is None:
                assert spec.policy is not None, f"consumer {spec.name} needs a handler or a policy"
                handler = policy_handler(app.state.context.store, spec.policy)
            consumer = InboxConsumer(
                spec.name,
                spec.topics,
                pool,
                bootstrap,
                handler,
                session_timeout_ms=settings.kafka_session_timeout_ms,
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
                sources=spec.sources,
            )
            tasks.append(asyncio.create_task(consumer.run(), name=f"{definition.name}-{spec.name}"))
        log.info("service started", service=definition.name)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
            log.info("service stopped", service=definition.name)

    app = FastAPI(
        title=definition.title,
        description=definition.description,
        version="0.1.0",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.add_middleware(RequestContextMiddleware, service=definition.name, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    install_common_routes(app, definition.name)
    app.include_router(audit_router)
    app.include_router(definition.router)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = problem_schema()
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def serve(definition: ServiceDefinition, settings: Settings, port: int) -> None:
    """Run the service in the foreground until SIGINT/SIGTERM."""
    app = build_app(definition, settings)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        # loop and http stay "auto": uvloop and httptools (dependencies) where they install.
    )
    uvicorn.Server(config).run()
