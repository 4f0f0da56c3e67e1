"""Base shapes of events and commands, shared by every service's ``domain.py``.

Events are the stored contract: once an event type is written to a store its shape is
frozen for that ``schema_version``. A change of shape is a new version with an upcaster
(see ``upcasters`` below); stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict

from shared.principal import Principal


class Event(BaseModel):
    """A fact, named in the past tense. Subclasses set ``event_type`` and ``schema_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Command(BaseModel):
    """An intention. Who issues it and when come in with it, so deciders stay pure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issued_by: Principal
    issued_at: datetime


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    """Maps stored (type, version) pairs to event classes, upcasting old versions on read."""

    def __init__(self, *event_classes: type[Event]) -> None:
        self.by_type: dict[str, type[Event]] = {}
        self.upcasters: dict[tuple[str, int], Upcaster] = {}
        for cls in event_classes:
            if cls.event_type in self.by_type:
                raise ValueError(f"event type {cls.event_type} registered twice")
            self.by_type[cls.event_type] = cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning payload version ``from_version`` into the next one."""

        def register(fn: Upcaster) -> Upcaster:
            self.upcasters[(event_type, from_version)] = fn
            return fn

        return register

    def decode(self, event_type: str, schema_version: int, payload: dict[str, Any]) -> Event:
        """Build the current event class from a stored payload of any known version."""
        cls = self._class_of(event_type, schema_version)
        version = schema_version
        while version < cls.schema_version:
            payload = self.upcasters[(event_type, version)](payload)
            version += 1
        # ``model_validate`` without its keyword plumbing: replays decode millions of events.
        event: Event = cls.__pydantic_validator__.validate_python(payload)
        return event

    def decode_json(self, event_type: str, schema_version: int, payload: bytes) -> Event:
        """``decode`` for a payload still in its JSON text (UTF-8), as replays read it.

        A payload of the current version is validated straight from the text, in pydantic's
        own parser: no dictionary is built, checked and freed on the way, which made a third
        of decoding an event. An older one is parsed and upcast as ``decode`` does.
        """
        cls = self._class_of(event_type, schema_version)
        if schema_version < cls.schema_version:
            return self.decode(event_type, schema_version, orjson.loads(payload))
        event: Event = cls.__pydantic_validator__.validate_json(payload)
        return event

    def _class_of(self, event_type: str, schema_version: int) -> type[Event]:
        cls = self.by_type.get(event_type)
        if cls is None:
            raise KeyError(f"unknown event type {event_type!r}")
        if schema_version > cls.schema_version:
            raise KeyError(f"{event_type} schema version {schema_version} is newer than this code")
        return cls


S = TypeVar("S")


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """The decider of one stream type: how to fold its events and decide its commands."""

    stream_type: str
    initial: Callable[[], S]
    evolve: Callable[[S, Event], S]
    decide: Callable[[S, Any], list[Event]]
    jurisdiction_of: Callable[[S, Any], str]
    """Where the events of a command happen: from the state, or from a creating command."""
    state_model: type[Any] | None = None
    """The state's pydantic model, for aggregates whose long streams keep snapshots (see
    ``EventStore.state_as_of``); ``None`` means the stream is always folded from the start."""
