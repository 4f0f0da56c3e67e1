"""HTTP plumbing shared by every service: problem details, tokens, correlation, limits.

Every error leaves as RFC 9457 problem details (``application/problem+json``) with a
machine-readable ``code``; a database outage is a 503 with ``Retry-After``, never a crash.
"""

from __future__ import annotations

import math
import re
import uuid
from decimal import Decimal
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, create_model, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import db
from shared.auth import verify_token
from shared.commands import Idempotency
from shared.errors import ChengnengError, InvalidInput, NotAuthenticated
from shared.principal import Principal

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
REQUESTS = Counter("chengneng_http_requests_total", "HTTP requests", ["service", "method", "status"])
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")

PG_INTEGER_MAX = 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1
# Every number a client sends must fit the column or parameter it meets: PostgreSQL refuses
# a larger one, which would otherwise surface as a 500 instead of a 422.
Offset = Annotated[int, Query(ge=0, le=PG_INTEGER_MAX, description="how many items to skip")]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items")]

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": title, "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for code, title in [
        (401, "Not authenticated"),
        (403, "Not permitted"),
        (404, "Not found"),
        (409, "Concurrency conflict"),
        (413, "Request body too large"),
        (422, "Invalid input or domain rule violated"),
        (503, "Service unavailable"),
    ]
}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    request: Request | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:chengneng:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
    for key, value in (extra or {}).items():
        # Context from the error never overwrites a member RFC 9457 defines.
        body[key if key not in body else f"context_{key}"] = value
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChengnengError)
    async def _domain(request: Request, exc: ChengnengError) -> JSONResponse:
        extra = {k: v for k, v in exc.extra.items() if isinstance(v, (str, int, float, bool, type(None)))}
        return problem(exc.status, exc.code, exc.title, exc.detail, request, extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"location": list(map(str, e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem(
            422,
            "invalid_request",
            "Invalid request",
            "the request does not match its schema",
            request,
            {"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "malformed_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail), request)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", error=repr(exc))
        return problem(
            503,
            "database_unavailable",
            "Service unavailable",
            "the database cannot be reached; retry later",
            request,
        )

    # Handlers for these classes answer inside the app, so an outage is one warning per
    # request rather than a traceback of an "unhandled" exception re-raised to the server.
    for unavailable in db.UNAVAILABLE:
        app.add_exception_handler(unavailable, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if db.unavailable(exc):  # raised where the handlers above do not reach (middleware)
            return await _unavailable(request, exc)
        log.exception("unhandled error")
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred; it was logged", request)


class RequestContextMiddleware:
    """Binds request and correlation ids to logs, limits body size, counts requests."""

    def __init__(self, app: ASGIApp, *, service: str, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = str(uuid.uuid4())
        correlation_id = _parse_uuid(headers.get("x-correlation-id")) or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = uuid.UUID(correlation_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, correlation_id=correlation_id)
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            response = _too_large(self.max_body_bytes)
            await response(scope, receive, send)
            return
        if _has_nul(scope):
            response = problem(
                422, "invalid_character", "Invalid input", "the path or query holds a NUL character (%00)"
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise StarletteHTTPException(413, "request body too large")
            return message

        status_holder = {"status": 500}

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"x-correlation-id", correlation_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, tagged_send)
        finally:
            REQUESTS.labels(self.service, scope.get("method", ""), str(status_holder["status"])).inc()
            structlog.contextvars.unbind_contextvars("request_id", "correlation_id")


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "body_too_large", "Request body too large", f"the body exceeds {limit} bytes")


def _has_nul(scope: Scope) -> bool:
    """Whether the path or the query string carries a NUL, which no text column can store."""
    query = scope.get("query_string", b"").lower()
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def _parse_uuid(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


_BEARER = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A token from `chengneng token issue`",
    auto_error=False,
)
"""Declares the bearer token in the OpenAPI document; ``current_principal`` does the checking."""


async def current_principal(
    request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
) -> Principal:
    """The principal named by the request's bearer token (401 problem when absent or bad).

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency on its thread
    pool, in a copy of the request's context, so the principal bound for the log lines never
    reached the endpoint, and every request paid a thread handoff. Checking an Ed25519
    signature takes well under a millisecond on the event loop.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("token_missing", "send 'Authorization: Bearer <token>'; see `chengneng token issue`")
    principal = verify_token(request.app.state.public_key, token.strip())
    structlog.contextvars.bind_contextvars(principal=principal.subject, org=principal.organisation)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def correlation_id(request: Request) -> uuid.UUID:
    value = getattr(request.state, "correlation_id", None)
    return value if isinstance(value, uuid.UUID) else uuid.uuid4()


async def idempotency(request: Request, principal: CurrentPrincipal) -> Idempotency | None:
    """The request's ``Idempotency-Key``, bound to the principal and the exact request."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidInput("invalid_idempotency_key", "Idempotency-Key must be 1-200 visible ASCII characters")
    body = await request.body()
    return Idempotency.for_request(
        f"{principal.organisation}/{principal.subject}", key, request.method, request.url.path, body
    )


IdempotencyKey = Annotated[Idempotency | None, Depends(idempotency)]


def install_common_routes(app: FastAPI, service: str) -> None:
    @app.get("/health", tags=["operations"], summary="Liveness and database reachability")
    async def health(request: Request) -> JSONResponse:
        try:
            await request.app.state.pool.fetchval("SELECT 1")
        except Exception as exc:  # the point of the endpoint is to report, not to raise
            return problem(503, "database_unavailable", "Service unavailable", repr(exc), request)
        return JSONResponse({"status": "ok", "service": service})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "description": "machine-readable error code"},
            "instance": {"type": "string"},
        },
    }


_ENVELOPE_FIELDS = frozenset({"issued_by", "issued_at"})
_SURROGATE = re.compile(r"[\ud800-\udfff]")
JSON_SAFE_INTEGER = 2**53 - 1
"""I-JSON (RFC 7493): integers beyond this lose precision in JSON, and the canonical form that
event hashes are computed over (RFC 8785) refuses them."""


def unstorable(value: Any, where: str = "body") -> str | None:
    """Why ``value`` cannot be stored as an event (and where), or ``None`` when it can.

    PostgreSQL text holds no NUL and no unpaired surrogate; the canonical JSON of an event
    holds no integer beyond ±(2**53 - 1) and no NaN or infinity.
    """
    if isinstance(value, str):
        if "\x00" in value or _SURROGATE.search(value):
            return f"{where} holds a NUL character or an unpaired surrogate"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if abs(value) > JSON_SAFE_INTEGER:
            return f"{where} is beyond ±{JSON_SAFE_INTEGER}"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{where} is not a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            found = unstorable(key, f"{where} key") or unstorable(item, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable(item, f"{where}[{index}]")
            if found:
                return found
    return None


DECIMAL_PLACES = 18
"""Decimals a client sends keep at most this many digits on each side of the point."""


def unbounded_decimal(value: Any, where: str = "body") -> str | None:
    """Where a validated body holds a decimal the domain's 28-digit arithmetic could overflow on."""
    if isinstance(value, Decimal):
        _, digits, exponent = value.as_tuple()
        if (
            not isinstance(exponent, int)
            or exponent < -DECIMAL_PLACES
            or (any(digits) and value.adjusted() >= DECIMAL_PLACES)
        ):
            return f"{where} needs at most {DECIMAL_PLACES} digits before and after the decimal point"
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found = unbounded_decimal(getattr(value, name), f"{where}.{name}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = unbounded_decimal(item, f"{where}[{index}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = unbounded_decimal(item, f"{where}.{key}")
            if found:
                return found
    return None


class CommandBodyBase(BaseModel):
    """Base of every command body: unknown fields and values no event can hold are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        reason = unstorable(data)
        if reason:
            raise ValueError(f"{reason}, which cannot be stored")
        return data

    @model_validator(mode="after")
    def _bounded_decimals(self) -> CommandBodyBase:
        reason = unbounded_decimal(self)
        if reason:
            raise ValueError(reason)
        return self


def command_body(
    command: type[BaseModel], *, exclude: frozenset[str] = frozenset(), name: str | None = None
) -> type[BaseModel]:
    """The request body of a command: its fields minus who/when and path parameters.

    Deriving bodies from the commands keeps one definition of each command's inputs.
    """
    fields: dict[str, Any] = {
        field_name: (info.annotation, info)
        for field_name, info in command.model_fields.items()
        if field_name not in _ENVELOPE_FIELDS | exclude
    }
    return create_model(  # type: ignore[call-overload,no-any-return]
        name or f"{command.__name__}Body", __base__=CommandBodyBase, **fields
    )
