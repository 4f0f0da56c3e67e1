"""The capability service end to end over HTTP and Kafka, on a stack started with `chengneng up`.

Societies are registered, described and assessed by their association; a function opened
in the registry starts a selection here (via Kafka); the ranking is checked against the
documented method (``capability-score-v1``) computed by hand; the recommendation flows
back to the registry; supervision outcomes arrive as CloudEvents on their topic.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.envelope import GENESIS_HASH, Envelope, canonical_bytes, chain_hash
from shared.kafka import ensure_topics, events_topic, to_message
from shared.principal import Principal, Role
from tests.conftest import Stack, wait_until
from tests.e2e.flows import recommend_through_capability, register_society, wait_for_selection

pytestmark = pytest.mark.stack

DEYANG = "510600"
SICHUAN = "510000"
MIANYANG = "510700"
JINGYANG = "510603"  # a district of Deyang: rolls up into the city and the province
CAST = "deyang-cast"
MIANYANG_CAST = "mianyang-cast"
DEPARTMENT = "deyang-samr"
CENT = Decimal("0.01")
ZERO_HASH = "00" * 32


def post(client: httpx.Client, path: str, body: dict | None = None, **headers: str) -> httpx.Response:  # type: ignore[type-arg]
    return client.post(path, json=body or {}, headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def ok(response: httpx.Response, status: int = 200) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def by_hand(raw: Decimal, weight: str) -> Decimal:
    """round(raw × weight) to 2 decimals, half to even: the documented weighted value."""
    return (raw * Decimal(weight)).quantize(CENT, rounding=ROUND_HALF_EVEN)


def cast_client(stack: Stack, org: str = CAST, jurisdiction: str = DEYANG) -> httpx.Client:
    return stack.client("capability", stack.token("association", org, jurisdiction))


def society_client(stack: Stack, society_id: str, jurisdiction: str = DEYANG) -> httpx.Client:
    return stack.client("capability", stack.token("society", society_id, jurisdiction))


def describe(
    client: httpx.Client,
    society_id: str,
    *,
    governance: tuple[bool, bool, bool, bool, bool],
    staff: int,
    completed: list[str],
    in_progress: list[str] = [],  # noqa: B006 - never mutated
    willingness: str | None = None,
    self_assessment: str = "partly_capable",
) -> None:
    """Governance, decoupling lines and (optionally) the survey answer of one society."""
    board, secretariat, supervisory, real_entity, professional = governance
    ok(
        post(
            client,
            f"/societies/{society_id}/governance",
            {
                "has_board": board,
                "has_secretariat": secretariat,
                "has_supervisory_board": supervisory,
                "secretariat_real_entity": real_entity,
                "professional_secretary_general": professional,
                "full_time_staff": staff,
            },
        )
    )
    for line in completed:
        body = {"line": line, "status": "completed", "note": "approved by the civil affairs bureau"}
        ok(post(client, f"/societies/{society_id}/decoupling", body))
    for line in in_progress:
        ok(post(client, f"/societies/{society_id}/decoupling", {"line": line, "status": "in_progress"}))
    if willingness is not None:
        answer = {
            "willingness": willingness,
            "self_assessment": self_assessment,
            "preferred_modes": ["purchase_of_services"],
            "survey_reference": "德阳市科协 2025 问卷",
        }
        ok(post(client, f"/societies/{society_id}/survey-answers", answer))


def assess_with(client: httpx.Client, society_id: str, scores: tuple[float, float, float], **extra: Any) -> str:
    assessment_id = extra.pop("assessment_id", uid("as"))
    body = {
        "assessment_id": assessment_id,
        "scores": dict(zip(("comprehensive_strength", "management_quality", "service_level"), scores, strict=True)),
        "evidence": ["2025 annual report", "site visit"],
        **extra,
    }
    ok(post(client, f"/societies/{society_id}/assessments", body))
    return assessment_id


def open_function(
    stack: Stack,
    *,
    thresholds: list[dict[str, str]],
    min_applicants: int,
    qualification_conditions: list[str] | None = None,
) -> str:
    """Propose → list → open a group-standard function in Deyang; wait for its selection."""
    fid = uid("std")
    department = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    proposal = {
        "function_id": fid,
        "jurisdiction": DEYANG,
        "title": "工业机器人团体标准研制",
        "description": "Group standard for industrial robot cells",
        "category": "technical_standard",
        "sub_kind": "group_standard",
        "scope": "partial",
        "entrustment_mode": "purchase_of_services",
        "department": DEPARTMENT,
    }
    ok(post(department, "/functions", proposal), 201)
    ok(post(department, f"/functions/{fid}/listing"))
    opening = {
        "qualification_conditions": qualification_conditions or [],
        "thresholds": thresholds,
        "min_applicants": min_applicants,
    }
    ok(post(department, f"/functions/{fid}/opening", opening))
    wait_for_selection(stack, fid, DEYANG, CAST)
    return fid


def apply(stack: Stack, fid: str, society_id: str) -> httpx.Response:
    body = {"society_id": society_id, "statement": "we drafted three group standards already"}
    return post(society_client(stack, society_id), f"/selections/{fid}/applications", body)


def compute_ranking(stack: Stack, fid: str) -> dict[str, Any]:
    ok(post(cast_client(stack), f"/selections/{fid}/ranking"))
    return cast_client(stack).get(f"/selections/{fid}").json()["ranking"]  # type: ignore[no-any-return]


SUPERVISION_FIELDS: dict[str, dict[str, Any]] = {
    "EvaluationCompleted": {"score": "86.50", "method": "performance-score-v1", "inputs": []},
    "RectificationOrdered": {
        "rectification_id": "r-1",
        "required_actions": ["补齐评价档案"],
        "deadline": "2026-12-31",
        "basis": "督导例会纪要",
    },
}
"""The rest of each event as supervision publishes it: consumers check the producer's schema."""


def supervision_envelope(stream_id: str, version: int, event_type: str, payload: dict[str, str]) -> Envelope:
    payload = {**SUPERVISION_FIELDS.get(event_type, {}), **payload}
    values: dict[str, Any] = {
        "stream_id": stream_id,
        "stream_type": "project",
        "stream_version": version,
        "event_id": uuid.uuid4(),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": datetime.now(UTC),
        "actor": Principal(subject="inspector", organisation=CAST, role=Role.ASSOCIATION, jurisdiction=DEYANG),
        "jurisdiction": DEYANG,
        "correlation_id": uuid.uuid4(),
        "causation_id": None,
        "payload": payload,
        "prev_hash": GENESIS_HASH,
    }
    return Envelope(**values, hash=chain_hash(canonical_bytes(**values)), position=version)


def publish_supervision(stack: Stack, envelopes: list[Envelope]) -> None:
    """Produce the envelopes, in order, as supervision's CloudEvents on its topic."""

    async def produce() -> None:
        topic = events_topic("supervision")
        await ensure_topics(stack.kafka, [topic])
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka)
        await producer.start()
        try:
            for envelope in envelopes:
                message = to_message("supervision", envelope)
                await producer.send_and_wait(topic, value=message.value, key=message.key, headers=message.headers)
        finally:
            await producer.stop()

    asyncio.run(produce())


def society(stack: Stack, society_id: str) -> dict[str, Any]:
    return ok(cast_client(stack).get(f"/societies/{society_id}"))


# --- 1. ranking by the documented method ------------------------------------------------


def test_the_ranking_follows_the_documented_method_and_changes_with_a_corrected_assessment(stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:8]
    a, c, d, e = (f"dy-{letter}-{suffix}" for letter in "acde")  # ids sort a < c < d < e
    cast = cast_client(stack)
    for sid in (a, c, d, e):
        register_society(stack, sid, DEYANG, CAST)

    # A: board, secretariat, supervisory board, real secretariat (4 × 10); three lines done.
    describe(
        cast,
        a,
        governance=(True, True, True, True, False),
        staff=4,
        completed=["institution", "functions", "assets_finance"],
        in_progress=["personnel"],
        willingness="very_willing",
    )
    # C answers its own survey; three governance bodies, three lines done.
    describe(
        society_client(stack, c),
        c,
        governance=(True, True, True, False, False),
        staff=2,
        completed=["institution", "functions", "personnel"],
        willingness="very_willing",
        self_assessment="fully_capable",
    )
    describe(cast, d, governance=(True, True, True, True, True), staff=9, completed=[], willingness="willing")
    describe(cast, e, governance=(True, False, False, False, False), staff=1, completed=[], willingness="willing")
    assess_with(cast, a, (82, 75, 69.95))
    first_c = assess_with(cast, c, (55, 90, 88))  # comprehensive strength below 60
    assess_with(cast, d, (88, 86, 84))
    ok(post(cast, f"/societies/{d}/classification", {"society_class": "exit", "rationale": "inactive since 2022"}))

    fid = open_function(
        stack,
        thresholds=[
            {"name": "min_comprehensive_strength", "requirement": ">= 60"},
            {"name": "min_patent_count", "requirement": ">= 5"},
        ],
        min_applicants=3,
        qualification_conditions=["registered for at least 3 years"],
    )
    for sid in (e, d, c, a):
        ok(apply(stack, fid, sid))

    ranking = compute_ranking(stack, fid)
    assert ranking["method"] == "capability-score-v1"
    assert [(x["society_id"], x["code"]) for x in ranking["exclusions"]] == [
        (c, "threshold_not_met"),
        (d, "class_exit"),
        (e, "no_assessment"),
    ]
    reason = ranking["exclusions"][0]["reason"]
    assert "min_comprehensive_strength" in reason and ">= 60" in reason and "55" in reason
    assert ranking["manual_checks"] == [
        "qualification condition: registered for at least 3 years",
        "threshold min_patent_count (>= 5): unknown threshold, check by hand",
    ]
    assert ranking["eligible_count"] == 1 and ranking["min_applicants"] == 3
    assert ranking["insufficient_competition"] is True

    # By hand, from the documented weights (0.5, 0.2, 0.2, 0.1), round half to even.
    a_capability_raw = ((Decimal("82") + Decimal("75") + Decimal("69.95")) / 3).quantize(CENT, ROUND_HALF_EVEN)
    assert a_capability_raw == Decimal("75.65")  # 226.95 / 3
    a_capability = by_hand(a_capability_raw, "0.5")
    assert a_capability == Decimal("37.82")  # 37.825, half to even: down to 37.82 (not 37.83)
    a_governance = by_hand(Decimal(4 * 10 + 3 * 10), "0.2")  # in-progress personnel counts nothing
    assert a_governance == Decimal("14.00")
    a_track = by_hand(Decimal(60), "0.2")  # no outcome noted: the start value
    a_willing = by_hand(Decimal(100), "0.1")  # very willing
    a_total = a_capability + a_governance + a_track + a_willing
    assert a_total == Decimal("73.82")

    [only] = ranking["candidates"]
    assert only["society_id"] == a and only["rank"] == 1 and only["brand"] is False
    assert Decimal(only["total"]) == a_total
    assert Decimal(only["capability"]["raw"]) == a_capability_raw
    assert Decimal(only["capability"]["weighted"]) == a_capability
    assert Decimal(only["governance_decoupling"]["raw"]) == Decimal(70)
    assert Decimal(only["governance_decoupling"]["weighted"]) == a_governance
    assert (Decimal(only["track_record"]["raw"]), Decimal(only["track_record"]["weighted"])) == (60, a_track)
    assert (Decimal(only["willingness"]["raw"]), Decimal(only["willingness"]["weighted"])) == (100, a_willing)
    assert [Decimal(x["weight"]) for x in (only[k] for k in ("capability", "governance_decoupling"))] == [
        Decimal("0.5"),
        Decimal("0.2"),
    ]

    # A corrected assessment of C supersedes the first one: C now passes and ties with A.
    corrected = assess_with(cast, c, (79, 80, 79.92), supersedes=first_c, reason="strength miscounted in 2025")
    detail = society(stack, c)
    assert detail["current_assessment"]["assessment_id"] == corrected
    assert detail["assessments"][first_c]["superseded_by"] == corrected

    ranking = compute_ranking(stack, fid)
    c_capability_raw = ((Decimal("79") + Decimal("80") + Decimal("79.92")) / 3).quantize(CENT, ROUND_HALF_EVEN)
    assert c_capability_raw == Decimal("79.64")  # 238.92 / 3
    c_capability = by_hand(c_capability_raw, "0.5")  # 39.82
    c_governance = by_hand(Decimal(3 * 10 + 3 * 10), "0.2")  # 12.00
    c_total = c_capability + c_governance + by_hand(Decimal(60), "0.2") + by_hand(Decimal(100), "0.1")
    assert c_total == a_total == Decimal("73.82")  # a tie on the total, neither a brand society
    # so capability raw decides (79.64 > 75.65): C before A, although "dy-a" < "dy-c"
    assert [(x["rank"], x["society_id"], Decimal(x["total"])) for x in ranking["candidates"]] == [
        (1, c, c_total),
        (2, a, a_total),
    ]
    assert Decimal(ranking["candidates"][0]["capability"]["weighted"]) == c_capability
    assert Decimal(ranking["candidates"][0]["governance_decoupling"]["weighted"]) == c_governance
    assert [(x["society_id"], x["code"]) for x in ranking["exclusions"]] == [(d, "class_exit"), (e, "no_assessment")]
    assert ranking["eligible_count"] == 2 and ranking["insufficient_competition"] is True
    snapshot_c = next(s for s in ranking["inputs"] if s["society_id"] == c)
    assert snapshot_c["assessment_id"] == corrected
    selection = cast.get(f"/selections/{fid}").json()
    assert selection["ranking_version"] == 2 and selection["scoring_method"] == "capability-score-v1"

    assert_problem(post(cast, f"/selections/{fid}/recommendation", {"society_ids": [c]}), 422, "justification_required")
    justified = {"society_ids": [c], "justification": "only two eligible societies in Deyang; C ranks first"}
    recommended = ok(post(cast, f"/selections/{fid}/recommendation", justified))
    assert [x["event_type"] for x in recommended["appended"]] == ["SocietiesRecommended"]
    selection = cast.get(f"/selections/{fid}").json()
    assert selection["recommended"] == [c] and selection["recommended_ranking_version"] == 2

    registry = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    wait_until(
        lambda: registry.get(f"/functions/{fid}").json()["recommended_society_ids"] == [c],
        message="the registry to learn the recommendation",
    )
    assignment = post(registry, f"/functions/{fid}/assignment", {"society_id": a, "society_name": "学会 A"})
    assert_problem(assignment, 422, "society_not_recommended")
    ok(post(registry, f"/functions/{fid}/assignment", {"society_id": c, "society_name": "学会 C"}))

    # The capability service learns the assignment from the registry's event.
    closed = wait_until(
        lambda: (s := cast.get(f"/selections/{fid}").json())["status"] == "closed" and s,
        message="the selection to close after the assignment",
    )
    assert closed["close_reason"] == f"assigned to {c}"
    wait_until(lambda: society(stack, c)["functions_undertaken"] == [fid], message="C to note the function")


# --- 2. stale ranking and ineligible recommendation -------------------------------------


def test_recommendation_is_refused_when_applications_changed_since_the_ranking(stack: Stack) -> None:
    x, y = uid("dy-x"), uid("dy-y")
    cast = cast_client(stack)
    for sid in (x, y):
        register_society(stack, sid, DEYANG, CAST)
    assess_with(cast, x, (80, 80, 80))  # y has no assessment
    fid = open_function(
        stack, thresholds=[{"name": "min_comprehensive_strength", "requirement": "60"}], min_applicants=1
    )
    ok(apply(stack, fid, x))

    recommend = {"society_ids": [x]}
    assert_problem(post(cast, f"/selections/{fid}/recommendation", recommend), 422, "ranking_stale")  # none yet
    ranking = compute_ranking(stack, fid)
    assert [r["society_id"] for r in ranking["candidates"]] == [x]
    ok(apply(stack, fid, y))  # the applications changed after the ranking
    assert_problem(post(cast, f"/selections/{fid}/recommendation", recommend), 422, "ranking_stale")

    ranking = compute_ranking(stack, fid)
    assert [(r["society_id"], r["code"]) for r in ranking["exclusions"]] == [(y, "no_assessment")]
    not_eligible = assert_problem(
        post(cast, f"/selections/{fid}/recommendation", {"society_ids": [x, y]}), 422, "not_eligible"
    )
    assert y in not_eligible["detail"] and x not in not_eligible["detail"]
    accepted = ok(post(cast, f"/selections/{fid}/recommendation", recommend))  # enough competition: no justification
    assert [a["event_type"] for a in accepted["appended"]] == ["SocietiesRecommended"]
    assert cast.get(f"/selections/{fid}").json()["recommended"] == [x]

    ok(post(society_client(stack, y), f"/selections/{fid}/withdrawals", {"society_id": y, "reason": "no staff"}))
    assert_problem(post(cast, f"/selections/{fid}/recommendation", recommend), 422, "ranking_stale")
    history = [h["event_type"] for h in cast.get(f"/selections/{fid}").json()["history"]]
    assert history == [
        "SelectionOpened",
        "ApplicationSubmitted",
        "RankingComputed",
        "ApplicationSubmitted",
        "RankingComputed",
        "SocietiesRecommended",
        "ApplicationWithdrawn",
    ]


# --- 3. roles and jurisdictions ---------------------------------------------------------


def test_role_and_jurisdiction_are_enforced(stack: Stack) -> None:
    mine, other = uid("dy-r"), uid("dy-o")
    for sid in (mine, other):
        register_society(stack, sid, DEYANG, CAST)
    before = len(society(stack, mine)["history"])
    as_society = society_client(stack, mine)
    registration = {
        "society_id": uid("dy-n"),
        "name": "德阳市新学会",
        "level": "city",
        "jurisdiction": DEYANG,
        "relation": "supervised",
        "association": CAST,
        "registration_number": "REG-1",
        "registered_on": "2021-03-01",
        "reconfirmation_due": "2031-03-01",
    }
    assert_problem(post(as_society, "/societies", registration), 403, "role_not_permitted")
    mianyang = cast_client(stack, MIANYANG_CAST, MIANYANG)
    scores = {"comprehensive_strength": 70, "management_quality": 70, "service_level": 70}
    assessment = {"assessment_id": uid("as"), "scores": scores, "evidence": ["site visit"]}
    assert_problem(post(mianyang, f"/societies/{mine}/assessments", assessment), 403, "outside_jurisdiction")
    assert_problem(
        post(mianyang, "/societies", {**registration, "association": MIANYANG_CAST}), 403, "outside_jurisdiction"
    )
    assert_problem(
        post(cast_client(stack), "/societies", {**registration, "association": "x"}), 403, "not_own_association"
    )
    for role in ("public", "auditor"):
        reader = stack.client("capability", stack.token(role, "citizen", DEYANG))
        assert_problem(post(reader, f"/societies/{mine}/assessments", assessment), 403, "read_only_role")
        assert_problem(post(reader, "/societies", registration), 403, "read_only_role")
        assert ok(reader.get(f"/societies/{mine}"))["society_id"] == mine  # reading is open
    survey = {"willingness": "willing", "self_assessment": "partly_capable"}
    assert_problem(post(as_society, f"/societies/{other}/survey-answers", survey), 403, "not_the_society")
    assert_problem(post(as_society, f"/societies/{mine}/assessments", assessment), 403, "role_not_permitted")

    fid = open_function(stack, thresholds=[], min_applicants=1)
    body = {"society_id": other, "statement": "on behalf of a friend"}
    assert_problem(post(as_society, f"/selections/{fid}/applications", body), 403, "not_the_society")
    assert_problem(post(as_society, f"/selections/{fid}/ranking"), 403, "role_not_permitted")
    assert_problem(post(mianyang, f"/selections/{fid}/ranking"), 403, "outside_jurisdiction")
    from_mianyang = stack.client("capability", stack.token("society", other, MIANYANG))
    assert_problem(
        post(from_mianyang, f"/selections/{fid}/applications", {"society_id": other}), 403, "outside_jurisdiction"
    )
    assert_problem(stack.client("capability").get(f"/societies/{mine}"), 401, "token_missing")
    assert_problem(stack.client("capability").post("/societies", json=registration), 401, "token_missing")

    assert len(society(stack, mine)["history"]) == before
    assert cast_client(stack).get(f"/selections/{fid}").json()["applicants"] == []
    assert_problem(cast_client(stack).get(f"/societies/{registration['society_id']}"), 404, "society_not_found")


# --- 4. statistics ----------------------------------------------------------------------

COUNTED = (
    "societies",
    "supervised",
    "group_members",
    "very_willing",
    "willing",
    "fully_capable",
    "partly_capable",
    "class_strengthen",
    "brand_societies",
)


def test_statistics_count_societies_per_jurisdiction_and_roll_up(stack: Stack) -> None:
    reader = stack.client("capability", stack.token("public", "citizen", "100000"))
    provincial = cast_client(stack, "sichuan-cast", SICHUAN)

    def counts() -> dict[str, dict[str, int]]:
        out = {code: ok(reader.get(f"/statistics/{code}")) for code in (DEYANG, MIANYANG, JINGYANG)}
        out[SICHUAN] = ok(provincial.get(f"/statistics/{SICHUAN}"))
        assert out[SICHUAN]["jurisdiction"] == SICHUAN
        return {code: {k: v[k] for k in COUNTED} for code, v in out.items()}

    before = counts()
    cast = cast_client(stack)
    mianyang = cast_client(stack, MIANYANG_CAST, MIANYANG)
    plan = [  # (jurisdiction, association client, association, relation, willingness, self-assessment)
        (DEYANG, cast, CAST, "supervised", "very_willing", "fully_capable"),
        (DEYANG, cast, CAST, "group_member", "willing", "partly_capable"),
        (DEYANG, cast, CAST, "group_member", "unwilling", "not_capable"),
        (JINGYANG, cast, CAST, "supervised", "very_willing", "partly_capable"),  # registered by the city
        (MIANYANG, mianyang, MIANYANG_CAST, "supervised", "willing", "fully_capable"),
        (MIANYANG, mianyang, MIANYANG_CAST, "group_member", None, None),
    ]
    ids = []
    for jurisdiction, client, association, relation, willingness, capable in plan:
        sid = uid("st")
        ids.append(sid)
        register_society(stack, sid, jurisdiction, association, relation=relation)
        if willingness is not None:
            answer = {"willingness": willingness, "self_assessment": capable}
            ok(post(client, f"/societies/{sid}/survey-answers", answer))
    ok(post(cast, f"/societies/{ids[0]}/classification", {"society_class": "strengthen", "rationale": "strong"}))
    ok(post(cast, f"/societies/{ids[0]}/brand-designation", {"rationale": "德阳品牌学会"}))
    gone = uid("st-gone")  # dissolved: no longer counted anywhere
    register_society(stack, gone, DEYANG, CAST)
    ok(post(cast, f"/societies/{gone}/dissolution", {"reason": "merged activities into another body"}))

    after = counts()
    delta = {code: {k: after[code][k] - before[code][k] for k in COUNTED} for code in after}
    # Deyang counts its own three and its district's one; Mianyang its two; Sichuan all six.
    assert delta[DEYANG] == {
        "societies": 4,
        "supervised": 2,
        "group_members": 2,
        "very_willing": 2,
        "willing": 3,
        "fully_capable": 1,
        "partly_capable": 2,
        "class_strengthen": 1,
        "brand_societies": 1,
    }
    assert delta[JINGYANG] == {
        "societies": 1,
        "supervised": 1,
        "group_members": 0,
        "very_willing": 1,
        "willing": 1,
        "fully_capable": 0,
        "partly_capable": 1,
        "class_strengthen": 0,
        "brand_societies": 0,
    }
    assert delta[MIANYANG] == {
        "societies": 2,
        "supervised": 1,
        "group_members": 1,
        "very_willing": 0,
        "willing": 1,
        "fully_capable": 1,
        "partly_capable": 0,
        "class_strengthen": 0,
        "brand_societies": 0,
    }
    assert delta[SICHUAN] == {k: delta[DEYANG][k] + delta[MIANYANG][k] for k in COUNTED}
    assert_problem(reader.get("/statistics/12"), 422, "invalid_request")


# --- 5. supervision outcomes ------------------------------------------------------------


def test_a_supervision_evaluation_updates_the_track_record_and_the_score(stack: Stack) -> None:
    evaluated, sentinel = uid("dy-ev"), uid("dy-sn")
    cast = cast_client(stack)
    for sid in (evaluated, sentinel):
        register_society(stack, sid, DEYANG, CAST)
        assess_with(cast, sid, (70, 70, 70))
    fid = open_function(stack, thresholds=[], min_applicants=1)
    project = uid("project")
    payload = {"society_id": evaluated, "project_id": project, "function_id": fid, "grade": "excellent"}
    evaluation = supervision_envelope(f"project-{project}", 1, "EvaluationCompleted", payload)
    publish_supervision(stack, [evaluation])
    entry = wait_until(
        lambda: society(stack, evaluated)["track_record"], message="the evaluation to reach the track record"
    )
    assert entry == [
        {"project_id": project, "function_id": fid, "outcome": "excellent", "source_event_id": str(evaluation.event_id)}
    ]

    # The same message again, then a later one on the same key (same partition, so after it).
    marker_payload = {"society_id": sentinel, "project_id": project, "function_id": fid}
    marker = supervision_envelope(f"project-{project}", 2, "RectificationOrdered", marker_payload)
    publish_supervision(stack, [evaluation, marker])
    wait_until(lambda: society(stack, sentinel)["track_record"], message="the marker event to be applied")
    detail = society(stack, evaluated)
    assert len(detail["track_record"]) == 1
    noted = [h for h in detail["history"] if h["event_type"] == "TrackRecordNoted"]
    assert len(noted) == 1
    assert noted[0]["actor"]["role"] == "system" and noted[0]["causation_id"] == str(evaluation.event_id)

    for sid in (evaluated, sentinel):
        ok(apply(stack, fid, sid))
    ranking = compute_ranking(stack, fid)
    scores = {x["society_id"]: x for x in ranking["candidates"]}
    assert Decimal(scores[evaluated]["track_record"]["raw"]) == Decimal(60 + 15)
    assert Decimal(scores[evaluated]["track_record"]["weighted"]) == by_hand(Decimal(75), "0.2") == Decimal("15.00")
    assert Decimal(scores[sentinel]["track_record"]["raw"]) == Decimal(60 - 10)
    # equal in all else (capability 70 → 35.00, governance 0, willingness not answered 50 → 5.00)
    base = by_hand(Decimal(70), "0.5") + by_hand(Decimal(50), "0.1")
    assert Decimal(scores[evaluated]["total"]) == base + Decimal("15.00")
    assert Decimal(scores[sentinel]["total"]) == base + by_hand(Decimal(50), "0.2")
    assert [x["society_id"] for x in ranking["candidates"]] == [evaluated, sentinel]


# --- 6. invalid input -------------------------------------------------------------------


def test_invalid_input_gets_problem_details(stack: Stack) -> None:
    sid = uid("dy-bad")
    register_society(stack, sid, DEYANG, CAST)
    cast = cast_client(stack)
    history = society(stack, sid)["history"]
    good = {"comprehensive_strength": 70, "management_quality": 70, "service_level": 70}

    def attempt(body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        problem = assert_problem(post(cast, f"/societies/{sid}/assessments", body), status, code)
        assert society(stack, sid)["history"] == history
        return problem

    base = {"assessment_id": uid("as"), "evidence": ["report"]}
    body = attempt({**base, "scores": {**good, "service_level": 120}}, 422, "invalid_score")
    assert "service_level" in body["detail"] and "management_quality" not in body["detail"]
    attempt({**base, "scores": {**good, "management_quality": -1}}, 422, "invalid_score")
    body = attempt({**base, "scores": {"comprehensive_strength": 70, "service_level": 70}}, 422, "missing_standard")
    assert "management_quality" in body["detail"] and "service_level" not in body["detail"]
    attempt({**base, "scores": good, "evidence": []}, 422, "evidence_required")
    attempt({**base, "scores": good, "evidence": ["  "]}, 422, "evidence_required")
    attempt({**base, "scores": {**good, "popularity": 90}}, 422, "invalid_request")
    attempt({**base, "scores": good, "supersedes": "no-such-assessment", "reason": "x"}, 422, "unknown_assessment")
    first = assess_with(cast, sid, (70, 70, 70))
    history = society(stack, sid)["history"]
    attempt({**base, "scores": good, "supersedes": first}, 422, "reason_required")

    fresh = uid("dy-bad")
    registration = {
        "society_id": fresh,
        "name": "学会",
        "level": "city",
        "jurisdiction": DEYANG,
        "relation": "supervised",
        "association": CAST,
        "registration_number": "REG-X",
        "registered_on": "2020-02-30",
        "reconfirmation_due": "2030-01-01",
    }
    assert_problem(post(cast, "/societies", registration), 422, "invalid_date")
    assert_problem(post(cast, "/societies", {**registration, "registered_on": "15/01/2020"}), 422, "invalid_date")
    reversed_dates = {**registration, "registered_on": "2020-01-01", "reconfirmation_due": "2019-01-01"}
    assert_problem(post(cast, "/societies", reversed_dates), 422, "invalid_date")
    assert_problem(post(cast, "/societies", {**registration, "jurisdiction": "5106"}), 422, "invalid_jurisdiction")
    assert_problem(cast.get(f"/societies/{fresh}"), 404, "society_not_found")
    assert society(stack, sid)["history"] == history


# --- 7. a society's whole history -------------------------------------------------------


def test_a_society_with_its_full_history(stack: Stack) -> None:
    sid, absorbed = uid("dy-full"), uid("dy-absorbed")
    cast = cast_client(stack)
    own = society_client(stack, sid)
    register_society(stack, sid, DEYANG, CAST, relation="group_member")
    register_society(stack, absorbed, DEYANG, CAST)
    ok(post(cast, f"/societies/{sid}/reconfirmation", {"reconfirmed_on": "2025-01-10", "next_due": "2030-01-10"}))
    describe(
        own, sid, governance=(True, True, True, True, True), staff=6, completed=["institution"], willingness="willing"
    )
    evaluator = stack.client("capability", stack.token("evaluator", "sichuan-eval-institute", DEYANG))
    assessment = assess_with(evaluator, sid, (81, 79, 77), evaluation_grade="4A")
    ok(post(cast, f"/societies/{sid}/classification", {"society_class": "strengthen", "rationale": "growing"}))
    ok(post(cast, f"/societies/{sid}/brand-designation", {"rationale": "德阳品牌学会"}))
    ok(post(cast, f"/societies/{sid}/brand-revocation", {"rationale": "lapsed"}))
    project = uid("project")
    payload = {"society_id": sid, "project_id": project, "function_id": "f-0", "grade": "good"}
    publish_supervision(stack, [supervision_envelope(f"project-{project}", 1, "EvaluationCompleted", payload)])
    wait_until(lambda: society(stack, sid)["track_record"], message="the track record to be noted")
    fid = open_function(stack, thresholds=[], min_applicants=1)
    recommend_through_capability(stack, fid, sid, DEYANG, CAST)
    registry = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    ok(post(registry, f"/functions/{fid}/assignment", {"society_id": sid, "society_name": "学会"}))
    wait_until(lambda: society(stack, sid)["functions_undertaken"] == [fid], message="the assignment to be noted")
    ok(post(cast, f"/societies/{absorbed}/merger", {"into_society_id": sid, "reason": "same discipline"}))
    ok(post(cast, f"/societies/{sid}/dissolution", {"reason": "members voted to dissolve"}))
    assert_problem(
        post(cast, f"/societies/{sid}/classification", {"society_class": "exit", "rationale": "x"}),
        422,
        "society_not_active",
    )

    detail = society(stack, sid)
    assert detail["status"] == "dissolved" and detail["end_reason"] == "members voted to dissolve"
    assert detail["current_assessment"]["assessment_id"] == assessment
    assert detail["current_assessment"]["assessor_role"] == "evaluator"
    history = detail["history"]
    assert [h["event_type"] for h in history] == [
        "SocietyRegistered",
        "RegistrationReconfirmed",
        "GovernanceRecorded",
        "DecouplingProgressed",
        "SurveyAnswered",
        "CapabilityAssessed",
        "SocietyClassified",
        "BrandSocietyDesignated",
        "BrandSocietyRevoked",
        "TrackRecordNoted",
        "FunctionUndertaken",
        "SocietyDissolved",
    ]
    assert detail["version"] == len(history)
    assert [h["stream_version"] for h in history] == list(range(1, len(history) + 1))
    assert {h["stream_id"] for h in history} == {f"society-{sid}"}
    actors = [(h["actor"]["organisation"], h["actor"]["role"]) for h in history]
    assert actors == [
        (CAST, "association"),
        (CAST, "association"),
        (sid, "society"),
        (sid, "society"),
        (sid, "society"),
        ("sichuan-eval-institute", "evaluator"),
        (CAST, "association"),
        (CAST, "association"),
        (CAST, "association"),
        ("chengneng.capability", "system"),
        ("chengneng.capability", "system"),
        (CAST, "association"),
    ]
    assert history[5]["payload"]["evaluation_grade"] == "4A"
    assert history[9]["payload"]["outcome"] == "good" and history[9]["causation_id"]
    assert history[0]["prev_hash"] == ZERO_HASH
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(history))
    assert len({h["hash"] for h in history}) == len(history)

    merged = society(stack, absorbed)
    assert merged["status"] == "merged" and merged["merged_into"] == sid
    assert [h["event_type"] for h in merged["history"]] == ["SocietyRegistered", "SocietyMerged"]
    assert merged["history"][1]["prev_hash"] == merged["history"][0]["hash"]


# --- regressions: bugs found while writing these tests ---------------------------------


def test_the_society_list_shows_the_same_current_assessment_as_the_society(stack: Stack) -> None:
    sid = uid("dy-list")
    register_society(stack, sid, DEYANG, CAST)
    cast = cast_client(stack)
    # Two assessments, neither superseding the other: the later one is current.
    assess_with(cast, sid, (60, 60, 60), assessment_id=f"as-earlier-with-a-longer-id-{sid}")
    later = assess_with(cast, sid, (90, 90, 90), assessment_id=f"as-{sid}")
    assert society(stack, sid)["current_assessment"]["assessment_id"] == later
    listed = ok(cast.get("/societies", params={"jurisdiction": DEYANG, "limit": 500}))
    [item] = [i for i in listed["items"] if i["society_id"] == sid]
    assert item["current_assessment"]["assessment_id"] == later


def test_an_application_in_the_name_of_an_unregistered_society_does_not_block_the_ranking(stack: Stack) -> None:
    registered, ghost = uid("dy-real"), uid("dy-ghost")
    register_society(stack, registered, DEYANG, CAST)
    assess_with(cast_client(stack), registered, (80, 80, 80))
    fid = open_function(stack, thresholds=[], min_applicants=1)
    ok(apply(stack, fid, registered))
    applied = apply(stack, fid, ghost)  # a society token whose society the association never registered
    ranked = post(cast_client(stack), f"/selections/{fid}/ranking")
    # The ranking goes ahead and names the unknown society as excluded, with its reason.
    assert applied.status_code == 200 and ranked.status_code == 200, (applied.text, ranked.text)
    ranking = ok(cast_client(stack).get(f"/selections/{fid}"))["ranking"]
    assert [c["society_id"] for c in ranking["candidates"]] == [registered]
    assert [(e["society_id"], e["code"]) for e in ranking["exclusions"]] == [(ghost, "not_registered")]
