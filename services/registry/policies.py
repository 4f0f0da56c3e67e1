"""Reactions of the registry to other services' events (pure: event in, commands out).

- capability ``SocietiesRecommended`` → ``RecordRecommendation`` on the function, so that
  only a recommended society can be assigned (the registry learns it from the event,
  never by calling the capability service).

Later: supervision's task-agreement and termination events become ``MarkTransferred``
and ``ReturnFunction``.
"""

from __future__ import annotations

from services.registry import domain
from shared.kafka import IncomingEvent
from shared.policies import Reaction, system_principal

ACTOR = system_principal("registry")


def on_capability_event(event: IncomingEvent) -> list[Reaction]:
    """Map one capability event to the registry's reactions."""
    if event.event_type != "SocietiesRecommended":
        return []
    data = event.data
    command = domain.RecordRecommendation(
        issued_by=ACTOR,
        issued_at=event.time,
        function_id=data["function_id"],
        society_ids=list(data["society_ids"]),
        ranking_version=int(data["ranking_version"]),
        justification=data.get("justification", ""),
    )
    return [Reaction(domain.FUNCTION, domain.function_stream(data["function_id"]), command, if_exists=True)]
