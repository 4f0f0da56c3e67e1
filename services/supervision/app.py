"""Wiring of the project supervision service (项目监管): the pilot-project case.

Its stream processor, the deadline watcher, runs as a process of its own
(``services/supervision/deadlines.py``, `chengneng serve deadlines`).
"""

from __future__ import annotations

from services.registry import domain as registry
from services.supervision import api, deadlines, domain, policies, projections
from services.supervision.deadlines import TOPIC as DEADLINES_TOPIC
from shared.runtime import ConsumerSpec, ServiceDefinition

SERVICE = ServiceDefinition(
    name="supervision",
    title="chengneng project supervision",
    description=(
        "Pilot-project cases (试点项目) from the tripartite task agreement (任务书) to the systematic "
        "summary: implementation plans, project leader, team, progress, supervision meetings, "
        "decisions (示范, 整改, warnings, termination), evaluations and the funding ledger. "
        f"Performance scoring: {domain.SCORING_METHOD}. Send `Authorization: Bearer <token>`."
    ),
    events=domain.EVENTS,
    migrations=projections.MIGRATIONS,
    router=api.router,
    projector=projections.project,
    consumers=(
        ConsumerSpec.reacting("supervision", "registry", registry.EVENTS, policies.on_registry_event),
        ConsumerSpec.reacting(
            "supervision", deadlines.SERVICE, deadlines.EVENTS, policies.on_deadline, topic=DEADLINES_TOPIC
        ),
    ),
)
