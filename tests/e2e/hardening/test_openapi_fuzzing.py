"""Bad input over HTTP: schemathesis against every service's OpenAPI document.

For every operation each service publishes, schemathesis sends the boundary and invalid
values its coverage phase derives from the schema, then random valid and invalid requests
(fuzzing). No response may be a server error, and every 4xx must be RFC 9457 problem
details with a machine-readable ``code``; an operation that declares the bearer token must
refuse a request without it. Path identifiers are mostly those of a real function, society,
selection and case, so that commands reach the deciders rather than stopping at a 404.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.engine import events

from tests.conftest import Stack
from tests.e2e.hardening.support import ASSOCIATION, DEYANG, World, assert_problem, new_world

pytestmark = pytest.mark.stack

SERVICES = ("registry", "capability", "supervision", "disclosure")
MAX_EXAMPLES = 6
"""Random examples per operation after the coverage phase; keeps the seven runs near a minute and a half."""


@schemathesis.check
def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every client error is ``application/problem+json`` with a machine-readable code."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/problem+json"), f"{response.status_code} as {content_type}"
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], f"no code: {body}"
    assert body.get("status") == response.status_code, f"status {body.get('status')} in a {response.status_code}"
    assert body.get("title") and str(body.get("type", "")).startswith("urn:chengneng:problem:"), body
    return True


@pytest.fixture(scope="module")
def targets(stack: Stack) -> World:
    """Entities of the fuzzer's own (the matrix's world must not be changed by random commands)."""
    return new_world(stack)


def fuzz(stack: Stack, service: str, targets: World, role: str = "association") -> tuple[list[str], int]:
    """Run schemathesis' coverage and fuzzing phases on one service as ``role``; (failures, requests sent)."""
    token = stack.token(role, targets.org_of(role), DEYANG)
    ids = {
        "function_id": targets.function_id,
        "society_id": targets.society_id,
        "project_id": targets.project_id,
        "jurisdiction": DEYANG,
    }
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 1,
            "request-timeout": 30,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "ignored_auth": {"enabled": True},
                "problem_details": {"enabled": True},
            },
            "dictionaries": {name: {"values": [value]} for name, value in ids.items()},
            "parameters": {f"path.{name}": {"dictionary": name, "probability": 0.9} for name in ids},
        }
    )
    schema = schemathesis.openapi.from_url(f"{stack.urls[service]}/openapi.json", config=config)
    # The live stream never ends by design (it keeps the connection open for new facts);
    # the feed tests read it with max_events.
    schema = schema.exclude(path="/public/stream")
    failures: list[str] = []
    requests = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            requests += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.label} [{check.name}] {failure.title}: {failure.message}\n"
                            f"    {check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"engine error: {event!r}")
    return sorted(set(failures)), requests


# Each service as the association, and as the role most of its other commands belong to.
RUNS = [
    ("registry", "association"),
    ("registry", "department"),
    ("capability", "association"),
    ("capability", "society"),
    ("supervision", "association"),
    ("supervision", "society"),
    ("disclosure", "public"),
]


@pytest.mark.parametrize(("service", "role"), RUNS)
def test_no_operation_answers_a_server_error_or_a_bare_client_error(
    stack: Stack, targets: World, service: str, role: str
) -> None:
    failures, requests = fuzz(stack, service, targets, role)
    assert requests > 100, f"schemathesis sent only {requests} requests to {service}"
    assert not failures, "\n".join(failures)


# --- what the generators rarely produce, sent on purpose ----------------------------------------


def test_text_postgresql_cannot_store_is_refused_with_a_problem_not_a_crash(stack: Stack, targets: World) -> None:
    """NUL characters and unpaired surrogates are valid JSON but no text column holds them."""
    registry = stack.client("registry", stack.token("society", targets.society_id, DEYANG))
    proposal = {
        "jurisdiction": DEYANG,
        "title": "团体标准",
        "category": "technical_standard",
        "sub_kind": "group_standard",
        "scope": "partial",
        "entrustment_mode": "tripartite_task_agreement",
        "department": "deyang-hr",
    }
    for bad in ("a\x00b", "\ud800", "ok\udfffok"):
        for field in ("title", "description", "department"):
            body = httpx_json({**proposal, field: bad})
            response = registry.post("/functions", content=body, headers={"content-type": "application/json"})
            assert_problem(response, 422, "invalid_request")
    supervision = stack.client("supervision", stack.token("association", ASSOCIATION, DEYANG))
    nested = {"basis": "x", "text": "ok", "extra": {"\x00": 1}}
    response = supervision.post(
        f"/cases/{targets.project_id}/warnings",
        content=httpx_json(nested),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 422, "invalid_request")
    for path in ("/cases?department=a%00b", "/cases?society_id=%00", f"/cases/{targets.project_id}%00"):
        assert_problem(supervision.get(path), 422, "invalid_character")
    disclosure = stack.client("disclosure")
    assert_problem(disclosure.get(f"/public/jurisdictions/{DEYANG}/cases?phase=%00"), 422, "invalid_character")


def test_numbers_beyond_the_database_range_are_refused_with_a_problem(stack: Stack) -> None:
    big = str(2**64)
    registry = stack.client("registry", stack.token("association", ASSOCIATION, DEYANG))
    for path in (
        f"/functions?offset={big}",
        f"/function-lists/{DEYANG}/diff?from=1&to={big}",
        f"/function-lists/{DEYANG}/versions/99999999999",
        f"/audit/entries/{big}",
        f"/audit/proofs/consistency?first=1&second={big}",
        f"/audit/proofs/inclusion?log_index={big}&tree_size={big}",
        f"/audit/checkpoints?after_size={big}",
    ):
        assert_problem(registry.get(path), 422, "invalid_request")
    disclosure = stack.client("disclosure")
    for path in (
        f"/public/facts/{big}",
        f"/public/feed.atom?after={big}",
        f"/public/jurisdictions/{DEYANG}/list-versions/{big}",
        f"/public/jurisdictions/{DEYANG}/list-versions/²",
        f"/public/jurisdictions/{DEYANG}/changes?offset={big}",
    ):
        assert_problem(disclosure.get(path), 422, "invalid_request")
    portal = disclosure.get(f"/portal/j/{DEYANG}/list-versions/{big}")
    assert_problem(portal, 422, "invalid_request")
    stream = disclosure.get("/public/stream", headers={"Last-Event-ID": big})
    assert_problem(stream, 422, "invalid_last_event_id")


def test_decimals_beyond_what_the_scoring_arithmetic_holds_are_refused(stack: Stack) -> None:
    """Evaluation divides measured values by targets with 28 significant digits: a value that
    would overflow it is refused on the way in, so no stored fact can make a case unevaluable."""
    targets = new_world(stack)  # a case of its own: the fuzzer may have suspended or ended the shared one
    base = f"/cases/{targets.project_id}"
    association = stack.client("supervision", stack.token("association", ASSOCIATION, DEYANG))
    society = stack.client("supervision", stack.token("society", targets.society_id, DEYANG))
    huge_weights = {
        "rights_and_obligations": "r",
        "cooperation_mode": "c",
        "indicators": [
            {"name": "a", "unit": "u", "target": "1e-999999", "weight": "9e999999"},
            {"name": "b", "unit": "u", "target": "1", "weight": "9e999999"},
        ],
    }
    assert_problem(association.post(f"{base}/agreements", json=huge_weights), 422, "invalid_request")
    for value in ("1e1000000000", "1e-1000000000", "0.0000000000000000000001", "1" * 19):
        measurement = {"name": "people_evaluated", "value": value, "period": "2026Q1"}
        assert_problem(society.post(f"{base}/indicator-measurements", json=measurement), 422, "invalid_request")
    claimed = {"report_ref": "r", "claimed_score": "1e-1000000000"}
    assert_problem(society.post(f"{base}/self-evaluation", json=claimed), 422, "invalid_request")
    measurement = {"name": "people_evaluated", "value": "123456789012345678.123456789012345678", "period": "2026Q2"}
    assert society.post(f"{base}/indicator-measurements", json=measurement).status_code == 200
    evaluated = association.post(f"{base}/evaluation", json={})
    assert evaluated.status_code == 200, evaluated.text


def test_a_body_that_is_not_json_is_a_problem(stack: Stack, targets: World) -> None:
    registry = stack.client("registry", stack.token("department", "deyang-hr", DEYANG))
    for content in (b"{", b"\xff\xfe", b"[1, 2", b"null", b'{"reason": ' + b"9" * 5000 + b"}"):
        response = registry.post(
            f"/functions/{targets.function_id}/withdrawal",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
        assert_problem(response, response.status_code)


# --- oversized bodies: 413 on every service ----------------------------------------------------

LIMIT = 1_048_576  # CHENGNENG_MAX_BODY_BYTES's default


@pytest.mark.parametrize("service", SERVICES)
def test_an_oversized_body_is_refused_with_413_before_it_is_read(stack: Stack, service: str) -> None:
    token = stack.token("association", ASSOCIATION, DEYANG)
    path = {
        "registry": "/functions",
        "capability": "/societies",
        "supervision": f"/cases/{uuid.uuid4().hex}/warnings",
        "disclosure": "/public/feed.atom",  # no command at all: the limit holds for every route
    }[service]
    body = b'{"title": "' + b"x" * (LIMIT + 1) + b'"}'

    def chunks() -> Any:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with httpx.Client(base_url=stack.urls[service], headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        declared = c.request("POST", path, content=body, headers={"content-type": "application/json"})
        assert_problem(declared, 413, "body_too_large")
        streamed = c.request("POST", path, content=chunks(), headers={"content-type": "application/json"})
        if service == "disclosure":
            # the route reads no body; a chunked one is never buffered, so it cannot exhaust memory
            assert streamed.status_code == 405, streamed.text
        else:
            assert_problem(streamed, 413, "body_too_large")
        just_fits = c.request("POST", path, content=b" " * LIMIT, headers={"content-type": "application/json"})
        assert just_fits.status_code != 413, just_fits.text


def httpx_json(value: Any) -> bytes:
    """JSON as a client may send it: unpaired surrogates written as \\u escapes."""
    import json

    return json.dumps(value, ensure_ascii=True).encode()
