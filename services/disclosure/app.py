"""Wiring of the public disclosure service (信息公开): policy, public topic, API, feeds, portal."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

from services.disclosure import api, domain, policies, policy, portal, projections
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
        ConsumerSpec.reacting(
            "disclosure",
            service,
            importlib.import_module(f"services.{service}.domain").EVENTS,
            policies.on_internal_event,
        )
        for service in policy.source_services()
    ),
    topic=domain.PUBLIC_TOPIC,
    message_mapper=domain.public_message,
)
