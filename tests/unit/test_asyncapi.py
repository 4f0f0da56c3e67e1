"""The AsyncAPI document of every topic: valid against the official schema, complete, in step."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from typer.testing import CliRunner

from services.disclosure.domain import PUBLIC_TOPIC, public_message
from services.disclosure.policy import load_policy
from services.registry.domain import Category, EntrustmentMode, FunctionProposed, Scope, SubKind
from services.supervision import deadlines
from services.supervision.domain import DueKind
from shared import asyncapi, kafka
from shared.cli import SERVICES, app, load_service
from shared.envelope import Envelope
from shared.principal import Principal, Role

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
VENDORED = REPO / "tests" / "vendor" / "asyncapi-3.0.0.json"
ARCHITECTURE = REPO.parent / "shared" / "ARCHITECTURE.md"
DOC_URI = "urn:chengneng:asyncapi"
TOPICS = {
    "chengneng.registry.events",
    "chengneng.capability.events",
    "chengneng.supervision.events",
    "chengneng.supervision.deadlines",
    "chengneng.disclosure.public",
    "chengneng.deadletter",
    "chengneng.audit.checkpoints",
}
INTERNAL = [s for s in SERVICES if s != "disclosure"]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not VENDORED.exists():
        pytest.fail(
            f"{VENDORED.relative_to(REPO)} is missing. Vendor the official AsyncAPI 3.0.0 JSON Schema: "
            'cd "$(mktemp -d)" && npm pack @asyncapi/specs && tar xzf asyncapi-specs-*.tgz && '
            f"cp 'package/schemas/3.0.0-without-$id.json' {VENDORED} (see tests/vendor/README.md)"
        )
    schema: dict[str, Any] = json.loads(VENDORED.read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def validator(spec: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(spec)
    assert cls is jsonschema.Draft7Validator  # what the schema's $schema says
    cls.check_schema(spec)
    return cls(spec, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def messages_of(doc: dict[str, Any], topic: str) -> set[str]:
    return {ref["$ref"].rsplit("/", 1)[-1] for ref in doc["channels"][topic]["messages"].values()}


def part_validator(doc: dict[str, Any], pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at ``pointer`` in the document, resolving its local $refs."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT7)
    )
    return jsonschema.Draft7Validator(
        {"$ref": f"{DOC_URI}#{pointer}"},
        registry=registry,
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    )


def assert_valid(doc: dict[str, Any], pointer: str, instance: Any) -> None:
    errors = [e.message for e in part_validator(doc, pointer).iter_errors(instance)]
    assert errors == [], f"{pointer}: {errors}"


# --- the official schema -------------------------------------------------------------


def test_the_document_is_valid_asyncapi_3(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_the_validator_rejects_a_broken_document(
    validator: jsonschema.protocols.Validator, doc: dict[str, Any]
) -> None:
    broken = json.loads(json.dumps(doc))
    broken["operations"]["registry.relay.send"]["action"] = "publish"  # AsyncAPI 2 wording
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(doc))
    del broken["info"]["version"]
    assert not validator.is_valid(broken)


def test_the_committed_file_is_the_document(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> None:
    text = (SCHEMAS / asyncapi.FILE).read_text(encoding="utf-8")
    assert yaml.safe_load(text) == doc
    assert text == asyncapi.render() == yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    assert "&id" not in text and "*id" not in text  # no YAML aliases: plain data for every reader


def test_every_reference_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref  # self-contained: no file or URL references
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(target, dict), ref


# --- complete ------------------------------------------------------------------------


def test_every_topic_has_a_channel(doc: dict[str, Any]) -> None:
    assert {c["address"] for c in doc["channels"].values()} == TOPICS
    assert {kafka.events_topic(s) for s in INTERNAL} | {PUBLIC_TOPIC, deadlines.TOPIC, kafka.DEADLETTER_TOPIC} <= set(
        doc["channels"]
    )


def test_every_topic_the_architecture_names_has_a_channel(doc: dict[str, Any]) -> None:
    if not ARCHITECTURE.exists():
        pytest.skip(f"{ARCHITECTURE} is not beside this checkout")
    named = set(re.findall(r"`(chengneng\.[a-z]+\.[a-z]+)`", ARCHITECTURE.read_text(encoding="utf-8")))
    assert {"chengneng.registry.events", "chengneng.audit.checkpoints"} <= named
    assert named <= {c["address"] for c in doc["channels"].values()}


def test_the_audit_topic_is_reserved(doc: dict[str, Any]) -> None:
    audit = doc["channels"]["chengneng.audit.checkpoints"]
    assert audit["messages"] == {} and audit["x-reserved"] is True
    assert audit["description"].startswith("Reserved: not produced yet")
    assert not [o for o in doc["operations"].values() if o["channel"]["$ref"].endswith("audit.checkpoints")]


@pytest.mark.parametrize("service", INTERNAL)
def test_every_internal_event_type_has_a_message(doc: dict[str, Any], service: str) -> None:
    types = load_service(service).events.by_type
    assert messages_of(doc, kafka.events_topic(service)) == {f"{service}.{t}" for t in types}
    for name, cls in types.items():
        message = doc["components"]["messages"][f"{service}.{name}"]
        assert message["payload"]["x-schema-file"] == f"schemas/{service}/{name}.v{cls.schema_version}.json"
        assert message["headers"]["allOf"][1]["properties"]["ce_type"]["const"] == kafka.cloudevent_type(service, name)


def test_every_public_type_has_a_message(doc: dict[str, Any]) -> None:
    public_types = load_policy().public_types()
    assert public_types
    assert messages_of(doc, PUBLIC_TOPIC) == {f"public.{t}" for t in public_types}
    for public_type in public_types:
        file = SCHEMAS / "public" / f"{public_type}.v1.json"
        schema = json.loads(file.read_text(encoding="utf-8"))
        payload = doc["components"]["messages"][f"public.{public_type}"]["payload"]
        assert payload["properties"] == schema["properties"]
        assert payload["required"] == schema["required"] and payload["additionalProperties"] is False


def test_every_message_is_json_with_a_key_and_described_headers(doc: dict[str, Any]) -> None:
    for message_id, message in doc["components"]["messages"].items():
        assert message["contentType"] == "application/json", message_id
        assert message["bindings"]["kafka"]["key"]["type"] == "string", message_id
        assert message["headers"], message_id
    for name, headers in doc["components"]["schemas"].items():
        assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"} <= set(
            headers["required"]
        ), name
        assert all(p["description"] for p in headers["properties"].values()), name


def test_operations_follow_the_wiring(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    receive = {
        (op_id.removesuffix(".receive"), op["channel"]["$ref"].rsplit("/", 1)[-1])
        for op_id, op in ops.items()
        if op["action"] == "receive"
    }
    assert receive == {
        ("capability-registry", "chengneng.registry.events"),
        ("capability-supervision", "chengneng.supervision.events"),
        ("registry-capability", "chengneng.capability.events"),
        ("registry-supervision", "chengneng.supervision.events"),
        ("supervision-registry", "chengneng.registry.events"),
        ("supervision-deadlines", "chengneng.supervision.deadlines"),
        ("disclosure-registry", "chengneng.registry.events"),
        ("disclosure-capability", "chengneng.capability.events"),
        ("disclosure-supervision", "chengneng.supervision.events"),
        ("deadlines", "chengneng.supervision.events"),
    }
    sends = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in ops.values() if op["action"] == "send"}
    assert sends == TOPICS - {"chengneng.audit.checkpoints"}
    assert ops["registry.relay.send"]["channel"] == {"$ref": "#/channels/chengneng.registry.events"}
    assert ops["disclosure.relay.send"]["channel"] == {"$ref": "#/channels/chengneng.disclosure.public"}
    group = ops["capability-registry.receive"]["bindings"]["kafka"]["groupId"]
    assert group["enum"] == ["chengneng.capability-registry"]


def test_the_document_is_deterministic(doc: dict[str, Any]) -> None:
    assert asyncapi.render() == asyncapi.render(doc)
    for section in (doc["channels"], doc["operations"], doc["components"]["messages"]):
        assert list(section) == sorted(section)


# --- real records fit their messages ---------------------------------------------------


def envelope(event_type: str, payload: dict[str, Any], stream_id: str = "function-fn-1") -> Envelope:
    return Envelope(
        stream_id=stream_id,
        stream_type="function",
        stream_version=3,
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=1,
        occurred_at=datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
        actor=Principal(subject="alice", organisation="deyang-hr", role=Role.DEPARTMENT, jurisdiction="510600"),
        jurisdiction="510600",
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        payload=payload,
        prev_hash=bytes(32),
        hash=bytes.fromhex("ab" * 32),
        position=42,
    )


def proposed() -> dict[str, Any]:
    return FunctionProposed(
        function_id="fn-1",
        jurisdiction="510600",
        title="科研项目完成情况评估",
        description="Post-completion evaluation of municipal research projects.",
        category=Category.SCIENCE_EVALUATION,
        sub_kind=SubKind.PROJECT_POST_EVALUATION,
        scope=Scope.WHOLE,
        entrustment_mode=EntrustmentMode.PURCHASE_OF_SERVICES,
        department="deyang-science-bureau",
        proposed_by_org="deyang-association",
        proposer_role=Role.ASSOCIATION,
    ).model_dump(mode="json")


def check_record(doc: dict[str, Any], message_id: str, record: kafka.OutgoingMessage) -> None:
    pointer = f"/components/messages/{message_id}"
    headers = {name: value.decode() for name, value in record.headers}
    assert_valid(doc, f"{pointer}/headers", headers)
    assert_valid(doc, f"{pointer}/payload", json.loads(record.value))
    assert_valid(doc, f"{pointer}/bindings/kafka/key", record.key.decode())


def test_a_real_internal_record_fits_its_message(doc: dict[str, Any]) -> None:
    record = kafka.to_message("registry", envelope("FunctionProposed", proposed()))
    check_record(doc, "registry.FunctionProposed", record)
    wrong_type = dict(record.headers) | {"ce_type": b"org.chengneng.registry.FunctionListed"}
    assert not part_validator(doc, "/components/messages/registry.FunctionProposed/headers").is_valid(
        {k: v.decode() for k, v in wrong_type.items()}
    )


def test_a_real_public_record_fits_its_message(doc: dict[str, Any]) -> None:
    fact = load_policy().disclose("registry", "FunctionProposed", proposed())
    assert fact is not None
    payload = {
        "public_type": fact.public_type,
        "subject": fact.subject,
        "data": fact.data,
        "correction": fact.correction,
        "source_service": "registry",
        "source_event_id": str(uuid.uuid4()),
    }
    record = public_message(envelope("FactDisclosed", payload, stream_id="public-function/fn-1"))
    check_record(doc, f"public.{fact.public_type}", record)
    headers = doc["components"]["schemas"]["headers.public"]["properties"]
    assert not {h for h in headers if h.startswith("ce_actor")}  # who acted stays internal


def test_a_real_deadline_record_fits_its_message(doc: dict[str, Any]) -> None:
    record = deadlines.deadline_message(
        "hr-1-7", DueKind.RECTIFICATION, "r-1", date(2026, 2, 1), date(2026, 2, 3), "510600", uuid.uuid4()
    )
    check_record(doc, "deadlines.DeadlinePassed", record)


# --- `chengneng schemas check` -------------------------------------------------------


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    return root


def check(root: Path) -> Any:
    return CliRunner().invoke(app, ["schemas", "check", "--root", str(root)])


def test_schemas_check_passes_on_the_committed_files(copied: Path) -> None:
    result = check(copied)
    assert result.exit_code == 0, result.output
    assert "schemas match the code" in result.output


def test_schemas_check_fails_when_the_asyncapi_document_is_edited(copied: Path) -> None:
    path = copied / asyncapi.FILE
    path.write_text(path.read_text(encoding="utf-8").replace("kafka:9092", "kafka:9093", 1), encoding="utf-8")
    result = check(copied)
    assert result.exit_code == 1
    assert f"out of date: {asyncapi.FILE}" in result.output


def test_schemas_check_fails_without_the_asyncapi_document_and_generate_restores_it(copied: Path) -> None:
    (copied / asyncapi.FILE).unlink()
    result = check(copied)
    assert result.exit_code == 1 and f"missing: {asyncapi.FILE}" in result.output
    generated = CliRunner().invoke(app, ["schemas", "generate", "--root", str(copied)])
    assert generated.exit_code == 0, generated.output
    assert (copied / asyncapi.FILE).read_text(encoding="utf-8") == (SCHEMAS / asyncapi.FILE).read_text(encoding="utf-8")
    assert check(copied).exit_code == 0
