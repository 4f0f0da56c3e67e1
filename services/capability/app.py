"""Wiring of the society capability service (学会能力: records, assessments, selection)."""

from __future__ import annotations

from services.capability import api, domain, policies, projections
from services.registry import domain as registry
from services.supervision import domain as supervision
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
        ConsumerSpec.reacting("capability", "registry", registry.EVENTS, policies.on_registry_event),
        ConsumerSpec.reacting("capability", "supervision", supervision.EVENTS, policies.on_supervision_event),
    ),
)
