"""Wiring of the disclosure service (信息公开), first slice."""

from __future__ import annotations

from services.disclosure import api, projections
from shared.kafka import events_topic
from shared.messages import EventRegistry
from shared.runtime import ConsumerSpec, ServiceDefinition

SERVICE = ServiceDefinition(
    name="disclosure",
    title="chengneng public disclosure",
    description="Public, token-free views of what the other services disclose (信息公开).",
    events=EventRegistry(),
    migrations=projections.MIGRATIONS,
    router=api.router,
    consumers=(ConsumerSpec("disclosure-registry", [events_topic("registry")], projections.apply_registry_event),),
    publishes=False,
)
