"""An independent subscriber of ``chengneng.disclosure.public``: what it reads is what the portal shows.

It knows only the published contract: the topic, CloudEvents in Kafka binary mode, the
public JSON Schemas under ``schemas/public/`` and the disclosure policy file. It reads the
topic from the beginning with a consumer of its own (no group), checks every message
against its schema and the policy, rebuilds the function from the facts, and compares with
the disclosure service's public API.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
TOPIC = "chengneng.disclosure.public"
PUBLIC_PREFIX = "org.chengneng.public."
DEYANG = "510600"
SHIFANG = "510682"  # a county under Deyang, with a list of its own in this test
INTERNAL_HEADERS = ("ce_actor", "ce_streamtype", "ce_causationid")
STATUS_OF = {  # what each public fact says about a function's status, as the portal explains it
    "FunctionProposed": "proposed",
    "ConsultationStarted": "in_consultation",
    "FunctionListed": "listed",
    "FunctionOpened": "open",
    "FunctionAssigned": "assigned",
    "FunctionTransferred": "transferred",
    "FunctionReturned": "returned",
    "FunctionWithdrawn": "withdrawn",
    "FunctionDelisted": "delisted",
}


def post(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> None:
    response = client.post(path, json=body or {})
    assert response.status_code in (200, 201), f"{path}: {response.status_code} {response.text}"


def drive_the_registry(stack: Stack, fid: str, title: str) -> None:
    """Propose, list, open a function and publish the county's list, over HTTP."""
    department = stack.client("registry", stack.token("department", "shifang-sci", SHIFANG))
    association = stack.client("registry", stack.token("association", "deyang-cast", DEYANG))
    post(
        department,
        "/functions",
        {
            "function_id": fid,
            "jurisdiction": SHIFANG,
            "title": title,
            "description": "Post-completion evaluation of county research projects",
            "category": "science_evaluation",
            "sub_kind": "project_post_evaluation",
            "scope": "whole",
            "entrustment_mode": "purchase_of_services",
            "department": "shifang-sci",
        },
    )
    post(association, f"/functions/{fid}/consultation", {"note": "internal note: met the bureau director"})
    post(department, f"/functions/{fid}/listing")
    post(department, f"/functions/{fid}/department-review", {"reference": "什科审〔2026〕3号"})
    post(
        department,
        f"/functions/{fid}/opening",
        {
            "qualification_conditions": ["registered for 3 years"],
            "thresholds": [{"name": "full-time staff", "requirement": ">= 3"}],
            "min_applicants": 1,
        },
    )
    post(association, f"/function-lists/{SHIFANG}/versions", {"note": "county list"})


async def read_public_topic(bootstrap: str, done: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every message of the public topic from the beginning, until ``done(messages)`` holds."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    event = from_binary(KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value), JSONFormat())
                    messages.append(
                        {
                            "headers": {name: value.decode() for name, value in r.headers},
                            "key": r.key.decode() if r.key else None,
                            "attributes": event.get_attributes(),
                            "data": event.get_data(),
                            "partition": r.partition,
                            "offset": r.offset,
                        }
                    )
            if done(messages):
                return messages
        raise AssertionError(f"the public topic did not show the expected facts in {timeout} s: {len(messages)} read")
    finally:
        await consumer.stop()


def allowed_tree(paths: list[str]) -> dict[str, Any]:
    """Field paths of the policy (``a``, ``a.b``, ``a[].b``) as a tree; ``None`` marks a leaf kept whole."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = [p.removesuffix("[]") for p in path.split(".")]
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                node[part] = None
            else:
                node = node.setdefault(part, {})
    return tree


def internal_keys(data: Any, tree: dict[str, Any] | None, where: str = "") -> list[str]:
    """Keys in ``data`` that the policy's tree does not allow."""
    if tree is None:
        return []
    if isinstance(data, list):
        return [k for item in data for k in internal_keys(item, tree, where + "[]")]
    if not isinstance(data, dict):
        return []
    out = [f"{where}{k}" for k in data if k not in tree]
    for k, v in data.items():
        if k in tree and isinstance(tree[k], dict):
            out += internal_keys(v, tree[k], f"{where}{k}.")
    return out


def all_keys(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {k for v in data.values() for k in all_keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in all_keys(v)}
    return set()


async def test_an_independent_subscriber_rebuilds_what_the_portal_shows(stack: Stack) -> None:
    fid = f"pub-{uuid.uuid4().hex[:8]}"
    title = f"科研项目绩效评价 {fid}"
    drive_the_registry(stack, fid, title)
    subject = f"function/{fid}"

    # The disclosure service catches up from Kafka; that is the cross-service delay.
    disclosure = stack.client("disclosure")
    shown = wait_until(
        lambda: next(
            (
                f
                for f in disclosure.get(f"/public/jurisdictions/{SHIFANG}/functions").json()["functions"]
                if f["function_id"] == fid and f["status"] == "open"
            ),
            None,
        ),
        timeout=60,
        message="the disclosure service to show the opened function",
    )

    def complete(messages: list[dict[str, Any]]) -> bool:
        types = {m["attributes"]["type"] for m in messages if m["attributes"]["subject"] == subject}
        listed = any(
            m["attributes"]["subject"] == f"list/{SHIFANG}"
            and any(e["function_id"] == fid for e in m["data"].get("entries", []))
            for m in messages
        )
        return listed and PUBLIC_PREFIX + "FunctionOpened" in types

    messages = await read_public_topic(stack.kafka, complete)

    # Every message: a public CloudEvent whose data fits its public schema and the policy.
    policy = yaml.safe_load((REPO / "services" / "disclosure" / "policy.yaml").read_text(encoding="utf-8"))
    personal = set(policy["personal_data"])
    fields_of: dict[str, list[str]] = {}
    for rule in policy["events"].values():
        if rule["disclose"]:
            fields_of.setdefault(rule["public_type"], []).extend(rule["fields"])
    schemas: dict[str, dict[str, Any]] = {}
    for m in messages:
        ce_type = m["attributes"]["type"]
        assert ce_type.startswith(PUBLIC_PREFIX), ce_type
        public_type = ce_type.removeprefix(PUBLIC_PREFIX)
        if public_type not in schemas:
            path = REPO / "schemas" / "public" / f"{public_type}.v1.json"
            schemas[public_type] = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.validate(m["data"], schemas[public_type], cls=jsonschema.Draft202012Validator)
        assert m["attributes"]["source"] == "/chengneng/disclosure"
        assert m["headers"]["content-type"] == "application/json"
        assert m["key"] == m["attributes"]["subject"]
        assert internal_keys(m["data"], allowed_tree(fields_of[public_type])) == [], (public_type, m["data"])
        assert not all_keys(m["data"]) & personal, (public_type, m["data"])
        assert not [h for h in m["headers"] if h.startswith(INTERNAL_HEADERS)], m["headers"]

    # Rebuild the function from its facts (one subject, one partition, in order).
    facts = sorted(
        (m for m in messages if m["attributes"]["subject"] == subject), key=lambda m: (m["partition"], m["offset"])
    )
    assert len({m["partition"] for m in facts}) == 1
    assert [m["attributes"]["type"].removeprefix(PUBLIC_PREFIX) for m in facts] == [
        "FunctionProposed",
        "ConsultationStarted",
        "FunctionListed",
        "FunctionOpened",
    ]
    rebuilt: dict[str, Any] = {}
    for m in facts:
        public_type = m["attributes"]["type"].removeprefix(PUBLIC_PREFIX)
        rebuilt.update(m["data"].get("changes", {}) if public_type == "FunctionAmended" else m["data"])
        rebuilt["status"] = STATUS_OF.get(public_type, rebuilt.get("status"))
    assert "note" not in rebuilt and "reference" not in rebuilt  # the consultation note, the review reference
    assert (rebuilt["status"], rebuilt["title"]) == ("open", title)
    assert (shown["status"], shown["title"]) == (rebuilt["status"], rebuilt["title"])

    # The published county list, as the topic carries it, agrees too.
    lists = [m for m in messages if m["attributes"]["subject"] == f"list/{SHIFANG}"]
    entry = next(e for e in lists[-1]["data"]["entries"] if e["function_id"] == fid)
    assert (entry["status"], entry["title"]) == (shown["status"], shown["title"])
    page = disclosure.get(f"/public/jurisdictions/{SHIFANG}/functions").json()
    assert page["published_version"] == lists[-1]["data"]["version"]
