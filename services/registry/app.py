"""Wiring of the function registry service (可转移职能清单)."""

from __future__ import annotations

from services.registry import api, domain, policies, projections
from shared.kafka import events_topic
from shared.runtime import ConsumerSpec, ServiceDefinition

SERVICE = ServiceDefinition(
    name="registry",
    title="chengneng function registry",
    description=(
        "Transferable-function registry (可转移职能清单): functions proposed, consulted on, listed, "
        "opened for undertaking, assigned and transferred to societies, and the versioned list per "
        "jurisdiction. Send `Authorization: Bearer <token>` (see `chengneng token issue`)."
    ),
    events=domain.EVENTS,
    migrations=projections.MIGRATIONS,
    router=api.router,
    projector=projections.project,
    consumers=(
        ConsumerSpec("registry-capability", [events_topic("capability")], policy=policies.on_capability_event),
        ConsumerSpec("registry-supervision", [events_topic("supervision")], policy=policies.on_supervision_event),
    ),
)
