"""JSON logs (structlog) with request, correlation and event ids bound from context."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "info", *, service: str | None = None, json: bool = True) -> None:
    """Route structlog and the standard library through one JSON renderer on stderr."""
    numeric = logging.getLevelName(level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # aiokafka is chatty at INFO about every (re)connection; keep its warnings.
    logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("uvicorn.access").setLevel(max(numeric, logging.WARNING))
    if service:
        structlog.contextvars.bind_contextvars(service=service)
