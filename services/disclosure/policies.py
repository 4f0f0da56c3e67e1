"""The disclosure service's one reaction: every internal event passes the disclosure policy.

An event the policy lets through becomes ``DiscloseFact`` on its public subject's stream;
the rest is dropped here, on purpose and by rule (``policy.yaml``), never by accident: an
event type the policy does not know stops the consumer (retried, then dead-lettered with
the reason), so a new internal event cannot leak or vanish unreviewed.
"""

from __future__ import annotations

from services.disclosure import domain
from services.disclosure.policy import load_policy
from shared.kafka import IncomingEvent
from shared.policies import Reaction, system_principal

ACTOR = system_principal("disclosure")


def source_service(event: IncomingEvent) -> str:
    """``/chengneng/registry`` → ``registry``."""
    return event.source.rstrip("/").rsplit("/", 1)[-1]


def on_internal_event(event: IncomingEvent) -> list[Reaction]:
    service = source_service(event)
    fact = load_policy().disclose(service, event.event_type, event.data)
    if fact is None:
        return []
    command = domain.DiscloseFact(
        issued_by=ACTOR,
        issued_at=event.time,
        public_type=fact.public_type,
        subject=fact.subject,
        data=fact.data,
        correction=fact.correction,
        jurisdiction=event.jurisdiction,
        source_service=service,
        source_event_type=event.event_type,
        source_event_id=str(event.event_id),
        source_stream_id=event.subject,
        source_stream_version=event.stream_version,
    )
    return [Reaction(domain.PUBLIC, domain.public_stream(fact.subject), command)]
