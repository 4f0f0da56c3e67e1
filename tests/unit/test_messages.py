"""The event registry: stored (type, version) pairs decoded to the current event classes."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from shared.messages import Event, EventRegistry


class SocietyRegistered(Event):
    """v3: the society's name is split and its jurisdiction is recorded."""

    event_type: ClassVar[str] = "SocietyRegistered"
    schema_version: ClassVar[int] = 3

    society_id: str
    name_zh: str
    name_en: str
    jurisdiction: str


class FunctionNoted(Event):
    event_type: ClassVar[str] = "FunctionNoted"

    function_id: str
    note: str


def registry() -> EventRegistry:
    events = EventRegistry(SocietyRegistered, FunctionNoted)

    @events.upcaster("SocietyRegistered", 1)
    def split_name(payload: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in payload.items() if k != "name"}
        return {**rest, "name_zh": payload["name"], "name_en": ""}

    @events.upcaster("SocietyRegistered", 2)
    def add_jurisdiction(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "jurisdiction": "100000"}

    return events


def test_a_payload_of_the_current_version_decodes_to_the_current_class() -> None:
    event = registry().decode("FunctionNoted", 1, {"function_id": "f-1", "note": "n"})
    assert event == FunctionNoted(function_id="f-1", note="n")


def test_a_current_payload_is_not_upcast() -> None:
    payload = {"society_id": "s-1", "name_zh": "学会", "name_en": "Society", "jurisdiction": "510600"}
    event = registry().decode("SocietyRegistered", 3, payload)
    assert event == SocietyRegistered(**payload)


def test_an_old_payload_is_upcast_through_each_registered_step() -> None:
    event = registry().decode("SocietyRegistered", 1, {"society_id": "s-1", "name": "中国化学会"})
    assert event == SocietyRegistered(society_id="s-1", name_zh="中国化学会", name_en="", jurisdiction="100000")


def test_an_upcast_starts_at_the_stored_version() -> None:
    event = registry().decode("SocietyRegistered", 2, {"society_id": "s-1", "name_zh": "学会", "name_en": "Society"})
    assert isinstance(event, SocietyRegistered)
    assert event.name_en == "Society"
    assert event.jurisdiction == "100000"


def test_a_stored_payload_is_not_modified_by_upcasting() -> None:
    stored = {"society_id": "s-1", "name": "学会"}
    registry().decode("SocietyRegistered", 1, stored)
    assert stored == {"society_id": "s-1", "name": "学会"}


def test_an_old_payload_without_an_upcaster_is_refused() -> None:
    events = EventRegistry(SocietyRegistered)
    with pytest.raises(KeyError):
        events.decode("SocietyRegistered", 2, {"society_id": "s-1", "name_zh": "学会", "name_en": "S"})


def test_an_old_payload_decoded_as_if_current_does_not_fit_the_class() -> None:
    with pytest.raises(ValidationError):
        registry().decode("SocietyRegistered", 3, {"society_id": "s-1", "name": "学会"})


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown event type"):
        registry().decode("FunctionTeleported", 1, {})


def test_a_version_newer_than_the_code_is_refused() -> None:
    with pytest.raises(KeyError, match="newer"):
        registry().decode("FunctionNoted", 2, {"function_id": "f-1", "note": "n"})


def test_an_event_type_registered_twice_is_refused() -> None:
    class FunctionNotedAgain(Event):
        event_type: ClassVar[str] = "FunctionNoted"

    with pytest.raises(ValueError, match="registered twice"):
        EventRegistry(FunctionNoted, FunctionNotedAgain)


def test_events_are_frozen_and_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        FunctionNoted(function_id="f-1", note="n", extra="x")  # type: ignore[call-arg]
    event = FunctionNoted(function_id="f-1", note="n")
    with pytest.raises(ValidationError):
        event.note = "changed"  # type: ignore[misc]
