"""Races: 100 concurrent clients issuing conflicting commands on one stream, over HTTP.

Every command is decided against the state it read and appended at the version it read;
a writer that lost the race decides again on the new state, and after ten lost races the
client hears 409 problem details and may retry (with its Idempotency-Key, safely). So the
only outcomes are the permitted ones: one winner where only one may win, every distinct
effect exactly once, a 422 where the rules refuse, a 409 where the client should retry —
never a server error, never an effect lost or doubled. Each test ends by replaying the
stream from the store (hash chain, dense versions, the domain's own fold) and comparing
the result with the read model the service answers from.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from services.capability import domain as capability
from services.registry import domain as registry
from services.supervision import domain as supervision
from shared import db
from shared.envelope import GENESIS_HASH
from shared.messages import Aggregate, EventRegistry
from tests.conftest import Stack, wait_until
from tests.e2e.flows import register_society
from tests.e2e.hardening.support import ASSOCIATION, DEPARTMENT, DEYANG, FINANCE, assert_problem, new_world, short_id

pytestmark = pytest.mark.stack

CLIENTS = 100
MAX_ROUNDS = 20


Request = tuple[str, dict[str, Any], dict[str, str]]  # path, body, headers


async def storm(stack: Stack, service: str, requests: list[Request]) -> list[httpx.Response]:
    """Send every request at once, each on its own connection, and return the responses in order."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=stack.urls[service], limits=limits, timeout=60) as client:
        gate = asyncio.Event()

        async def one(request: Request) -> httpx.Response:
            path, body, headers = request
            await gate.wait()
            return await client.post(path, json=body, headers=headers)

        tasks = [asyncio.create_task(one(r)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        return list(await asyncio.gather(*tasks))


async def until_settled(stack: Stack, service: str, requests: list[Request]) -> list[httpx.Response]:
    """``storm``, then resend — with the same Idempotency-Key — whatever was told to retry (409)."""
    responses = await storm(stack, service, requests)
    for _ in range(MAX_ROUNDS):
        retry = [i for i, r in enumerate(responses) if r.status_code == 409]
        if not retry:
            return responses
        for i in retry:
            assert_problem(responses[i], 409)
        again = await storm(stack, service, [requests[i] for i in retry])
        for i, response in zip(retry, again, strict=True):
            responses[i] = response
    raise AssertionError("clients still told to retry after many rounds")


def bearer(stack: Stack, role: str, org: str, *, key: str | None = None) -> dict[str, str]:
    """Headers of one client: its own principal (a distinct subject) and, maybe, an Idempotency-Key."""
    token = stack.token(role, org, DEYANG, subject=f"{role}-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return headers


def appended(response: httpx.Response) -> list[str]:
    assert response.status_code in (200, 201), response.text
    return [e["event_type"] for e in response.json()["appended"]]


async def replay(
    stack: Stack, service: str, stream_id: str, aggregate: Aggregate[Any], events: EventRegistry
) -> tuple[Any, list[str]]:
    """The stream's state folded from the store by the domain's evolve, and its event types.

    Checks on the way that the stream is whole: versions 1..n without a gap or a repeat,
    each event chained to the hash of the one before it, no event id twice.
    """
    conn = await db.connect(stack.database_url, service)
    try:
        rows = await conn.fetch(
            """SELECT stream_version, event_id, event_type, schema_version, payload, prev_hash, hash
               FROM events WHERE stream_id = $1 ORDER BY stream_version""",
            stream_id,
        )
    finally:
        await conn.close()
    assert [r["stream_version"] for r in rows] == list(range(1, len(rows) + 1))
    assert len({r["event_id"] for r in rows}) == len(rows)
    previous = GENESIS_HASH
    state = aggregate.initial()
    for r in rows:
        assert bytes(r["prev_hash"]) == previous, f"chain broken at version {r['stream_version']}"
        previous = bytes(r["hash"])
        state = aggregate.evolve(state, events.decode(r["event_type"], r["schema_version"], r["payload"]))
    return state, [r["event_type"] for r in rows]


async def read_model(stack: Stack, service: str, sql: str, *args: Any) -> Any:
    conn = await db.connect(stack.database_url, service)
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def assert_replay_matches_the_read_model(
    stack: Stack, service: str, table: str, key: str, entity_id: str, stream_id: str, aggregate: Aggregate[Any]
) -> tuple[Any, list[str]]:
    events = {"registry": registry.EVENTS, "capability": capability.EVENTS, "supervision": supervision.EVENTS}
    state, types = await replay(stack, service, stream_id, aggregate, events[service])
    row = await read_model(stack, service, f"SELECT state, stream_version FROM {table} WHERE {key} = $1", entity_id)
    assert row is not None, f"no read model row for {entity_id}"
    assert row["stream_version"] == len(types), "the read model is at another version than the stream"
    assert row["state"] == state.model_dump(mode="json"), "the read model disagrees with the replayed stream"
    return state, types


def proposal(function_id: str) -> dict[str, Any]:
    return {
        "function_id": function_id,
        "jurisdiction": DEYANG,
        "title": "团体标准研制",
        "category": "technical_standard",
        "sub_kind": "group_standard",
        "scope": "partial",
        "entrustment_mode": "tripartite_task_agreement",
        "department": DEPARTMENT,
    }


def new_function(stack: Stack, *, listed: bool) -> str:
    fid = short_id("race-fn")
    department = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    assert department.post("/functions", json=proposal(fid)).status_code == 201
    if listed:
        assert department.post(f"/functions/{fid}/listing", json={}).status_code == 200
    return fid


# --- one transition, a hundred clients ----------------------------------------------------------


async def test_a_hundred_clients_taking_the_same_transition_record_it_exactly_once(stack: Stack) -> None:
    fid = new_function(stack, listed=False)
    path = f"/functions/{fid}/consultation"
    requests = [(path, {"note": "走访部门"}, bearer(stack, "association", ASSOCIATION)) for _ in range(CLIENTS)]
    responses = await storm(stack, "registry", requests)
    assert all(r.status_code in (200, 409) for r in responses), Counter(r.status_code for r in responses)
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409)
    outcomes = Counter(tuple(appended(r)) for r in responses if r.status_code == 200)
    assert outcomes[("ConsultationStarted",)] == 1, outcomes
    assert set(outcomes) <= {("ConsultationStarted",), ()}, outcomes
    state, types = await assert_replay_matches_the_read_model(
        stack, "registry", "functions", "function_id", fid, registry.function_stream(fid), registry.FUNCTION
    )
    assert types == ["FunctionProposed", "ConsultationStarted"]
    assert state.status is registry.Status.IN_CONSULTATION


async def test_conflicting_decisions_on_one_function_let_exactly_one_win(stack: Stack) -> None:
    """Half the department's clerks withdraw the listed function, half delist it: one of them wins."""
    fid = new_function(stack, listed=True)
    kinds = ["withdrawal", "delisting"]
    requests = [
        (
            f"/functions/{fid}/{kinds[i % 2]}",
            {"reason": f"{kinds[i % 2]} by clerk {i}"},
            bearer(stack, "department", DEPARTMENT),
        )
        for i in range(CLIENTS)
    ]
    responses = await until_settled(stack, "registry", requests)
    effects = [(kinds[i % 2], appended(r)) for i, r in enumerate(responses) if r.status_code == 200 and appended(r)]
    assert len(effects) == 1, effects
    winner, events = effects[0]
    assert events == [{"withdrawal": "FunctionWithdrawn", "delisting": "FunctionDelisted"}[winner]]
    for i, r in enumerate(responses):
        if kinds[i % 2] == winner:
            assert r.status_code == 200, r.text  # the same decision again: nothing more to record
        else:
            assert_problem(r, 422, "invalid_transition")
    state, types = await assert_replay_matches_the_read_model(
        stack, "registry", "functions", "function_id", fid, registry.function_stream(fid), registry.FUNCTION
    )
    assert types == ["FunctionProposed", "FunctionListed", *events]
    assert state.status is {"withdrawal": registry.Status.WITHDRAWN, "delisting": registry.Status.DELISTED}[winner]


# --- a hundred distinct effects on one stream: none lost ------------------------------------------


async def test_a_hundred_societies_applying_at_once_are_all_recorded_once(stack: Stack) -> None:
    fid = new_function(stack, listed=True)
    department = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    opened = department.post(f"/functions/{fid}/opening", json={"min_applicants": 2})
    assert opened.status_code == 200, opened.text
    societies = [short_id("race-soc") for _ in range(CLIENTS)]
    await asyncio.gather(
        *(
            asyncio.to_thread(register_society, stack, s, DEYANG, ASSOCIATION, relation="group_member")
            for s in societies
        )
    )
    cast = stack.client("capability", stack.token("association", ASSOCIATION, DEYANG))
    wait_until(lambda: cast.get(f"/selections/{fid}").status_code == 200, message="the selection to open")
    path = f"/selections/{fid}/applications"
    requests = [
        (path, {"society_id": s, "statement": "我们能承接"}, bearer(stack, "society", s, key=f"apply-{s}"))
        for s in societies
    ]
    responses = await until_settled(stack, "capability", requests)
    assert all(appended(r) == ["ApplicationSubmitted"] for r in responses), Counter(r.status_code for r in responses)
    state, types = await replay(
        stack, "capability", capability.selection_stream(fid), capability.SELECTION, capability.EVENTS
    )
    assert sorted(state.applicants) == sorted(societies)
    assert Counter(types)["ApplicationSubmitted"] == CLIENTS
    row = await read_model(
        stack, "capability", "SELECT applicants, stream_version FROM selections WHERE function_id = $1", fid
    )
    assert (row["applicants"], row["stream_version"]) == (CLIENTS, len(types))
    # a second storm of the same applications, with their keys, changes nothing
    again = await until_settled(stack, "capability", requests)
    assert [r.json() for r in again] == [r.json() for r in responses]
    assert (
        await replay(stack, "capability", capability.selection_stream(fid), capability.SELECTION, capability.EVENTS)
    )[1] == types


async def test_a_hundred_disbursements_against_one_budget_never_overspend_it(stack: Stack) -> None:
    world = new_world(stack, implementation=False)
    base = f"/cases/{world.project_id}"
    cast = stack.client("supervision", stack.token("association", ASSOCIATION, DEYANG))
    allocation = {"amount_fen": 50_000, "source": "能力提升项目经费", "basis": "年度预算"}
    assert appended(cast.post(f"{base}/funding-allocations", json=allocation)) == ["FundingAllocated"]
    requests = [
        (
            f"{base}/disbursements",
            {"amount_fen": 1_000, "purpose": f"第 {i} 笔"},
            bearer(stack, "finance_bureau", FINANCE, key=f"pay-{i}"),
        )
        for i in range(CLIENTS)
    ]
    responses = await until_settled(stack, "supervision", requests)
    paid = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(paid) == 50 and all(appended(r) == ["FundingDisbursed"] for r in paid), Counter(
        r.status_code for r in responses
    )
    for r in refused:
        assert_problem(r, 422, "funding_exceeded")
    state, types = await assert_replay_matches_the_read_model(
        stack,
        "supervision",
        "cases",
        "project_id",
        world.project_id,
        supervision.case_stream(world.project_id),
        supervision.CASE,
    )
    assert Counter(types)["FundingDisbursed"] == 50
    ledger = supervision.ledger(state)
    assert (ledger.disbursed, ledger.balance) == (50_000, 0), ledger
    assert cast.get(base).json()["ledger"] == ledger.model_dump(mode="json")


async def test_a_hundred_concurrent_retries_with_one_idempotency_key_have_one_effect(stack: Stack) -> None:
    world = new_world(stack, implementation=False)
    base = f"/cases/{world.project_id}"
    headers = bearer(stack, "association", ASSOCIATION, key=f"warn-{uuid.uuid4()}")
    body = {"basis": "督导例会纪要", "text": "进度滞后"}
    responses = await storm(stack, "supervision", [(f"{base}/warnings", body, headers)] * CLIENTS)
    assert {r.status_code for r in responses} == {200}, Counter(r.status_code for r in responses)
    first = responses[0].json()
    assert all(r.json() == first for r in responses), "every retry must get the first response"
    assert appended(responses[0]) == ["WarningIssued"]
    _, types = await assert_replay_matches_the_read_model(
        stack,
        "supervision",
        "cases",
        "project_id",
        world.project_id,
        supervision.case_stream(world.project_id),
        supervision.CASE,
    )
    assert Counter(types)["WarningIssued"] == 1
