"""Public disclosure (信息公开): the facts the public may see, as the disclosure service's events.

Every internal event of the other services passes through the disclosure policy
(``policy.yaml``, applied by ``policy.py``). What the policy lets through becomes a
``FactDisclosed`` event in this service's own store, in a stream per public subject
(``function/<id>``, ``case/<id>``, ...). The relay publishes those events to
``chengneng.disclosure.public`` as CloudEvents of the public types
(``org.chengneng.public.<PublicType>``); the portal, the JSON API and the feeds read
the same events. A fact is never taken back: a correction or withdrawal is a new fact.

Layout as in the other services: events, state and ``evolve``, commands and ``decide``,
then the stream and its public wire format.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field

from shared import kafka
from shared.envelope import Envelope
from shared.errors import InvalidInput
from shared.messages import Aggregate, Command, Event, EventRegistry
from shared.principal import Role

PUBLIC_TOPIC = "chengneng.disclosure.public"
PUBLIC_TYPE_PREFIX = "org.chengneng.public"

# ---------------------------------------------------------------------------------------
# 1. Events — the stored contract: version with care.
# ---------------------------------------------------------------------------------------


class FactDisclosed(Event):
    """A fact of another service, reduced by the disclosure policy to what the public may see."""

    event_type: ClassVar[str] = "FactDisclosed"

    public_type: str
    subject: str
    data: dict[str, Any]
    correction: bool
    source_service: str
    source_event_type: str
    source_event_id: str
    source_stream_id: str
    source_stream_version: int


EVENTS = EventRegistry(FactDisclosed)


# ---------------------------------------------------------------------------------------
# 2. State and evolve
# ---------------------------------------------------------------------------------------


class SubjectState(BaseModel):
    """What the decider needs about one public subject: which source events it has shown."""

    model_config = ConfigDict(frozen=True)

    subject: str | None = None
    disclosed_sources: frozenset[str] = Field(default_factory=frozenset)


def initial_subject() -> SubjectState:
    return SubjectState()


def evolve_subject(state: SubjectState, event: Event) -> SubjectState:
    assert isinstance(event, FactDisclosed)
    return SubjectState(subject=event.subject, disclosed_sources=state.disclosed_sources | {event.source_event_id})


# ---------------------------------------------------------------------------------------
# 3. Commands and decide
# ---------------------------------------------------------------------------------------


class DiscloseFact(Command):
    """Disclose one policy-reduced fact (issued by the disclosure service's own policy)."""

    public_type: str
    subject: str
    data: dict[str, Any]
    correction: bool = False
    jurisdiction: str
    source_service: str
    source_event_type: str
    source_event_id: str
    source_stream_id: str
    source_stream_version: int


def decide_subject(state: SubjectState, command: Command) -> list[Event]:
    """Disclose a fact once: the same source event delivered again records nothing."""
    if not isinstance(command, DiscloseFact):
        raise TypeError(f"{type(command).__name__} is not a disclosure command")
    command.issued_by.require_role(Role.SYSTEM)
    if state.subject is not None and state.subject != command.subject:
        raise InvalidInput("subject_mismatch", f"fact for {command.subject} sent to {state.subject}")
    if command.source_event_id in state.disclosed_sources:
        return []
    return [
        FactDisclosed(
            public_type=command.public_type,
            subject=command.subject,
            data=command.data,
            correction=command.correction,
            source_service=command.source_service,
            source_event_type=command.source_event_type,
            source_event_id=command.source_event_id,
            source_stream_id=command.source_stream_id,
            source_stream_version=command.source_stream_version,
        )
    ]


# ---------------------------------------------------------------------------------------
# 4. Stream and public wire format
# ---------------------------------------------------------------------------------------

PUBLIC = Aggregate(
    stream_type="public-subject",
    initial=initial_subject,
    evolve=evolve_subject,
    decide=decide_subject,
    jurisdiction_of=lambda state, command: command.jurisdiction,
)


def public_stream(subject: str) -> str:
    return f"public-{subject}"


def public_type_uri(public_type: str) -> str:
    return f"{PUBLIC_TYPE_PREFIX}.{public_type}"


def public_message(envelope: Envelope) -> kafka.OutgoingMessage:
    """A disclosed fact on ``chengneng.disclosure.public``: a CloudEvent of its public type.

    The value holds only the policy-reduced data; the position in the disclosure log lets a
    subscriber resume and compare with the portal and the feeds.
    """
    fact = envelope.payload
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(envelope.event_id),
        "source": "/chengneng/disclosure",
        "type": public_type_uri(fact["public_type"]),
        "subject": fact["subject"],
        "time": envelope.occurred_at,
        "datacontenttype": "application/json",
        "dataschema": f"urn:chengneng:public:{fact['public_type']}:v1",
        "partitionkey": fact["subject"],
        "jurisdiction": envelope.jurisdiction,
        "correlationid": str(envelope.correlation_id),
        "position": str(envelope.position),
        "correction": "true" if fact["correction"] else "false",
        "sourceservice": fact["source_service"],
        "sourceeventid": fact["source_event_id"],
        "schemaversion": "1",
        "streamversion": str(envelope.stream_version),
        "eventhash": envelope.hash.hex(),
        "prevhash": envelope.prev_hash.hex(),
    }
    message = ce_kafka.to_binary(CloudEvent(attributes, fact["data"]), JSONFormat())
    key = message.key.encode() if isinstance(message.key, str) else (message.key or b"")
    return kafka.OutgoingMessage(key=key, value=message.value, headers=list(message.headers.items()))
