"""The disclosure policy: every internal event has an entry, and nothing leaves that it does not allow."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.disclosure.policy import (
    DEFAULT_PATH,
    PUBLIC_TOPIC,
    PUBLIC_TYPE_PREFIX,
    DisclosurePolicy,
    PolicyError,
    coverage_problems,
    load_policy,
    public_schema,
    public_schemas,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE_SERVICES = ("registry", "capability", "supervision")
SCHEMA_FILES = sorted(p for s in SOURCE_SERVICES for p in (REPO / "schemas" / s).glob("*.v1.json"))
MARKER = re.compile(r"MARK-[A-Za-z0-9_.\[\]]+")


def event_key(path: Path) -> tuple[str, str]:
    return path.parent.name, path.name.split(".")[0]


@pytest.fixture(scope="module")
def policy() -> DisclosurePolicy:
    return load_policy()


@pytest.fixture(scope="module")
def original_doc() -> dict[str, Any]:
    return yaml.load(DEFAULT_PATH.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture
def policy_doc(original_doc: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the policy file's content, for a test to break."""
    return copy.deepcopy(original_doc)


# --- a payload with a marker in every field --------------------------------------------


def fill(schema: dict[str, Any], defs: dict[str, Any], path: str) -> Any:
    """A value for ``schema`` in which every string says where it sits: ``MARK-<path>``.

    Free-form mappings also get a personal-data key, which must never come out.
    """
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        return fill(next(o for o in schema["anyOf"] if o.get("type") != "null"), defs, path)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return f"MARK-{path}"
    if kind == "integer":
        return 7
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [fill(schema.get("items", {}), defs, f"{path}[]")]
    if kind == "object" and "properties" in schema:
        return {name: fill(sub, defs, f"{path}.{name}" if path else name) for name, sub in schema["properties"].items()}
    if kind == "object" and "propertyNames" in schema:
        names = schema["propertyNames"]
        while "$ref" in names:
            names = defs[names["$ref"].rsplit("/", 1)[-1]]
        key = names["enum"][0]
        values = schema.get("additionalProperties", {"type": "string"})
        return {key: fill(values, defs, f"{path}.{key}")}
    # a free-form mapping (e.g. FunctionAmended.changes)
    return {"note": f"MARK-{path}.note", "email": "PERSONAL-someone@example.org", "deep": [{"phone": "PERSONAL-1"}]}


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every scalar in ``value``; list elements add ``[]`` to the path."""
    if isinstance(value, dict):
        out = []
        for key, sub in value.items():
            out += leaves(sub, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item, f"{path}[]")]
    return [(path, value)]


def keys_at_any_depth(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for sub in value.values() for k in keys_at_any_depth(sub)}
    if isinstance(value, list):
        return {k for item in value for k in keys_at_any_depth(item)}
    return set()


def allowed(path: str, fields: tuple[str, ...]) -> bool:
    """Whether ``path`` is an allowed field, or inside one (a list of scalars, a free-form mapping)."""
    return any(path == f or path.startswith(f + ".") or path.startswith(f + "[]") for f in fields)


def lookup(value: Any, path: str) -> Any:
    for part in path.split("."):
        name, is_list = part.removesuffix("[]"), part.endswith("[]")
        assert isinstance(value, dict) and name in value, f"{path}: {name} missing"
        value = value[name]
        if is_list:
            assert isinstance(value, list) and value, f"{path}: {name} is not a non-empty list"
            value = value[0]
    return value


def marked_payload(path: Path) -> dict[str, Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    payload = fill(schema, schema.get("$defs", {}), "")
    assert isinstance(payload, dict)
    return payload


# --- coverage --------------------------------------------------------------------------


def test_every_internal_event_type_has_exactly_one_entry(policy: DisclosurePolicy) -> None:
    on_disk = {event_key(p) for p in SCHEMA_FILES}
    assert len(on_disk) > 60
    assert set(policy.rules) == on_disk
    assert policy.coverage_problems() == []
    assert coverage_problems() == []


def test_the_policy_file_names_the_same_types_as_the_schema_files(policy_doc: dict[str, Any]) -> None:
    named = {tuple(k.split(".")) for k in policy_doc["events"]}
    assert named == {event_key(p) for p in SCHEMA_FILES}


def test_an_event_the_policy_does_not_name_is_refused(policy: DisclosurePolicy) -> None:
    with pytest.raises(PolicyError, match=r"registry\.FunctionTeleported"):
        policy.disclose("registry", "FunctionTeleported", {})
    with pytest.raises(KeyError):
        policy.rule("disclosure", "FactDisclosed")


def test_both_kinds_of_entry_occur_and_every_entry_says_why(policy: DisclosurePolicy) -> None:
    rules = list(policy.rules.values())
    assert any(r.disclose for r in rules) and any(not r.disclose for r in rules)
    assert all(r.why and "\n" not in r.why for r in rules)


# --- nothing leaves unless allowed -----------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: "/".join(event_key(p)))
def test_only_allowed_fields_leave(path: Path, policy: DisclosurePolicy) -> None:
    service, event_type = event_key(path)
    payload = marked_payload(path)
    internal = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(internal).validate(payload)  # the payload is a real one
    rule = policy.rule(service, event_type)
    fact = policy.disclose(service, event_type, payload)
    if not rule.disclose:
        assert fact is None
        return
    assert fact is not None
    assert fact.public_type == rule.public_type and fact.correction == rule.correction
    assert "{" not in fact.subject and "MARK-" in fact.subject

    for where, value in leaves(fact.data):
        assert allowed(where, rule.fields), f"{where} left but is not in {rule.key}'s fields"
        if isinstance(value, str) and value.startswith("MARK-"):
            assert value == f"MARK-{where}", f"{value} turned up at {where}"
    text = json.dumps(fact.data, ensure_ascii=False)
    for marker in MARKER.findall(text):
        assert allowed(marker.removeprefix("MARK-"), rule.fields), f"{marker} left {rule.key}"
    assert "PERSONAL-" not in text
    assert not keys_at_any_depth(fact.data) & policy.personal_data
    for allowed_path in rule.fields:
        lookup(fact.data, allowed_path)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: "/".join(event_key(p)))
def test_disclosed_data_fits_its_public_schema(path: Path, policy: DisclosurePolicy) -> None:
    service, event_type = event_key(path)
    fact = policy.disclose(service, event_type, marked_payload(path))
    if fact is None:
        assert not policy.rule(service, event_type).disclose
        return
    jsonschema.Draft202012Validator(policy.public_schema(fact.public_type)).validate(fact.data)


def test_personal_names_never_leave(policy: DisclosurePolicy) -> None:
    member = {"project_id": "p-1", "member_id": "m-1", "name": "张三", "party": "society", "role_in_team": "finance"}
    leader = {"project_id": "p-1", "person_name": "李四", "rank": "secretary_general", "board_resolution_ref": "r-9"}
    for event_type, payload, name in (("TeamMemberAdded", member, "张三"), ("LeaderAppointed", leader, "李四")):
        fact = policy.disclose("supervision", event_type, payload)
        assert name not in json.dumps(fact.data if fact else {}, ensure_ascii=False)
    fact = policy.disclose("supervision", "LeaderAppointed", leader)
    assert fact is not None and fact.data == {"project_id": "p-1", "rank": "secretary_general"}
    assert "person_name" in policy.personal_data


def test_drafts_signatures_and_assessments_stay_internal(policy: DisclosurePolicy) -> None:
    for service, event_type in [
        ("supervision", "PlanDrafted"),
        ("supervision", "PlanSubmitted"),
        ("supervision", "PlanReturned"),
        ("supervision", "AgreementDrafted"),
        ("supervision", "AgreementSigned"),
        ("capability", "CapabilityAssessed"),
    ]:
        assert not policy.rule(service, event_type).disclose, f"{service}.{event_type}"
    assert policy.rule("supervision", "AgreementTookEffect").disclose
    # Proposals are public (the report counts them), but a proposal's internal note is not.
    assert policy.rule("registry", "FunctionProposed").disclose
    assert "note" not in policy.rule("registry", "ConsultationStarted").fields
    ranking = policy.rule("capability", "RankingComputed").fields
    assert "candidates[].total" in ranking and "exclusions[].code" in ranking
    assert not any(f.startswith("inputs") or f.endswith((".detail", ".reason")) for f in ranking)


def test_withdrawals_are_marked_as_corrections(policy: DisclosurePolicy) -> None:
    for event_type in ("FunctionWithdrawn", "FunctionDelisted", "FunctionReturned", "FunctionAmended"):
        assert policy.rule("registry", event_type).correction, event_type
    assert not policy.rule("registry", "FunctionListed").correction


def test_a_missing_allowed_field_is_schema_drift(policy: DisclosurePolicy) -> None:
    with pytest.raises(PolicyError, match="department"):
        policy.disclose("registry", "FunctionListed", {"function_id": "f-1"})
    opened = marked_payload(REPO / "schemas/registry/FunctionOpened.v1.json")
    with pytest.raises(PolicyError, match=r"thresholds\[\]\.requirement"):
        policy.disclose("registry", "FunctionOpened", {**opened, "thresholds": [{"name": "x"}]})


def test_an_optional_field_that_is_none_is_kept_as_none(policy: DisclosurePolicy) -> None:
    payload = {**marked_payload(REPO / "schemas/registry/FunctionOpened.v1.json"), "application_deadline": None}
    fact = policy.disclose("registry", "FunctionOpened", payload)
    assert fact is not None and fact.data["application_deadline"] is None
    assert fact.subject == "function/MARK-function_id"


# --- public schemas --------------------------------------------------------------------


def test_public_schemas_are_valid_draft_2020_12_and_named_by_type(policy: DisclosurePolicy) -> None:
    schemas = public_schemas()
    assert set(schemas) == {f"public/{t}.v1.json" for t in policy.public_types()}
    disclosed = {r.public_type for r in policy.rules.values() if r.disclose}
    assert set(policy.public_types()) == disclosed
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        public_type = name.removeprefix("public/").removesuffix(".v1.json")
        assert schema["$id"] == f"urn:chengneng:public:{public_type}:v1"
        assert schema["x-cloudevents-type"] == f"{PUBLIC_TYPE_PREFIX}.{public_type}"
        assert schema["x-topic"] == PUBLIC_TOPIC
        assert schema["additionalProperties"] is False
        assert "$ref" not in json.dumps(schema)
    assert public_schema("LeaderAppointed")["properties"].keys() == {"project_id", "rank"}


def test_public_topic_and_type_prefix_match_the_disclosure_domain() -> None:
    from services.disclosure import domain

    assert domain.PUBLIC_TOPIC == PUBLIC_TOPIC
    assert domain.PUBLIC_TYPE_PREFIX == PUBLIC_TYPE_PREFIX


def test_a_public_schema_refuses_a_field_the_policy_does_not_allow(policy: DisclosurePolicy) -> None:
    validator = jsonschema.Draft202012Validator(policy.public_schema("LeaderAppointed"))
    assert not validator.is_valid({"project_id": "p", "rank": "president", "person_name": "李四"})


# --- a broken policy file does not load ------------------------------------------------


def write_broken(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "policy.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(doc, Dumper=dumper, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_an_unchanged_copy_loads(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    assert load_policy(write_broken(tmp_path, policy_doc)).public_types() == load_policy().public_types()


def test_an_entry_without_why_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    del policy_doc["events"]["registry.FunctionListed"]["why"]
    with pytest.raises(PolicyError, match=r"registry\.FunctionListed: missing why"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_personal_field_in_an_allow_list_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    policy_doc["events"]["supervision.LeaderAppointed"]["fields"].append("person_name")
    with pytest.raises(PolicyError, match=r"LeaderAppointed: field 'person_name' is personal data"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_field_made_personal_that_an_entry_allows_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    policy_doc["personal_data"].append("society_name")
    with pytest.raises(PolicyError, match=r"field 'society_name' is personal data"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_an_unknown_event_type_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    policy_doc["events"]["registry.FunctionTeleported"] = {"disclose": False, "why": "no such thing"}
    with pytest.raises(PolicyError, match=r"unknown event type registry\.FunctionTeleported"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_missing_entry_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    del policy_doc["events"]["supervision.WarningIssued"]
    with pytest.raises(PolicyError, match=r"no entry for supervision\.WarningIssued"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_subject_field_not_in_fields_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    policy_doc["events"]["registry.FunctionListed"]["fields"] = ["department"]
    with pytest.raises(PolicyError, match=r"FunctionListed: subject field\(s\) function_id not in fields"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_field_the_event_does_not_have_does_not_load(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    policy_doc["events"]["registry.FunctionListed"]["fields"].append("budget")
    with pytest.raises(PolicyError, match=r"FunctionListed: field 'budget'"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_structured_field_must_be_listed_by_its_leaves(tmp_path: Path, policy_doc: dict[str, Any]) -> None:
    fields = policy_doc["events"]["registry.FunctionOpened"]["fields"]
    policy_doc["events"]["registry.FunctionOpened"]["fields"] = [
        f for f in fields if not f.startswith("thresholds")
    ] + ["thresholds"]
    with pytest.raises(PolicyError, match=r"field 'thresholds' has sub-fields"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_a_public_type_from_two_events_with_different_data_does_not_load(
    tmp_path: Path, policy_doc: dict[str, Any]
) -> None:
    policy_doc["events"]["registry.FunctionWithdrawn"]["public_type"] = "FunctionReturned"
    with pytest.raises(PolicyError, match="public type FunctionReturned is produced by"):
        load_policy(write_broken(tmp_path, policy_doc))


def test_an_entry_given_twice_does_not_load(tmp_path: Path) -> None:
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    twice = text + "\n  registry.FunctionProposed:\n    disclose: true\n    why: oops\n"
    path = tmp_path / "policy.yaml"
    path.write_text(twice, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"'registry\.FunctionProposed' appears twice"):
        load_policy(path)
