"""Reactions of the capability service to other services' events (pure: event in, commands out).

From the registry (``chengneng.registry.events``):

- ``FunctionOpened`` → ``OpenSelection`` (a selection round starts, with the function's
  conditions and entry thresholds);
- ``FunctionAssigned`` → ``NoteFunctionUndertaken`` on the society and ``CloseSelection``;
- ``FunctionWithdrawn`` / ``FunctionDelisted`` → ``CloseSelection`` (if one is open).

From supervision (``chengneng.supervision.events``; the service comes later, so these are
the documented event types it will publish, each naming ``society_id``, ``project_id``
and ``function_id``) → ``NoteTrackRecord``, so evaluations raise or lower standing:

| supervision event | payload | outcome noted |
|---|---|---|
| ``EvaluationCompleted`` | ``grade``: excellent / good / pass / fail | that grade |
| ``ProjectCommended`` | | commended (示范) |
| ``RectificationOrdered`` | | rectification_ordered (整改) |
| ``RectificationAccepted`` | | rectification_accepted |
| ``ProjectTerminated`` | | terminated |
"""

from __future__ import annotations

from services.capability import domain
from services.capability.domain import SELECTION, SOCIETY, selection_stream, society_stream
from shared.kafka import IncomingEvent
from shared.policies import Reaction, system_principal

ACTOR = system_principal("capability")

SUPERVISION_OUTCOMES: dict[str, domain.ProjectOutcome | None] = {
    "EvaluationCompleted": None,  # the outcome is the payload's grade
    "ProjectCommended": domain.ProjectOutcome.COMMENDED,
    "RectificationOrdered": domain.ProjectOutcome.RECTIFICATION_ORDERED,
    "RectificationAccepted": domain.ProjectOutcome.RECTIFICATION_ACCEPTED,
    "ProjectTerminated": domain.ProjectOutcome.TERMINATED,
}


def on_registry_event(event: IncomingEvent) -> list[Reaction]:
    data, at = event.data, event.time
    function_id = data.get("function_id", "")
    match event.event_type:
        case "FunctionOpened":
            command = domain.OpenSelection(
                issued_by=ACTOR,
                issued_at=at,
                function_id=function_id,
                jurisdiction=data["jurisdiction"],
                title=data["title"],
                category=data["category"],
                qualification_conditions=data["qualification_conditions"],
                thresholds=data["thresholds"],
                min_applicants=data["min_applicants"],
                application_deadline=data["application_deadline"],
            )
            return [Reaction(SELECTION, selection_stream(function_id), command)]
        case "FunctionAssigned":
            return [
                Reaction(
                    SOCIETY,
                    society_stream(data["society_id"]),
                    domain.NoteFunctionUndertaken(
                        issued_by=ACTOR, issued_at=at, society_id=data["society_id"], function_id=function_id
                    ),
                    if_exists=True,
                ),
                _close(function_id, at, f"assigned to {data['society_id']}"),
            ]
        case "FunctionWithdrawn" | "FunctionDelisted":
            return [_close(function_id, at, f"function {event.event_type.removeprefix('Function').lower()}")]
    return []


def _close(function_id: str, at: object, reason: str) -> Reaction:
    command = domain.CloseSelection(issued_by=ACTOR, issued_at=at, function_id=function_id, reason=reason)
    return Reaction(SELECTION, selection_stream(function_id), command, if_exists=True)


def on_supervision_event(event: IncomingEvent) -> list[Reaction]:
    if event.event_type not in SUPERVISION_OUTCOMES:
        return []
    data = event.data
    outcome = SUPERVISION_OUTCOMES[event.event_type] or domain.ProjectOutcome(data["grade"])
    command = domain.NoteTrackRecord(
        issued_by=ACTOR,
        issued_at=event.time,
        society_id=data["society_id"],
        project_id=data["project_id"],
        function_id=data["function_id"],
        outcome=outcome,
        source_event_id=str(event.event_id),
    )
    return [Reaction(SOCIETY, society_stream(data["society_id"]), command, if_exists=True)]
