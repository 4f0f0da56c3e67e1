"""Reactions of the supervision service to other events (pure: event in, commands out).

- registry ``FunctionAssigned`` → ``OpenCase``: the pilot project's case opens by itself.
  Its id is ``<function_id>-<version of the function stream at the assignment>``, so a
  function assigned again after a return gets a case of its own.
- the deadline processor's ``DeadlinePassed`` (``chengneng.supervision.deadlines``) →
  ``MarkMilestoneOverdue`` or ``MarkRectificationOverdue`` on the case.
"""

from __future__ import annotations

from services.supervision import domain
from services.supervision.domain import CASE, case_stream
from shared.kafka import IncomingEvent
from shared.policies import Reaction, system_principal

ACTOR = system_principal("supervision")


def project_id_for(function_id: str, assignment_version: int) -> str:
    return f"{function_id}-{assignment_version}"


def on_registry_event(event: IncomingEvent) -> list[Reaction]:
    if event.event_type != "FunctionAssigned":
        return []
    data = event.data
    project_id = project_id_for(data["function_id"], event.stream_version)
    command = domain.OpenCase(
        issued_by=ACTOR,
        issued_at=event.time,
        project_id=project_id,
        function_id=data["function_id"],
        society_id=data["society_id"],
        society_name=data["society_name"],
        department=data["department"],
        jurisdiction=data["jurisdiction"],
        title=data["title"],
        category=data["category"],
    )
    return [Reaction(CASE, case_stream(project_id), command)]


def on_deadline(event: IncomingEvent) -> list[Reaction]:
    if event.event_type != "DeadlinePassed":
        return []
    data = event.data
    command: domain.CaseCommand
    if data["kind"] == domain.DueKind.MILESTONE:
        command = domain.MarkMilestoneOverdue(
            issued_by=ACTOR,
            issued_at=event.time,
            project_id=data["project_id"],
            milestone_id=data["item_id"],
            detected_on=data["detected_on"],
        )
    else:
        command = domain.MarkRectificationOverdue(
            issued_by=ACTOR,
            issued_at=event.time,
            project_id=data["project_id"],
            rectification_id=data["item_id"],
            detected_on=data["detected_on"],
        )
    return [Reaction(CASE, case_stream(data["project_id"]), command, if_exists=True)]
