"""The change feeds: Atom for pollers, Server-Sent Events for live subscribers, resumable without loss."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.stack

CODE = "510683"  # a county of Deyang: facts of this module only
ATOM = "{http://www.w3.org/2005/Atom}"


def make_facts(stack: Stack, n: int) -> set[str]:
    department = stack.client("registry", stack.token("department", "mianzhu-sci", CODE))
    ids = set()
    for i in range(n):
        fid = f"feed-{i}-{uuid.uuid4().hex[:6]}"
        body = {
            "function_id": fid,
            "jurisdiction": CODE,
            "title": f"订阅 {i}",
            "category": "public_service",
            "sub_kind": "other",
            "scope": "partial",
            "entrustment_mode": "purchase_of_services",
            "department": "mianzhu-sci",
        }
        assert department.post("/functions", json=body).status_code == 201
        assert department.post(f"/functions/{fid}/listing", json={}).status_code == 200
        ids.add(fid)
    return ids


def atom_page(client: httpx.Client, after: int, limit: int) -> tuple[list[dict], int]:  # type: ignore[type-arg]
    response = client.get("/public/feed.atom", params={"after": after, "limit": limit, "jurisdiction": CODE})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.text)
    entries = [json.loads(e.find(f"{ATOM}content").text or "{}") for e in feed.findall(f"{ATOM}entry")]
    next_link = next(link.get("href") for link in feed.findall(f"{ATOM}link") if link.get("rel") == "next")
    next_after = int(str(next_link).split("after=")[1].split("&")[0])
    assert next_after == int(response.headers["X-Next-After"])
    return entries, next_after


def test_paging_through_the_atom_feed_from_any_position_loses_and_repeats_nothing(stack: Stack) -> None:
    functions = make_facts(stack, 5)
    disclosure = stack.client("disclosure")
    expected = wait_until(
        lambda: (
            len(r := disclosure.get(f"/public/jurisdictions/{CODE}/changes", params={"limit": 500}).json()["changes"])
            >= 10
            and r
        ),
        message="ten disclosed facts (5 proposals, 5 listings)",
    )
    all_positions = sorted(c["position"] for c in expected)

    def poll_all() -> list[dict]:  # type: ignore[type-arg]
        seen: list[dict] = []  # type: ignore[type-arg]
        after = 0
        while True:  # a poller that takes three at a time
            entries, after = atom_page(disclosure, after, 3)
            if not entries:
                return seen
            seen += entries

    # The feeds follow the sealed log, a moment behind the store.
    seen = wait_until(lambda: len(s := poll_all()) >= len(all_positions) and s, message="the feed to carry every fact")
    sequences = [e["sequence"] for e in seen]
    assert sequences == sorted(sequences) and len(sequences) == len(set(sequences))
    assert sorted(e["position"] for e in seen) == all_positions
    assert {e["data"]["function_id"] for e in seen} == functions
    assert {e["type"] for e in seen} == {"FunctionProposed", "FunctionListed"}

    # Resuming from the middle gives exactly the rest.
    middle = sequences[4]
    rest, _ = atom_page(disclosure, middle, 100)
    assert [e["sequence"] for e in rest] == sequences[5:]


def test_the_event_stream_resumes_from_last_event_id(stack: Stack) -> None:
    make_facts(stack, 2)
    base = stack.urls["disclosure"]
    wait_until(
        lambda: (
            len(httpx.get(f"{base}/public/jurisdictions/{CODE}/changes", params={"limit": 500}).json()["changes"]) >= 4
        ),
        message="the facts to be disclosed",
    )

    def read(headers: dict[str, str], count: int) -> list[tuple[int, dict]]:  # type: ignore[type-arg]
        events = []
        params = {"jurisdiction": CODE, "max_events": count}
        with httpx.stream("GET", f"{base}/public/stream", params=params, headers=headers, timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            current: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(": ")
                    current[key] = value
                elif not line and "data" in current:
                    events.append((int(current["id"]), json.loads(current["data"])))
                    current = {}
        return events

    first = read({}, 3)
    rest = read({"Last-Event-ID": str(first[-1][0])}, 1)
    assert [p for p, _ in first] == sorted(p for p, _ in first)
    assert rest[0][0] > first[-1][0]
    everything = read({}, len(first) + 1)
    assert [p for p, _ in everything] == [p for p, _ in first] + [rest[0][0]]
    assert all(e["jurisdiction"] == CODE for _, e in first + rest)
