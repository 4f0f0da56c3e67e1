"""JSON Schemas of every event type and version, generated from the code into ``schemas/``.

The files are the published contract of the topics; ``chengneng schemas check`` (and a
test) fails when the code and the files disagree, so a shape change cannot slip through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.kafka import cloudevent_type, events_topic
from shared.messages import EventRegistry

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schemas(service: str, events: EventRegistry) -> dict[str, dict[str, Any]]:
    """File name (relative to ``schemas/``) -> JSON Schema, for every event of a service."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in sorted(events.by_type.items()):
        schema = cls.model_json_schema(mode="serialization")
        schema = {
            "$schema": SCHEMA_DIALECT,
            "$id": f"urn:chengneng:schema:{service}:{name}:v{cls.schema_version}",
            "title": name,
            "description": (cls.__doc__ or "").strip(),
            "x-cloudevents-type": cloudevent_type(service, name),
            "x-topic": events_topic(service),
            "x-schema-version": cls.schema_version,
            **{k: v for k, v in schema.items() if k not in ("title", "description")},
        }
        out[f"{service}/{name}.v{cls.schema_version}.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(root: Path, schemas: dict[str, dict[str, Any]]) -> list[Path]:
    written = []
    for relative, schema in schemas.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = render(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def drift(root: Path, schemas: dict[str, dict[str, Any]], services: list[str]) -> list[str]:
    """Human-readable differences between the code's schemas and the files under ``root``."""
    problems = []
    for relative, schema in schemas.items():
        path = root / relative
        if not path.exists():
            problems.append(f"missing: {relative}")
        elif path.read_text(encoding="utf-8") != render(schema):
            problems.append(f"out of date: {relative}")
    for service in services:
        for path in sorted((root / service).glob("*.json")):
            relative = f"{service}/{path.name}"
            if relative not in schemas:
                problems.append(f"no longer produced by the code: {relative}")
    return problems
