"""The disclosure policy (信息公开) applied: which internal facts become public, reduced to what.

The policy is data (``policy.yaml`` beside this module), reviewed like code. This module
loads and validates it against the internal events' JSON Schemas, reduces an internal
event's payload to a ``PublicFact``, and derives the JSON Schema of every public type.
Pure: the only I/O is reading the YAML file.

Field paths in ``fields``: ``a`` keeps field ``a`` whole (a scalar, a list of scalars or a
free-form mapping); ``a.b`` keeps sub-field ``b`` of object ``a``; ``a[].b`` keeps ``b`` of
every element of list ``a``. A field whose schema declares sub-fields must be listed by its
leaves, so a sub-field added to an event later stays internal until the policy names it.

A public type is produced by exactly one internal type, unless several produce identical
data: the same field list and the same derived schema (and the same ``correction``).
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

PUBLIC_TOPIC: Final = "chengneng.disclosure.public"
PUBLIC_TYPE_PREFIX: Final = "org.chengneng.public"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
POLICY_VERSION: Final = 1
DEFAULT_PATH: Final = Path(__file__).with_name("policy.yaml")

_PASCAL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_SEGMENT = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?P<list>\[\])?$")
_ENTRY_KEYS = frozenset({"disclose", "why", "public_type", "subject", "fields", "correction"})
_PUBLIC_KEYS = frozenset({"public_type", "subject", "fields", "correction"})
_TOP_KEYS = frozenset({"version", "personal_data", "events"})


class PolicyError(KeyError):
    """The policy is invalid, names no rule for an event, or a payload does not fit it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class EventRule:
    """The policy's entry for one internal event type."""

    service: str
    event_type: str
    disclose: bool
    why: str
    public_type: str | None = None
    subject: str | None = None
    fields: tuple[str, ...] = ()
    correction: bool = False

    @property
    def key(self) -> str:
        return f"{self.service}.{self.event_type}"


@dataclass(frozen=True)
class PublicFact:
    """What the public may see of one internal event."""

    public_type: str
    subject: str
    data: dict[str, Any]
    correction: bool


@dataclass
class _Node:
    """Allowed sub-fields of one object; a child ``None`` is a leaf kept whole."""

    children: dict[str, _Child] = field(default_factory=dict)


@dataclass
class _Child:
    is_list: bool
    node: _Node | None


# ---------------------------------------------------------------------------------------
# The internal events: what the policy must cover, and their schemas
# ---------------------------------------------------------------------------------------


def source_services() -> tuple[str, ...]:
    """The services whose internal events the policy covers: every service but disclosure."""
    from shared.cli import SERVICES

    return tuple(s for s in SERVICES if s != "disclosure")


@functools.cache
def internal_schemas() -> Mapping[tuple[str, str], dict[str, Any]]:
    """(service, event type) -> the JSON Schema of its payload, from the event classes."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for service in source_services():
        events = importlib.import_module(f"services.{service}.domain").EVENTS
        for name, cls in events.by_type.items():
            # serialization mode: the shape of stored payloads, as in schemas/<service>/
            out[(service, name)] = cls.model_json_schema(mode="serialization")
    return out


# ---------------------------------------------------------------------------------------
# Schema walking
# ---------------------------------------------------------------------------------------


def _deref(schema: dict[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _split_nullable(schema: dict[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema without a ``null`` alternative, and whether it had one."""
    schema = _deref(schema, defs)
    options = schema.get("anyOf")
    if options is None:
        return schema, False
    rest = [o for o in options if o.get("type") != "null"]
    if len(rest) == 1:
        return _deref(rest[0], defs), len(rest) < len(options)
    return schema, len(rest) < len(options)


def _inline(schema: Any, defs: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """A copy of ``schema`` with every ``$ref`` into ``$defs`` replaced by its target."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name in seen:
                raise PolicyError(f"recursive schema {name} cannot be disclosed")
            target = _inline(defs[name], defs, seen | {name})
            rest = {k: _inline(v, defs, seen) for k, v in schema.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs, seen) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, defs, seen) for v in schema]
    return copy.deepcopy(schema)


def _parse_path(path: str) -> list[tuple[str, bool]]:
    segments = []
    for part in path.split("."):
        m = _SEGMENT.match(part)
        if m is None:
            raise PolicyError(f"field path {path!r}: {part!r} is not a field name (optionally followed by [])")
        segments.append((m["name"], m["list"] is not None))
    if segments[-1][1]:
        raise PolicyError(f"field path {path!r} ends in []: name the list itself, or a sub-field of its elements")
    return segments


def _has_declared_fields(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" and "properties" in schema


def _check_path(where: str, path: str, schema: dict[str, Any]) -> None:
    """Raise unless ``path`` names a leaf of the event's schema, with [] exactly at lists."""
    defs = schema.get("$defs", {})
    segments = _parse_path(path)
    current = schema
    for i, (name, through_list) in enumerate(segments):
        last = i == len(segments) - 1
        properties = current.get("properties", {}) if _has_declared_fields(current) else {}
        if name not in properties:
            raise PolicyError(f"{where}: field {path!r}: the event's schema has no field {name!r} there")
        target, _ = _split_nullable(properties[name], defs)
        is_list = target.get("type") == "array"
        if through_list and not is_list:
            raise PolicyError(f"{where}: field {path!r}: {name} is not a list; drop the []")
        if is_list and not through_list and not last:
            raise PolicyError(f"{where}: field {path!r}: {name} is a list; write {name}[]")
        if is_list:
            target, _ = _split_nullable(target.get("items", {}), defs)
        if last and _has_declared_fields(target):
            example = f"{path}{'[]' if is_list else ''}.{sorted(target['properties'])[0]}"
            raise PolicyError(f"{where}: field {path!r} has sub-fields; list the ones to disclose (e.g. {example})")
        current = target


def _tree(where: str, paths: Iterable[str]) -> _Node:
    root = _Node()
    for path in paths:
        segments = _parse_path(path)
        node = root
        for i, (name, is_list) in enumerate(segments):
            last = i == len(segments) - 1
            child = node.children.get(name)
            if child is None:
                child = _Child(is_list, None if last else _Node())
                node.children[name] = child
            elif last or child.node is None or child.is_list != is_list:
                raise PolicyError(f"{where}: field {path!r} overlaps another listed field")
            if not last:
                assert child.node is not None
                node = child.node
    return root


def _restrict(schema: dict[str, Any], node: _Node, defs: Mapping[str, Any]) -> dict[str, Any]:
    """The object schema keeping only ``node``'s fields; the engine guarantees each is present."""
    properties: dict[str, Any] = {}
    for name, child in node.children.items():
        internal = schema["properties"][name]
        if child.node is None:
            properties[name] = _inline(internal, defs)
            continue
        target, nullable = _split_nullable(internal, defs)
        if child.is_list:
            items, items_nullable = _split_nullable(target["items"], defs)
            item_schema = _restrict(items, child.node, defs)
            if items_nullable:
                item_schema = {"anyOf": [item_schema, {"type": "null"}]}
            restricted: dict[str, Any] = {"type": "array", "items": item_schema}
        else:
            restricted = _restrict(target, child.node, defs)
        properties[name] = {"anyOf": [restricted, {"type": "null"}]} if nullable else restricted
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": sorted(properties)}


# ---------------------------------------------------------------------------------------
# Applying the policy to a payload
# ---------------------------------------------------------------------------------------


def _scrub(value: Any, personal: frozenset[str]) -> Any:
    """A copy of ``value`` without any mapping key named in ``personal``, at any depth."""
    if isinstance(value, Mapping):
        return {k: _scrub(v, personal) for k, v in value.items() if k not in personal}
    if isinstance(value, list | tuple):
        return [_scrub(v, personal) for v in value]
    return value


def _extract(where: str, value: Any, node: _Node, personal: frozenset[str], path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}: {path or 'the payload'} is not an object (schema drift?)")
    out: dict[str, Any] = {}
    for name, child in node.children.items():
        here = f"{path}.{name}" if path else name
        if name not in value:
            raise PolicyError(f"{where}: allowed field {here!r} is missing from the payload (schema drift?)")
        if name in personal:  # the loader refuses such a policy; never let one through anyway
            continue
        v = value[name]
        if child.node is None or v is None:
            out[name] = _scrub(v, personal)
        elif child.is_list:
            if not isinstance(v, list | tuple):
                raise PolicyError(f"{where}: {here} is not a list (schema drift?)")
            out[name] = [
                None if item is None else _extract(where, item, child.node, personal, f"{here}[]") for item in v
            ]
        else:
            out[name] = _extract(where, v, child.node, personal, here)
    return out


def _subject_fields(template: str) -> list[str]:
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion:
            raise PolicyError(f"subject {template!r}: use plain {{field}} placeholders")
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------


class DisclosurePolicy:
    """A validated disclosure policy: one rule per internal event type."""

    def __init__(
        self,
        rules: Mapping[tuple[str, str], EventRule],
        personal_data: Iterable[str],
        schemas: Mapping[tuple[str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.rules: dict[tuple[str, str], EventRule] = dict(rules)
        self.personal_data: frozenset[str] = frozenset(personal_data)
        self._schemas = internal_schemas() if schemas is None else schemas
        self._trees: dict[tuple[str, str], _Node] = {}
        self._public: dict[str, dict[str, Any]] = {}
        problems = self.coverage_problems()
        if problems:
            raise PolicyError("the policy does not cover the internal events exactly:\n  " + "\n  ".join(problems))
        producers: dict[str, EventRule] = {}
        for key, rule in sorted(self.rules.items()):
            if not rule.disclose:
                continue
            for path in rule.fields:
                _check_path(rule.key, path, self._schemas[key])
                if {name for name, _ in _parse_path(path)} & self.personal_data:
                    raise PolicyError(f"{rule.key}: field {path!r} is personal data and is never disclosed")
            self._trees[key] = tree = _tree(rule.key, rule.fields)
            schema = self._derive(rule, tree)
            assert rule.public_type is not None
            first = producers.get(rule.public_type)
            if first is None:
                producers[rule.public_type] = rule
                self._public[rule.public_type] = schema
            elif (
                sorted(first.fields) != sorted(rule.fields)
                or first.correction != rule.correction
                or _data_schema(self._public[rule.public_type]) != _data_schema(schema)
            ):
                raise PolicyError(
                    f"public type {rule.public_type} is produced by {first.key} and {rule.key} with different "
                    "data; give each its own public type or the same fields"
                )

    def coverage_problems(self) -> list[str]:
        """Internal event types without a rule, and rules naming no known event type."""
        return _coverage(self.rules, self._schemas)

    def rule(self, service: str, event_type: str) -> EventRule:
        """The rule for one internal event type; ``PolicyError`` when the policy names none."""
        try:
            return self.rules[(service, event_type)]
        except KeyError:
            raise PolicyError(
                f"the disclosure policy has no entry for {service}.{event_type}; add one to policy.yaml"
            ) from None

    def disclose(self, service: str, event_type: str, payload: Mapping[str, Any]) -> PublicFact | None:
        """The public fact of one internal event, or ``None`` when the event stays internal."""
        rule = self.rule(service, event_type)
        if not rule.disclose:
            return None
        assert rule.public_type is not None and rule.subject is not None
        data = _extract(rule.key, payload, self._trees[(service, event_type)], self.personal_data, "")
        values = {}
        for name in _subject_fields(rule.subject):
            value = data[name]
            if value is None or value == "":
                raise PolicyError(f"{rule.key}: subject field {name!r} is empty")
            values[name] = value
        return PublicFact(rule.public_type, rule.subject.format(**values), data, rule.correction)

    def public_types(self) -> list[str]:
        """Every public type the policy produces, sorted."""
        return sorted(self._public)

    def public_schema(self, public_type: str) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of a public type's data."""
        try:
            return copy.deepcopy(self._public[public_type])
        except KeyError:
            raise PolicyError(f"no internal event is disclosed as public type {public_type!r}") from None

    def public_schemas(self) -> dict[str, dict[str, Any]]:
        """File name (``public/<PublicType>.v1.json``) -> schema, for every public type."""
        return {f"public/{name}.v1.json": self.public_schema(name) for name in self.public_types()}

    def _derive(self, rule: EventRule, tree: _Node) -> dict[str, Any]:
        internal = self._schemas[(rule.service, rule.event_type)]
        data = _restrict(internal, tree, internal.get("$defs", {}))
        description = (internal.get("description") or "").strip().splitlines()
        return {
            "$schema": SCHEMA_DIALECT,
            "$id": f"urn:chengneng:public:{rule.public_type}:v1",
            "title": rule.public_type,
            "description": (description[0] + " " if description else "") + f"(public part of {rule.key})",
            "x-cloudevents-type": f"{PUBLIC_TYPE_PREFIX}.{rule.public_type}",
            "x-topic": PUBLIC_TOPIC,
            "x-schema-version": 1,
            "x-correction": rule.correction,
            **data,
        }


def _data_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k in ("type", "properties", "required", "additionalProperties")}


# ---------------------------------------------------------------------------------------
# Loading the YAML file
# ---------------------------------------------------------------------------------------


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when libyaml is there


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc]
    """A safe loader that refuses a key given twice (PyYAML would keep the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise PolicyError(f"{key!r} appears twice (line {key_node.start_mark.line + 1}); keep one entry")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _rule_of(key: Any, entry: Any, personal: frozenset[str]) -> EventRule:
    if not isinstance(key, str) or key.count(".") != 1:
        raise PolicyError(f"entry {key!r}: name it <service>.<EventType>")
    service, event_type = key.split(".")
    if not isinstance(entry, Mapping):
        raise PolicyError(f"{key}: an entry is a mapping with disclose and why")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise PolicyError(f"{key}: unknown key(s) {', '.join(map(str, unknown))}")
    why = entry.get("why")
    if not isinstance(why, str) or not why.strip():
        raise PolicyError(f"{key}: missing why (one line for reviewers)")
    if "\n" in why.strip():
        raise PolicyError(f"{key}: why must be one line")
    disclose = entry.get("disclose")
    if not isinstance(disclose, bool):
        raise PolicyError(f"{key}: disclose must be true or false")
    if not disclose:
        stray = sorted(set(entry) & _PUBLIC_KEYS)
        if stray:
            raise PolicyError(f"{key}: an internal entry names {', '.join(stray)}; drop them or disclose it")
        return EventRule(service, event_type, False, why.strip())
    public_type, subject, fields = entry.get("public_type"), entry.get("subject"), entry.get("fields")
    if not isinstance(public_type, str) or not _PASCAL_CASE.match(public_type):
        raise PolicyError(f"{key}: a disclosed entry needs public_type in PascalCase")
    if not isinstance(subject, str) or not subject.strip():
        raise PolicyError(f"{key}: a disclosed entry needs a subject template, e.g. function/{{function_id}}")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise PolicyError(f"{key}: a disclosed entry needs fields, a non-empty list of field paths (never all)")
    if len(set(fields)) != len(fields):
        raise PolicyError(f"{key}: a field is listed twice")
    correction = entry.get("correction", False)
    if not isinstance(correction, bool):
        raise PolicyError(f"{key}: correction must be true or false")
    for path in fields:
        names = [name for name, _ in _parse_path(path)]
        hit = sorted(set(names) & personal)
        if hit:
            raise PolicyError(f"{key}: field {path!r} is personal data ({', '.join(hit)}) and is never disclosed")
    missing = [name for name in _subject_fields(subject) if name not in fields]
    if not _subject_fields(subject):
        raise PolicyError(f"{key}: subject {subject!r} names no field")
    if missing:
        raise PolicyError(f"{key}: subject field(s) {', '.join(missing)} not in fields")
    return EventRule(service, event_type, True, why.strip(), public_type, subject, tuple(fields), correction)


def parse_policy(
    text: str, source: str = "policy", schemas: Mapping[tuple[str, str], dict[str, Any]] | None = None
) -> DisclosurePolicy:
    """Validate a policy document against the internal events and build the policy."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: expected a mapping with version, personal_data and events")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise PolicyError(f"{source}: unknown top-level key(s) {', '.join(map(str, unknown))}")
    if doc.get("version") != POLICY_VERSION:
        raise PolicyError(f"{source}: version must be {POLICY_VERSION}")
    personal_list = doc.get("personal_data")
    if not isinstance(personal_list, list) or not all(isinstance(p, str) for p in personal_list):
        raise PolicyError(f"{source}: personal_data must be a list of field names")
    personal = frozenset(personal_list)
    events = doc.get("events")
    if not isinstance(events, Mapping):
        raise PolicyError(f"{source}: events must be a mapping of <service>.<EventType> to entries")
    known = internal_schemas() if schemas is None else schemas
    rules: dict[tuple[str, str], EventRule] = {}
    for key, entry in events.items():
        rule = _rule_of(key, entry, personal)
        rules[(rule.service, rule.event_type)] = rule
    try:
        return DisclosurePolicy(rules, personal, known)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def load_policy(path: Path | None = None) -> DisclosurePolicy:
    """The policy in ``path``, validated; the default (``policy.yaml`` here) is read once."""
    if path is None:
        return _default_policy()
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


@functools.cache
def _default_policy() -> DisclosurePolicy:
    return parse_policy(DEFAULT_PATH.read_text(encoding="utf-8"), str(DEFAULT_PATH))


def public_schema(public_type: str) -> dict[str, Any]:
    """The JSON Schema of a public type's data, under the default policy."""
    return load_policy().public_schema(public_type)


def public_schemas() -> dict[str, dict[str, Any]]:
    """``public/<PublicType>.v1.json`` -> schema for every public type, under the default policy."""
    return load_policy().public_schemas()


def coverage_problems() -> list[str]:
    """Coverage problems of the default policy file: empty when it names every internal event once.

    Reads the entries without building the policy, since building refuses any such problem
    (and the YAML loader refuses an entry given twice).
    """
    doc = yaml.load(DEFAULT_PATH.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    named = [tuple(str(key).split(".", 1)) for key in (doc.get("events") or {})]
    return _coverage(named, internal_schemas())


def _coverage(named: Iterable[tuple[str, ...]], known: Iterable[tuple[str, str]]) -> list[str]:
    named_set, known_set = {".".join(k) for k in named}, {".".join(k) for k in known}
    return [f"no entry for {k}" for k in sorted(known_set - named_set)] + [
        f"entry for unknown event type {k}" for k in sorted(named_set - known_set)
    ]
