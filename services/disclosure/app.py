"""Wiring of the public disclosure service (信息公开): policy, public topic, API, feeds, portal."""

from __future__ import annotations

from fastapi import APIRouter

from services.disclosure import api, domain, policies, portal, projections
from shared.kafka import events_topic
from shared.runtime import ConsumerSpec, ServiceDefinition

router = APIRouter()
router.include_router(api.router)
router.include_router(portal.router)

SERVICE = ServiceDefinition(
    name="disclosure",
    title="chengneng public disclosure",
    description=(
        "What the public may see (信息公开): every fact the disclosure policy lets through from the "
        "registry, the capability service and supervision, as JSON, Atom and Server-Sent Events, "
        "and on the public topic chengneng.disclosure.public. No token needed."
    ),
    events=domain.EVENTS,
    migrations=projections.MIGRATIONS,
    router=router,
    projector=projections.project,
    consumers=tuple(
        ConsumerSpec(f"disclosure-{service}", [events_topic(service)], policy=policies.on_internal_event)
        for service in ("registry", "capability", "supervision")
    ),
    topic=domain.PUBLIC_TOPIC,
    message_mapper=domain.public_message,
)
