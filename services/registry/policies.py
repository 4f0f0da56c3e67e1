"""Reactions of the registry to other services' events (pure: event in, commands out).

- capability ``SocietiesRecommended`` → ``RecordRecommendation`` on the function, so that
  only a recommended society can be assigned;
- supervision ``AgreementTookEffect`` → ``MarkTransferred`` (the tripartite task agreement
  is signed by all three parties: the function is now transferred);
- supervision ``ProjectTerminated`` → ``ReturnFunction`` (the function comes back).

The registry learns these facts from the events only, never by calling another service.
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


def on_supervision_event(event: IncomingEvent) -> list[Reaction]:
    """Map one supervision event to the registry's reactions."""
    data = event.data
    command: domain.FunctionCommand
    match event.event_type:
        case "AgreementTookEffect":
            command = domain.MarkTransferred(
                issued_by=ACTOR,
                issued_at=event.time,
                function_id=data["function_id"],
                agreement_reference=data["agreement_reference"],
            )
        case "ProjectTerminated":
            command = domain.ReturnFunction(
                issued_by=ACTOR,
                issued_at=event.time,
                function_id=data["function_id"],
                reason=f"project {data['project_id']} terminated: {data.get('reason', '')}".strip(),
            )
        case _:
            return []
    return [Reaction(domain.FUNCTION, domain.function_stream(data["function_id"]), command, if_exists=True)]
