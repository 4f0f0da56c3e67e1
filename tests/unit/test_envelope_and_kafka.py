"""The stored envelope's canonical bytes and hash chain, and its CloudEvents form on Kafka."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from shared.db import _jsonb_parse
from shared.envelope import GENESIS_HASH, Envelope, canonical_bytes, chain_hash
from shared.kafka import MalformedMessage, OutgoingMessage, from_record, to_message
from shared.principal import Principal, Role

ACTOR = Principal(subject="alice", organisation="dept-x", role=Role.DEPARTMENT, jurisdiction="510600")
OCCURRED = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
EVENT_ID = uuid.UUID("5057bde2-24be-4a40-b02b-c77baa632b84")
CORRELATION_ID = uuid.UUID("a3ff034e-b6c0-4df1-8f73-6df0651ee2f0")
CAUSATION_ID = uuid.UUID("0f1e2d3c-4b5a-4968-8776-655443322110")


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "stream_id": "function-510681-0001",
        "stream_type": "function",
        "stream_version": 3,
        "event_id": EVENT_ID,
        "event_type": "FunctionProposed",
        "schema_version": 1,
        "occurred_at": OCCURRED,
        "actor": ACTOR,
        "jurisdiction": "510681",
        "correlation_id": CORRELATION_ID,
        "causation_id": None,
        "payload": {"title": "团体标准研制", "function_id": "f-1", "nested": {"b": 2, "a": [1, "x"]}},
        "prev_hash": GENESIS_HASH,
    }
    values.update(overrides)
    return values


def envelope(**overrides: Any) -> Envelope:
    values = fields(**overrides)
    return Envelope(**values, hash=chain_hash(canonical_bytes(**values)), position=42)


# --- canonical bytes and hash --------------------------------------------------------


def test_canonical_bytes_are_rfc8785_sorted_keys_without_whitespace() -> None:
    data = canonical_bytes(**fields())
    document = json.loads(data)
    expected = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert data == expected
    assert list(document) == sorted(document)
    assert "团体标准研制".encode() in data  # UTF-8 as is, not \\u escapes


def test_canonical_bytes_name_every_protected_field() -> None:
    document = json.loads(canonical_bytes(**fields(causation_id=CAUSATION_ID)))
    assert document["occurred_at"] == "2024-05-01T12:30:15.123456+00:00"
    assert document["event_id"] == str(EVENT_ID)
    assert document["causation_id"] == str(CAUSATION_ID)
    assert document["prev_hash"] == "00" * 32
    assert document["actor"] == {
        "subject": "alice",
        "organisation": "dept-x",
        "role": "department",
        "jurisdiction": "510600",
    }


def test_equal_payloads_built_in_different_key_orders_give_identical_bytes() -> None:
    one = {"title": "t", "department": "d", "nested": {"x": 1, "y": [1, 2], "z": None}}
    other = {"nested": {"z": None, "y": [1, 2], "x": 1}, "department": "d", "title": "t"}
    assert list(one) != list(other)
    assert canonical_bytes(**fields(payload=one)) == canonical_bytes(**fields(payload=other))


def test_the_same_instant_in_another_zone_gives_identical_bytes() -> None:
    beijing = OCCURRED.astimezone(timezone(timedelta(hours=8)))
    assert canonical_bytes(**fields(occurred_at=beijing)) == canonical_bytes(**fields())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", {"title": "团体标准研制", "function_id": "f-2", "nested": {"b": 2, "a": [1, "x"]}}),
        ("stream_version", 4),
        ("actor", ACTOR.model_copy(update={"subject": "mallory"})),
        ("actor", ACTOR.model_copy(update={"role": Role.ASSOCIATION})),
        ("prev_hash", b"\x01" * 32),
        ("occurred_at", OCCURRED + timedelta(microseconds=1)),
        ("jurisdiction", "510600"),
        ("event_type", "FunctionListed"),
        ("causation_id", CAUSATION_ID),
    ],
)
def test_changing_a_protected_field_changes_the_hash(field: str, value: Any) -> None:
    assert chain_hash(canonical_bytes(**fields(**{field: value}))) != chain_hash(canonical_bytes(**fields()))


def test_a_stored_envelope_whose_payload_was_altered_fails_its_hash_check() -> None:
    stored = envelope()
    assert stored.hash_is_valid()
    tampered = msgspec.structs.replace(stored, payload={**stored.payload, "title": "改"})
    assert not tampered.hash_is_valid()


def test_position_and_recorded_at_are_not_hashed() -> None:
    stored = envelope()
    moved = msgspec.structs.replace(stored, position=999, recorded_at=OCCURRED + timedelta(seconds=3))
    assert moved.hash_is_valid()


def test_an_envelope_cannot_be_changed_in_place() -> None:
    stored = envelope()
    with pytest.raises(AttributeError):
        stored.payload = {"title": "改"}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        stored.extra = 1  # type: ignore[attr-defined]
    assert stored == envelope() and stored != msgspec.structs.replace(stored, position=43)


def test_jsonb_in_an_unknown_wire_version_is_refused() -> None:
    assert _jsonb_parse(b'\x01{"a": [1, "\xc3\xa9"]}') == {"a": [1, "é"]}
    with pytest.raises(ValueError, match="jsonb wire format version"):
        _jsonb_parse(b'\x02{"a": 1}')


def test_a_naive_occurred_at_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        canonical_bytes(**fields(occurred_at=datetime(2024, 5, 1, 12, 30)))


# --- Kafka: CloudEvents binary mode --------------------------------------------------


def message(**overrides: Any) -> OutgoingMessage:
    return to_message("registry", envelope(**overrides))


def test_a_message_read_back_keeps_the_events_identity_and_data() -> None:
    sent = envelope(causation_id=CAUSATION_ID)
    out = to_message("registry", sent)
    got = from_record(out.headers, out.key, out.value)
    assert got.event_id == EVENT_ID
    assert got.subject == sent.stream_id
    assert got.type == "org.chengneng.registry.FunctionProposed"
    assert got.event_type == "FunctionProposed"
    assert got.source == "/chengneng/registry"
    assert got.time == OCCURRED
    assert got.jurisdiction == "510681"
    assert got.correlation_id == CORRELATION_ID
    assert got.causation_id == CAUSATION_ID
    assert got.stream_version == 3
    assert got.schema_version == 1
    assert got.data == sent.payload


def test_a_message_without_a_cause_reads_back_without_one() -> None:
    out = message()
    assert from_record(tuple(out.headers), out.key, out.value).causation_id is None


def test_the_record_key_is_the_stream_id() -> None:
    assert message().key == b"function-510681-0001"


def test_the_headers_carry_the_cloudevents_attributes() -> None:
    headers = dict(message().headers)
    for name in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject", "content-type"):
        assert name in headers, f"{name} missing from {sorted(headers)}"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == str(EVENT_ID).encode()
    assert headers["ce_subject"] == b"function-510681-0001"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_jurisdiction"] == b"510681"
    assert headers["ce_actorrole"] == b"department"


def test_the_value_is_the_json_payload() -> None:
    sent = envelope()
    assert json.loads(to_message("registry", sent).value) == sent.payload


def _without(headers: list[tuple[str, bytes]], name: str) -> list[tuple[str, bytes]]:
    remaining = [(k, v) for k, v in headers if k != name]
    assert len(remaining) == len(headers) - 1, f"{name} was not in the headers"
    return remaining


def _replaced(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    assert any(k == name for k, _ in headers), f"{name} was not in the headers"
    return [(k, value if k == name else v) for k, v in headers]


def test_a_value_that_is_not_json_is_malformed() -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(out.headers, out.key, b"{not json")


def test_a_json_array_value_is_malformed() -> None:
    out = message()
    with pytest.raises(MalformedMessage, match="JSON object"):
        from_record(out.headers, out.key, b"[1, 2, 3]")


def test_a_record_without_ce_id_is_malformed() -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(_without(out.headers, "ce_id"), out.key, out.value)


def test_a_record_without_ce_time_is_malformed() -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(_without(out.headers, "ce_time"), out.key, out.value)


def test_a_record_with_an_id_that_is_not_a_uuid_is_malformed() -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(_replaced(out.headers, "ce_id", b"not-a-uuid"), out.key, out.value)


@pytest.mark.parametrize("header", ["ce_source", "ce_type", "ce_subject", "ce_jurisdiction", "ce_correlationid"])
def test_a_record_missing_a_required_attribute_is_malformed(header: str) -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(_without(out.headers, header), out.key, out.value)


@pytest.mark.parametrize("value", [b"three", b"3.5", b""])
def test_a_non_integer_stream_version_is_malformed(value: bytes) -> None:
    out = message()
    with pytest.raises(MalformedMessage):
        from_record(_replaced(out.headers, "ce_streamversion", value), out.key, out.value)


# --- the hand-written binding agrees with the CloudEvents SDK ------------------------------


def test_what_we_write_the_cloudevents_sdk_reads_as_the_same_event() -> None:
    from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
    from cloudevents.core.formats.json import JSONFormat

    env = envelope(causation_id=uuid.uuid4(), payload={"title": "软件工程师水平评价", "n": 3, "tags": ["a", "é"]})
    out = to_message("registry", env)
    event = from_binary(KafkaMessage(headers=dict(out.headers), key=out.key, value=out.value), JSONFormat())
    attrs = event.get_attributes()
    ours = from_record(out.headers, out.key, out.value)
    assert event.get_data() == env.payload == ours.data
    assert attrs["time"] == env.occurred_at == ours.time
    assert str(attrs["id"]) == str(env.event_id) and attrs["type"] == "org.chengneng.registry." + env.event_type
    for name, value in attrs.items():
        if name != "time":
            assert ours.attributes[name] == str(value), name


def test_what_the_cloudevents_sdk_writes_we_read() -> None:
    from cloudevents.core.bindings.kafka import to_binary
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    env = envelope()
    ours = to_message("registry", env)
    attributes = {name.removeprefix("ce_"): value.decode() for name, value in ours.headers if name.startswith("ce_")}
    attributes["time"] = env.occurred_at
    attributes["datacontenttype"] = "application/json"
    sdk = to_binary(CloudEvent(attributes, env.payload), JSONFormat())
    key = sdk.key.encode() if isinstance(sdk.key, str) else sdk.key
    parsed = from_record(list(sdk.headers.items()), key, sdk.value)
    assert parsed == from_record(ours.headers, ours.key, ours.value)
