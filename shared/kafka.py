"""Kafka topics and the CloudEvents binary-mode mapping of stored events.

Every stored event travels as a CloudEvent 1.0 in Kafka binary mode: attributes in
``ce_*`` headers, the JSON payload as the value, the stream id as the key (so one
case's events stay in order on one partition).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from shared.envelope import Envelope

TOPIC_PREFIX = "chengneng"
DEADLETTER_TOPIC = "chengneng.deadletter"
DEFAULT_PARTITIONS = 3
TYPE_PREFIX = "org.chengneng"

_FORMAT = JSONFormat()


def events_topic(service: str) -> str:
    return f"{TOPIC_PREFIX}.{service}.events"


def cloudevent_type(service: str, event_type: str) -> str:
    """``org.chengneng.registry.FunctionListed``: reverse-DNS, the service, the event name."""
    return f"{TYPE_PREFIX}.{service}.{event_type}"


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def to_message(service: str, envelope: Envelope) -> OutgoingMessage:
    """Map a stored envelope to a Kafka record in CloudEvents binary content mode."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(envelope.event_id),
        "source": f"/chengneng/{service}",
        "type": cloudevent_type(service, envelope.event_type),
        "subject": envelope.stream_id,
        "time": envelope.occurred_at,
        "datacontenttype": "application/json",
        "dataschema": f"urn:chengneng:schema:{service}:{envelope.event_type}:v{envelope.schema_version}",
        "partitionkey": envelope.stream_id,
        # Extension attributes (lower-case alphanumerics only, per the spec).
        "jurisdiction": envelope.jurisdiction,
        "correlationid": str(envelope.correlation_id),
        "streamtype": envelope.stream_type,
        "streamversion": str(envelope.stream_version),
        "schemaversion": str(envelope.schema_version),
        "eventhash": envelope.hash.hex(),
        "prevhash": envelope.prev_hash.hex(),
        "actorsubject": envelope.actor.subject,
        "actororg": envelope.actor.organisation,
        "actorrole": envelope.actor.role.value,
        "actorjurisdiction": envelope.actor.jurisdiction,
    }
    if envelope.causation_id is not None:
        attributes["causationid"] = str(envelope.causation_id)
    if envelope.position is not None:  # a derived record (a deadline) has no place in a store
        attributes["position"] = str(envelope.position)
    message = ce_kafka.to_binary(CloudEvent(attributes, envelope.payload), _FORMAT)
    key = message.key.encode() if isinstance(message.key, str) else (message.key or b"")
    return OutgoingMessage(key=key, value=message.value, headers=list(message.headers.items()))


@dataclass(frozen=True)
class IncomingEvent:
    """A consumed CloudEvent with the attributes consumers rely on, parsed and checked."""

    event_id: uuid.UUID
    source: str
    type: str
    event_type: str
    subject: str
    time: datetime
    jurisdiction: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    stream_version: int
    schema_version: int
    data: dict[str, Any]
    attributes: dict[str, Any]


class MalformedMessage(ValueError):
    """A record that is not a well-formed chengneng CloudEvent; it goes to the dead letters."""


def from_record(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], key: bytes | None, value: bytes
) -> IncomingEvent:
    """Parse a consumed Kafka record; ``MalformedMessage`` says precisely what is wrong."""
    names = {name.lower() for name, _ in headers}
    # The SDK would invent a fresh id and the current time for missing ones: an event
    # without its own id could never be de-duplicated, so both are required here.
    for required in ("ce_specversion", "ce_id", "ce_time", "ce_type", "ce_source"):
        if required not in names:
            raise MalformedMessage(f"missing or invalid CloudEvents attribute: header {required} is absent")
    try:
        event = ce_kafka.from_binary(ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value), _FORMAT)
    except Exception as exc:  # the SDK raises several unrelated types
        raise MalformedMessage(f"not a CloudEvent in binary mode: {exc}") from exc
    attrs = event.get_attributes()
    try:
        data = event.get_data()
        if not isinstance(data, dict):
            raise MalformedMessage("the value is not a JSON object")
        ce_type = str(attrs["type"])
        causation = attrs.get("causationid")
        return IncomingEvent(
            event_id=uuid.UUID(str(attrs["id"])),
            source=str(attrs["source"]),
            type=ce_type,
            event_type=ce_type.rsplit(".", 1)[-1],
            subject=str(attrs["subject"]),
            time=attrs["time"],
            jurisdiction=str(attrs["jurisdiction"]),
            correlation_id=uuid.UUID(str(attrs["correlationid"])),
            causation_id=uuid.UUID(str(causation)) if causation else None,
            stream_version=int(attrs["streamversion"]),
            schema_version=int(attrs["schemaversion"]),
            data=data,
            attributes=attrs,
        )
    except MalformedMessage:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"missing or invalid CloudEvents attribute: {exc}") from exc


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str | AIOKafkaAdminClient,
    topics: list[str],
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication: int = 1,
) -> list[str]:
    """Create the topics that do not exist; returns the ones it created.

    Takes a bootstrap address (a client for this call) or a running admin client.
    """
    if isinstance(bootstrap, str):
        async with admin_client(bootstrap) as admin:
            return await ensure_topics(admin, topics, partitions=partitions, replication=replication)
    admin = bootstrap
    existing = set(await admin.list_topics())
    created: list[str] = []
    for topic in (t for t in topics if t not in existing):
        try:
            await admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=replication)])
            created.append(topic)
        except TopicAlreadyExistsError:
            pass
    return created


async def existing_topics(bootstrap: str) -> set[str]:
    async with admin_client(bootstrap) as admin:
        return set(await admin.list_topics())
