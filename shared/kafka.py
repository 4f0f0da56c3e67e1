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
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.envelope import Envelope

TOPIC_PREFIX = "chengneng"
DEADLETTER_TOPIC = "chengneng.deadletter"
DEFAULT_PARTITIONS = 3
TYPE_PREFIX = "org.chengneng"


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
    """Map a stored envelope to a Kafka record in CloudEvents binary content mode.

    Written directly (the binding is a header per attribute): the CloudEvents SDK took ~50 µs
    a record, which capped every relay. tests/unit/test_envelope_and_kafka.py reads what
    this writes with the SDK, and what the SDK writes with ``from_record``.
    """
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(envelope.event_id).encode()),
        ("ce_source", f"/chengneng/{service}".encode()),
        ("ce_type", cloudevent_type(service, envelope.event_type).encode()),
        ("ce_subject", envelope.stream_id.encode()),
        ("ce_time", _rfc3339(envelope.occurred_at).encode()),
        ("content-type", b"application/json"),
        ("ce_dataschema", f"urn:chengneng:schema:{service}:{envelope.event_type}:v{envelope.schema_version}".encode()),
        ("ce_partitionkey", envelope.stream_id.encode()),
        # Extension attributes (lower-case alphanumerics only, per the spec).
        ("ce_jurisdiction", envelope.jurisdiction.encode()),
        ("ce_correlationid", str(envelope.correlation_id).encode()),
        ("ce_streamtype", envelope.stream_type.encode()),
        ("ce_streamversion", str(envelope.stream_version).encode()),
        ("ce_schemaversion", str(envelope.schema_version).encode()),
        ("ce_eventhash", envelope.hash.hex().encode()),
        ("ce_prevhash", envelope.prev_hash.hex().encode()),
        ("ce_actorsubject", envelope.actor.subject.encode()),
        ("ce_actororg", envelope.actor.organisation.encode()),
        ("ce_actorrole", envelope.actor.role.value.encode()),
        ("ce_actorjurisdiction", envelope.actor.jurisdiction.encode()),
    ]
    if envelope.causation_id is not None:
        headers.append(("ce_causationid", str(envelope.causation_id).encode()))
    if envelope.position is not None:  # a derived record (a deadline) has no place in a store
        headers.append(("ce_position", str(envelope.position).encode()))
    return OutgoingMessage(key=envelope.stream_id.encode(), value=orjson.dumps(envelope.payload), headers=headers)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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


_REQUIRED = ("ce_specversion", "ce_id", "ce_time", "ce_type", "ce_source")


def from_record(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], key: bytes | None, value: bytes
) -> IncomingEvent:
    """Parse a consumed Kafka record; ``MalformedMessage`` says precisely what is wrong."""
    attrs: dict[str, Any] = {}
    try:
        for name, raw in headers:
            lower = name.lower()
            if lower.startswith("ce_"):
                attrs[lower[3:]] = raw.decode()
            elif lower == "content-type":
                attrs["datacontenttype"] = raw.decode()
    except (UnicodeDecodeError, AttributeError) as exc:
        raise MalformedMessage(f"missing or invalid CloudEvents attribute: a header is not UTF-8 text ({exc})") from exc
    # An event without its own id could never be de-duplicated: id and time are required.
    for required in _REQUIRED:
        if required[3:] not in attrs:
            raise MalformedMessage(f"missing or invalid CloudEvents attribute: header {required} is absent")
    if attrs["specversion"] != "1.0":
        raise MalformedMessage(f"not a CloudEvent in binary mode: specversion {attrs['specversion']!r} is not 1.0")
    if attrs.get("datacontenttype", "application/json").split(";")[0].strip() != "application/json":
        raise MalformedMessage(
            f"not a CloudEvent in binary mode: content type {attrs['datacontenttype']!r} is not JSON"
        )
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not a CloudEvent in binary mode: the value is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MalformedMessage("the value is not a JSON object")
    try:
        attrs["time"] = datetime.fromisoformat(attrs["time"])
        if attrs["time"].tzinfo is None:
            raise ValueError(f"time {attrs['time']} has no zone")
        ce_type = attrs["type"]
        causation = attrs.get("causationid")
        return IncomingEvent(
            event_id=uuid.UUID(attrs["id"]),
            source=attrs["source"],
            type=ce_type,
            event_type=ce_type.rsplit(".", 1)[-1],
            subject=attrs["subject"],
            time=attrs["time"],
            jurisdiction=attrs["jurisdiction"],
            correlation_id=uuid.UUID(attrs["correlationid"]),
            causation_id=uuid.UUID(causation) if causation else None,
            stream_version=int(attrs["streamversion"]),
            schema_version=int(attrs["schemaversion"]),
            data=data,
            attributes=attrs,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise MalformedMessage(f"missing or invalid CloudEvents attribute: {exc}") from exc


def deadletter_headers(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] | None,
    reason: str,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: the original record's, then why and where it came from."""
    return [
        *(headers or ()),
        ("deadletter_reason", reason.encode()),
        ("deadletter_consumer", consumer.encode()),
        ("deadletter_topic", topic.encode()),
        ("deadletter_partition", str(partition).encode()),
        ("deadletter_offset", str(offset).encode()),
    ]


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        yield admin
    finally:
        with contextlib.suppress(Exception):
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
