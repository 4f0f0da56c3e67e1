"""Checks every decider makes the same way: read-only roles, ISO dates, required text."""

from __future__ import annotations

import re
from datetime import date

from shared.errors import DomainRuleViolated, InvalidInput, NotPermitted
from shared.principal import READ_ONLY_ROLES, Principal

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def refuse_read_only(principal: Principal) -> None:
    """Auditors and the public read the history; they never add to it."""
    if principal.role in READ_ONLY_ROLES:
        raise NotPermitted("read_only_role", f"role {principal.role.value!r} may read but not issue commands")


def iso_date(value: str, field: str) -> date:
    """``value`` as a date, or ``InvalidInput(invalid_date)`` naming ``field``."""
    try:
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("invalid_date", f"{field} {value!r} is not an ISO date (YYYY-MM-DD)") from exc


def require_text(value: str, code: str, detail: str) -> None:
    """Refuse an empty or blank text with ``DomainRuleViolated(code)``."""
    if not value.strip():
        raise DomainRuleViolated(code, detail)
