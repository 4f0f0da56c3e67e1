"""The published JSON Schemas under ``schemas/``: in step with the code, valid, and enforcing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.registry.domain import Category, EntrustmentMode, FunctionProposed, Scope, SubKind
from shared.cli import SCHEMA_DIRS, _all_schemas
from shared.principal import Role
from shared.schemas import drift

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
SCHEMA_FILES = sorted(SCHEMAS.rglob("*.json"))


@pytest.fixture(scope="module")
def produced() -> dict[str, dict[str, Any]]:
    return _all_schemas()  # type: ignore[return-value]


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, root)
    return root


def test_the_schema_files_match_what_the_code_produces(produced: dict[str, dict[str, Any]]) -> None:
    problems = drift(SCHEMAS, produced, list(SCHEMA_DIRS))
    assert problems == [], "schemas/ is out of step with the code; run `chengneng schemas generate`:\n" + "\n".join(
        problems
    )


def test_the_code_publishes_the_registry_events(produced: dict[str, dict[str, Any]]) -> None:
    assert "registry/FunctionProposed.v1.json" in produced
    assert len(SCHEMA_FILES) >= len(produced) > 0


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(SCHEMAS)))
def test_every_schema_file_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_a_schema_changed_on_disk_is_reported(copied: Path, produced: dict[str, dict[str, Any]]) -> None:
    assert drift(copied, produced, list(SCHEMA_DIRS)) == []
    path = copied / "registry" / "FunctionProposed.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["required"].remove("title")
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert drift(copied, produced, list(SCHEMA_DIRS)) == ["out of date: registry/FunctionProposed.v1.json"]


def test_a_stale_schema_file_is_reported(copied: Path, produced: dict[str, dict[str, Any]]) -> None:
    shutil.copy(copied / "registry" / "FunctionProposed.v1.json", copied / "registry" / "FunctionProposed.v0.json")
    assert drift(copied, produced, list(SCHEMA_DIRS)) == [
        "no longer produced by the code: registry/FunctionProposed.v0.json"
    ]


def test_a_missing_schema_file_is_reported(copied: Path, produced: dict[str, dict[str, Any]]) -> None:
    (copied / "registry" / "FunctionListed.v1.json").unlink()
    assert drift(copied, produced, list(SCHEMA_DIRS)) == ["missing: registry/FunctionListed.v1.json"]


# --- the schema enforces the event's shape -------------------------------------------


@pytest.fixture(scope="module")
def function_proposed_schema() -> dict[str, Any]:
    return json.loads((SCHEMAS / "registry" / "FunctionProposed.v1.json").read_text(encoding="utf-8"))


def proposed_payload() -> dict[str, Any]:
    event = FunctionProposed(
        function_id="fn-510600-0001",
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
    )
    return event.model_dump(mode="json")


def test_a_real_function_proposed_payload_satisfies_its_schema(function_proposed_schema: dict[str, Any]) -> None:
    jsonschema.validate(proposed_payload(), function_proposed_schema, cls=jsonschema.Draft202012Validator)


def test_a_payload_without_a_title_fails_its_schema(function_proposed_schema: dict[str, Any]) -> None:
    payload = proposed_payload()
    del payload["title"]
    with pytest.raises(jsonschema.ValidationError, match="'title' is a required property"):
        jsonschema.validate(payload, function_proposed_schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize(
    ("field", "value"),
    [("category", "astrology"), ("proposer_role", "superuser"), ("title", 42), ("unexpected", "x")],
)
def test_a_payload_with_a_wrong_field_fails_its_schema(
    function_proposed_schema: dict[str, Any], field: str, value: Any
) -> None:
    payload = {**proposed_payload(), field: value}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, function_proposed_schema, cls=jsonschema.Draft202012Validator)
