"""Public disclosure (信息公开), first slice: which registry facts the public may see.

This slice discloses the transferable-function list. The disclosure service keeps its
own copy of each function, folded from the registry's events with the registry's own
``evolve`` (the events are the contract), and shows only public fields of it.
"""

from __future__ import annotations

from typing import Any

from services.registry import domain as registry

PUBLIC_STATUSES = frozenset(
    {
        registry.Status.LISTED,
        registry.Status.OPEN,
        registry.Status.ASSIGNED,
        registry.Status.TRANSFERRED,
        registry.Status.RETURNED,
    }
)
"""A function is on the public list while it stands listed (proposals are not disclosed)."""

PUBLIC_FIELDS = (
    "function_id",
    "jurisdiction",
    "title",
    "description",
    "category",
    "sub_kind",
    "scope",
    "entrustment_mode",
    "department",
    "status",
    "qualification_conditions",
    "thresholds",
    "min_applicants",
    "application_deadline",
    "society_id",
    "society_name",
)


def is_public(state: registry.FunctionState) -> bool:
    return state.status in PUBLIC_STATUSES


def public_view(state: registry.FunctionState) -> dict[str, Any]:
    """The disclosed fields of a function; nothing else of the registry's state leaves."""
    full = state.model_dump(mode="json")
    return {name: full[name] for name in PUBLIC_FIELDS}
