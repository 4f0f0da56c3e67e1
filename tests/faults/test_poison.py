"""Poison messages on every consumed topic of the running stack: each consumer moves each one
to ``chengneng.deadletter`` with the reason, keeps going, and applies the good event after it.

Every kind of consumer is covered, because the records go onto the real topics: the inbox
consumers of the four services (policies and read models) and the deadline processor's
faust agent. Nothing may be dropped silently: each poison record shows up once per
consumer that reads it, and the good record that follows on the same partition is applied.

This module runs last in the directory on purpose: it puts records on the topics that no
store holds, which `chengneng audit verify` (run by the other modules) rightly reports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from aiokafka import AIOKafkaProducer

from services.capability import domain as capability
from services.registry import domain as registry
from services.supervision import deadlines
from services.supervision import domain as supervision
from shared import kafka
from shared.envelope import Envelope
from shared.messages import Event
from shared.principal import Principal, Role
from tests.conftest import wait_until
from tests.faults.conftest import DEYANG, FaultStack, read_topic

pytestmark = pytest.mark.stack

ACTOR = Principal(subject="clerk", organisation="deyang-sci", role=Role.DEPARTMENT, jurisdiction=DEYANG)

CONSUMERS = {
    "registry": ["capability-registry", "supervision-registry", "disclosure-registry"],
    "capability": ["registry-capability", "disclosure-capability"],
    "supervision": [
        "registry-supervision",
        "capability-supervision",
        "disclosure-supervision",
        "deadlines-supervision",
    ],
    "deadlines": ["supervision-deadlines"],
}
"""Who reads each producer's topic: every one of them must dead-letter every poison record."""

REQUIRED_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "ce_jurisdiction",
    "ce_correlationid",
    "ce_streamversion",
    "ce_schemaversion",
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Poison:
    name: str
    reason: str
    """What the dead letter's reason must say (a fragment, lower case)."""
    make: Callable[[Headers, bytes], tuple[Headers, bytes]]


def _set(headers: Headers, name: str, value: bytes) -> Headers:
    return [(n, value if n == name else v) for n, v in headers]


def _without(headers: Headers, name: str) -> Headers:
    return [(n, v) for n, v in headers if n != name]


def _poisons(service: str) -> list[Poison]:
    poisons = [
        Poison("malformed-json", "not valid json", lambda h, v: (h, b'{"function_id": "unterminated')),
        Poison("not-an-object", "not a json object", lambda h, v: (h, b"[1, 2, 3]")),
        Poison(
            "unknown-type",
            "unknown event type",
            lambda h, v: (_set(h, "ce_type", f"org.chengneng.{service}.NoSuchEvent".encode()), v),
        ),
        Poison("unknown-version", "unknown schema version", lambda h, v: (_set(h, "ce_schemaversion", b"99"), v)),
        Poison("schema-mismatch", "does not match its schema", lambda h, v: (h, b'{"unexpected": true}')),
        Poison(
            "unknown-source",
            "unknown source",
            lambda h, v: (
                _set(_set(h, "ce_source", b"/chengneng/elsewhere"), "ce_type", b"org.chengneng.elsewhere.Thing"),
                v,
            ),
        ),
        Poison("bad-id", "attribute", lambda h, v: (_set(h, "ce_id", b"not-a-uuid"), v)),
        Poison("no-headers", "absent", lambda h, v: ([], v)),
    ]
    for header in REQUIRED_HEADERS:
        poisons.append(Poison(f"missing-{header}", "attribute", lambda h, v, header=header: (_without(h, header), v)))
    return poisons


def _envelope(service: str, stream: str, event: Event) -> Envelope:
    return Envelope(
        stream_id=stream,
        stream_type=stream.split("-", 1)[0],
        stream_version=1,
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        occurred_at=datetime.now(UTC),
        actor=ACTOR,
        jurisdiction=DEYANG,
        correlation_id=uuid.uuid4(),
        causation_id=None,
        payload=event.model_dump(mode="json"),
        prev_hash=bytes(32),
        hash=bytes(32),
        position=1,
    )


def good_records(tag: str) -> dict[str, tuple[uuid.UUID, kafka.OutgoingMessage]]:
    """A well-formed event of each producer, each on a stream of its own (the first of it)."""
    fid, sid, pid = f"poison-f-{tag}", f"poison-s-{tag}", f"poison-p-{tag}"
    events: dict[str, tuple[str, Event]] = {
        "registry": (
            registry.function_stream(fid),
            registry.FunctionProposed(
                function_id=fid,
                jurisdiction=DEYANG,
                title="毒丸之后的职能",
                description="",
                category=registry.Category.AWARD_NOMINATION,
                sub_kind=registry.SubKind.NATIONAL_AWARD_NOMINATION,
                scope=registry.Scope.WHOLE,
                entrustment_mode=registry.EntrustmentMode.PURCHASE_OF_SERVICES,
                department="deyang-sci",
                proposed_by_org="deyang-sci",
                proposer_role=Role.DEPARTMENT,
            ),
        ),
        "capability": (
            capability.society_stream(sid),
            capability.SocietyRegistered(
                society_id=sid,
                name="毒丸之后的学会",
                level=capability.SocietyLevel.CITY,
                jurisdiction=DEYANG,
                relation=capability.Relation.SUPERVISED,
                association="deyang-cast",
                disciplines=["engineering"],
                registration_number="REG-1",
                registered_on="2020-01-15",
                reconfirmation_due="2030-01-15",
            ),
        ),
        "supervision": (
            supervision.case_stream(pid),
            supervision.CaseOpened(
                project_id=pid,
                function_id=fid,
                society_id=sid,
                society_name="毒丸之后的学会",
                department="deyang-sci",
                jurisdiction=DEYANG,
                title="毒丸之后的项目",
                category=registry.Category.AWARD_NOMINATION,
            ),
        ),
    }
    out: dict[str, tuple[uuid.UUID, kafka.OutgoingMessage]] = {}
    for service, (stream, event) in events.items():
        envelope = _envelope(service, stream, event)
        out[service] = (envelope.event_id, kafka.to_message(service, envelope))
    deadline = deadlines.deadline_message(
        pid, "milestone", "m1", date(2026, 1, 1), date(2026, 1, 2), DEYANG, uuid.uuid4()
    )
    out["deadlines"] = (uuid.UUID(dict(deadline.headers)["ce_id"].decode()), deadline)
    return out


def topic_of(service: str) -> str:
    return deadlines.TOPIC if service == "deadlines" else kafka.events_topic(service)


async def send(bootstrap: str, records: list[tuple[str, bytes, Headers, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, headers, value in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def test_every_consumer_dead_letters_every_poison_record_and_applies_the_next_good_one(
    fault_stack: FaultStack,
) -> None:
    fs = fault_stack
    fs.tainted = True  # the poison stays on the topics, where the audit of a later test would find it
    tag = uuid.uuid4().hex[:8]
    good = good_records(tag)
    records: list[tuple[str, bytes, Headers, bytes]] = []
    expected: set[tuple[str, str]] = set()
    reasons: dict[str, str] = {}
    for service, (_, message) in good.items():
        for poison in _poisons(service):
            headers = _set(list(message.headers), "ce_id", str(uuid.uuid4()).encode())
            headers, value = poison.make(headers, message.value)
            case = f"{service}:{poison.name}:{tag}"
            # The same key as the good record: the same partition, so the good one comes last.
            records.append((topic_of(service), message.key, [*headers, ("x-poison", case.encode())], value))
            reasons[case] = poison.reason
            expected |= {(consumer, case) for consumer in CONSUMERS[service]}
        records.append((topic_of(service), message.key, list(message.headers), message.value))
    asyncio.run(send(fs.broker.bootstrap, records))

    # Every consumer applies the good event that follows its poison records.
    def applied() -> list[str]:
        missing = []
        for service, (event_id, _) in good.items():
            for consumer in CONSUMERS[service]:
                if consumer.startswith("deadlines-"):
                    done = fs.value("SELECT count(*) FROM deadlines.cases WHERE project_id = $1", f"poison-p-{tag}")
                else:
                    done = fs.value(
                        f"SELECT count(*) FROM {consumer.split('-')[0]}.inbox "
                        "WHERE consumer = $1 AND event_id = $2 AND outcome = 'applied'",
                        consumer,
                        event_id,
                    )
                if not done:
                    missing.append(consumer)
        return missing

    wait_until(lambda: not applied(), timeout=120, interval=1.0, message="every consumer to apply the good event")

    # ... and has sent every poison record to the dead letters, with the reason.
    def dead_letters() -> dict[tuple[str, str], list[dict[str, bytes]]]:
        found: dict[tuple[str, str], list[dict[str, bytes]]] = {}
        for record in asyncio.run(read_topic(fs.broker.bootstrap, kafka.DEADLETTER_TOPIC, settle_s=1.0)):
            headers = dict(record.headers)
            case = headers.get("x-poison", b"").decode()
            if case.endswith(tag):
                found.setdefault((headers["deadletter_consumer"].decode(), case), []).append(headers)
        return found

    found = wait_until(
        lambda: (f := dead_letters()) and set(f) >= expected and f,
        timeout=60,
        interval=1.0,
        message="a dead letter of every poison record from every consumer",
    )
    assert set(found) == expected
    for (consumer, case), letters in found.items():
        headers = letters[0]  # at least once: a consumer restarted before its commit may send it again
        reason = headers["deadletter_reason"].decode()
        assert reasons[case] in reason.lower(), (consumer, case, reason)
        service = case.split(":")[0]
        assert headers["deadletter_topic"].decode() == topic_of(service)
        assert headers["deadletter_offset"].decode().isdigit()

    # The good events had their effects: disclosed in public, folded by the deadline processor.
    public = fs.stack.client("disclosure")
    wait_until(
        lambda: public.get(f"/public/functions/poison-f-{tag}").status_code == 200,
        message="the good registry event to be disclosed",
    )
    # Recorded in the inbox as dead-lettered (an event id was readable), never as applied.
    poisoned = fs.value("SELECT count(*) FROM disclosure.inbox WHERE outcome = 'deadlettered'")
    assert poisoned >= 1
