"""Wiring of the function registry service (可转移职能清单)."""

from __future__ import annotations

from services.capability import domain as capability
from services.registry import api, domain, policies, projections
from services.supervision import domain as supervision
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
        ConsumerSpec.reacting("registry", "capability", capability.EVENTS, policies.on_capability_event),
        ConsumerSpec.reacting("registry", "supervision", supervision.EVENTS, policies.on_supervision_event),
    ),
)
