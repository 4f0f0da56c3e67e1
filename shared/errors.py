"""Typed errors shared by every service.

Each error carries a machine-readable ``code`` and the HTTP status it maps to, so the
HTTP layer renders every failure as RFC 9457 problem details without a lookup table.
"""

from __future__ import annotations

from typing import Any


class ChengnengError(Exception):
    """Base of every error a client may see; ``code`` is stable, ``detail`` is for people."""

    status: int = 400
    title: str = "Bad request"

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


class DomainRuleViolated(ChengnengError):
    """A command breaks a rule of the domain (raised by deciders)."""

    status = 422
    title = "Domain rule violated"


class NotPermitted(ChengnengError):
    """The principal's role or jurisdiction does not allow the command."""

    status = 403
    title = "Not permitted"


class NotAuthenticated(ChengnengError):
    """No token, or a token that is forged, expired or signed with another key."""

    status = 401
    title = "Not authenticated"


class NotFound(ChengnengError):
    status = 404
    title = "Not found"


class ConcurrencyConflict(ChengnengError):
    """The stream moved on since it was read: the append was refused, nothing was written."""

    status = 409
    title = "Concurrency conflict"


class InvalidInput(ChengnengError):
    status = 422
    title = "Invalid input"


class IntegrityFailure(ChengnengError):
    """Stored data is not what it must be (a damaged or tampered log): a matter for the auditors."""

    status = 500
    title = "Stored data failed an integrity check"


class ServiceUnavailable(ChengnengError):
    status = 503
    title = "Service unavailable"
