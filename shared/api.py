"""The one way a service exposes a command over HTTP: ``POST`` a body, get what it appended.

The request body is derived from the domain command (``command_body``), the principal
comes from the token, the time from the clock, the correlation id from the request, and
the command goes through the service's ``EventStore`` (with ``Idempotency-Key``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, ValidationError, create_model

from shared.commands import Aggregate, CommandResult, Idempotency
from shared.errors import InvalidInput
from shared.http import CurrentPrincipal, IdempotencyKey, command_body
from shared.messages import Command
from shared.principal import Principal
from shared.runtime import Context, ServiceContext

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
_ID = re.compile(ID_PATTERN)

EntityId = Annotated[str, Path(pattern=ID_PATTERN, description="letters, digits and . _ : - (at most 100)")]
JurisdictionCode = Annotated[str, Path(pattern=r"^[1-9][0-9]{5}$", description="six-digit division code")]


class CommandAccepted(BaseModel):
    """What a command did: the stream, its version now, and the events it appended."""

    stream_id: str
    version: int
    appended: list[dict[str, Any]]


def valid_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise InvalidInput(f"invalid_{what}", f"{what} may hold letters, digits and . _ : - (at most 100)")
    return value


def new_id() -> str:
    return str(uuid.uuid4())


def correlation_id() -> uuid.UUID:
    """The request's correlation id (bound by the HTTP middleware), or a new one."""
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return uuid.UUID(value) if value else uuid.uuid4()


def build_command(cls: type[Command], principal: Principal, **fields: Any) -> Command:
    """Construct a domain command, turning schema errors into a 422 problem."""
    try:
        return cls(issued_by=principal, issued_at=datetime.now(UTC), **fields)
    except ValidationError as exc:
        raise InvalidInput("invalid_command", str(exc.errors(include_url=False, include_input=False))) from exc


async def run(
    ctx: ServiceContext, aggregate: Aggregate[Any], stream_id: str, command: Command, key: Idempotency | None
) -> dict[str, Any]:
    result: CommandResult = await ctx.store.execute(
        aggregate, stream_id, command, correlation_id=correlation_id(), idempotency=key
    )
    return result.as_json()


def add_command_route(
    router: APIRouter,
    path: str,
    command_cls: type[Command],
    aggregate: Aggregate[Any],
    stream_for: Callable[[str], str],
    *,
    id_field: str,
    summary: str,
    tags: list[str | Enum],
) -> None:
    """Register ``POST <path>`` where ``path`` holds ``{<id_field>}``, for one command."""
    body_model = command_body(command_cls, exclude=frozenset({id_field}), name=command_cls.__name__)

    async def endpoint(
        entity_id: str,  # replaced below: the path parameter named ``id_field``
        body: BaseModel,  # replaced by the command's body class below
        ctx: Context,
        principal: CurrentPrincipal,
        key: IdempotencyKey,
    ) -> dict[str, Any]:
        command = build_command(command_cls, principal, **{id_field: entity_id}, **body.model_dump())
        return await run(ctx, aggregate, stream_for(entity_id), command, key)

    endpoint.__name__ = command_cls.__name__
    # Annotations are strings under postponed evaluation; hand FastAPI the real classes.
    endpoint.__annotations__["entity_id"] = Annotated[str, Path(alias=id_field, pattern=ID_PATTERN)]
    endpoint.__annotations__["body"] = body_model
    router.add_api_route(path, endpoint, methods=["POST"], response_model=CommandAccepted, tags=tags, summary=summary)


def add_create_route(
    router: APIRouter,
    path: str,
    command_cls: type[Command],
    aggregate: Aggregate[Any],
    stream_for: Callable[[str], str],
    *,
    id_field: str,
    summary: str,
    tags: list[str | Enum],
) -> None:
    """Register ``POST <path>`` that starts a stream; the client may choose its id, else a UUID."""
    base = command_body(command_cls, exclude=frozenset({id_field}), name=f"{command_cls.__name__}Fields")
    body_model = create_model(  # type: ignore[call-overload]
        command_cls.__name__,
        __base__=base,
        **{id_field: (str | None, Field(default=None, description="optional client-chosen id; a UUID otherwise"))},
    )

    async def endpoint(
        body: BaseModel, ctx: Context, principal: CurrentPrincipal, key: IdempotencyKey
    ) -> dict[str, Any]:
        fields = body.model_dump()
        entity_id = valid_id(fields.pop(id_field) or new_id(), id_field)
        command = build_command(command_cls, principal, **{id_field: entity_id}, **fields)
        return await run(ctx, aggregate, stream_for(entity_id), command, key)

    endpoint.__name__ = f"create_{command_cls.__name__}"
    endpoint.__annotations__["body"] = body_model  # the real class, not a postponed string
    router.add_api_route(
        path, endpoint, methods=["POST"], status_code=201, response_model=CommandAccepted, tags=tags, summary=summary
    )
