"""Wiring of the society capability service (学会能力: records, assessments, selection)."""

from __future__ import annotations

from services.capability import api, domain, policies, projections
from shared.kafka import events_topic
from shared.runtime import ConsumerSpec, ServiceDefinition

SERVICE = ServiceDefinition(
    name="capability",
    title="chengneng society capability",
    description=(
        "Societies under each association, their governance, decoupling, survey answers and "
        "capability assessments, their classification (固强、新建、稳定、退出), and the transparent, "
        "reproducible ranking and recommendation of candidates for each opened function (遴选推荐). "
        f"Ranking method: {domain.SCORING_METHOD}. Send `Authorization: Bearer <token>`."
    ),
    events=domain.EVENTS,
    migrations=projections.MIGRATIONS,
    router=api.router,
    projector=projections.project,
    consumers=(
        ConsumerSpec("capability-registry", [events_topic("registry")], policy=policies.on_registry_event),
        ConsumerSpec("capability-supervision", [events_topic("supervision")], policy=policies.on_supervision_event),
    ),
)
