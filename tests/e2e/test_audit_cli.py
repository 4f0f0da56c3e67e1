"""The auditor's command line against a running stack: verify, trail, replay, export, and tampering.

The stack signs a checkpoint every second; the auditor runs `chengneng audit ...` as a
separate process, with only CHENGNENG_HOME (stack.json and the public keys) to go on.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared import merkle
from shared.auth import load_private_key
from shared.sealer import checkpoint_body
from tests.conftest import REPO, Stack, running_stack, wait_until
from tests.e2e.flows import assigned_case

pytestmark = pytest.mark.stack

SERVICES = ("registry", "capability", "supervision", "disclosure")
DEYANG = "510600"
FUNCTION = "F-AUDIT-1"


@pytest.fixture(scope="module")
def audited_stack(scratch: Callable[[str], Path]) -> Iterator[Stack]:
    """A stack of its own (its own broker too: the topics hold only this store's events)."""
    with running_stack(scratch("audit-stack") / ".chengneng", env={"CHENGNENG_CHECKPOINT_INTERVAL_S": "1"}) as stack:
        yield stack


def run_sql(stack: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def case(audited_stack: Stack) -> str:
    """A real case across services, then every service's log sealed and checkpointed to its end."""
    project = assigned_case(
        audited_stack,
        function_id=FUNCTION,
        society_id="soc-audit",
        jurisdiction=DEYANG,
        association="deyang-cast",
        department="deyang-hr",
    )

    def covered() -> bool:
        for service in SERVICES:
            [row] = run_sql(audited_stack, f"SELECT count(*) AS n FROM {service}.events")
            response = audited_stack.client(service).get("/audit/checkpoints/latest")
            if response.status_code != 200 or response.json()["tree_size"] != row["n"]:
                return False
        return True

    wait_until(covered, timeout=60, interval=0.5, message="checkpoints covering every service's whole log")
    return project


def chengneng(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHENGNENG_HOME": str(stack.home)}
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "audit", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_passes_on_the_live_stack_with_kafka(audited_stack: Stack, case: str) -> None:
    result = chengneng(audited_stack, "verify", "--progress-every", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every check holds for 4 service(s)" in result.stdout
    assert "events/s" in result.stdout
    for service in SERVICES:
        assert f"  {service}: " in result.stdout
    assert "record(s) on chengneng.registry.events" in result.stdout
    assert "record(s) on chengneng.disclosure.public" in result.stdout
    assert "held/published checkpoint(s) compared" in result.stdout
    assert "events checked" in result.stderr  # progress lines


def test_an_inclusion_proof_from_the_api_checks_against_the_latest_checkpoint(audited_stack: Stack, case: str) -> None:
    [event] = run_sql(
        audited_stack,
        "SELECT position, hash FROM supervision.events WHERE stream_id = $1 AND stream_version = 1",
        f"case-{case}",
    )
    client = audited_stack.client("supervision")
    latest = client.get("/audit/checkpoints/latest").json()
    entry = client.get(f"/audit/entries/{event['position']}").json()
    proof = client.get(
        "/audit/proofs/inclusion", params={"log_index": entry["log_index"], "tree_size": latest["tree_size"]}
    ).json()
    leaf = merkle.leaf_hash(bytes(event["hash"]))
    assert proof["leaf_hash"] == leaf.hex()
    root = bytes.fromhex(latest["root_hash"])
    nodes = [bytes.fromhex(p) for p in proof["proof"]]
    assert merkle.verify_inclusion(leaf, entry["log_index"], latest["tree_size"], nodes, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), entry["log_index"], latest["tree_size"], nodes, root)


def test_the_cli_serves_and_checks_inclusion_and_consistency_proofs(audited_stack: Stack, case: str) -> None:
    [event] = run_sql(
        audited_stack,
        "SELECT position FROM supervision.events WHERE stream_id = $1 AND stream_version = 1",
        f"case-{case}",
    )
    included = chengneng(
        audited_stack, "prove-inclusion", "--service", "supervision", "--position", str(event["position"])
    )
    assert included.returncode == 0, included.stdout + included.stderr
    assert json.loads(included.stdout)["verified"] is True
    sizes = [c["tree_size"] for c in audited_stack.client("registry").get("/audit/checkpoints").json()["checkpoints"]]
    assert sizes  # the oldest and the newest (the same one, if only one was signed yet)
    consistent = chengneng(
        audited_stack,
        "prove-consistency",
        "--service",
        "registry",
        "--first",
        str(sizes[0]),
        "--second",
        str(sizes[-1]),
    )
    assert consistent.returncode == 0, consistent.stdout + consistent.stderr
    body = json.loads(consistent.stdout)
    assert body["verified"] is True and "first_checkpoint_signed_at" in body
    missing = chengneng(audited_stack, "prove-inclusion", "--service", "supervision", "--position", "999999")
    assert missing.returncode != 0 and "not sealed" in missing.stderr


def trail(stack: Stack, case: str) -> list[dict[str, Any]]:
    result = chengneng(stack, "trail", case, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_trail_lists_the_case_across_services_in_order(audited_stack: Stack, case: str) -> None:
    entries = trail(audited_stack, case)
    services = {e["service"] for e in entries}
    assert {"registry", "capability", "supervision"} <= services
    times = [e["occurred_at"] for e in entries]
    assert times == sorted(times)
    kinds = [(e["service"], e["event_type"]) for e in entries]
    for expected in [
        ("registry", "FunctionProposed"),
        ("registry", "FunctionOpened"),
        ("capability", "SocietiesRecommended"),
        ("registry", "FunctionAssigned"),
        ("supervision", "CaseOpened"),
    ]:
        assert expected in kinds, kinds
    assert kinds.index(("registry", "FunctionOpened")) < kinds.index(("capability", "SocietiesRecommended"))
    assert kinds.index(("registry", "FunctionAssigned")) < kinds.index(("supervision", "CaseOpened"))
    assigned = entries[kinds.index(("registry", "FunctionAssigned"))]
    assert assigned["actor"]["role"] == "department" and assigned["actor"]["organisation"] == "deyang-hr"

    readable = chengneng(audited_stack, "trail", case)
    assert (
        readable.returncode == 0
        and "FunctionAssigned" in readable.stdout
        and "by department (deyang-hr" in (readable.stdout)
    )


def test_replay_as_of_a_moment_before_the_assignment_shows_the_function_open(audited_stack: Stack, case: str) -> None:
    entries = trail(audited_stack, case)
    assigned_at = datetime.fromisoformat(
        next(e["occurred_at"] for e in entries if e["event_type"] == "FunctionAssigned")
    )

    def state_at(moment: datetime) -> dict[str, Any]:
        result = chengneng(audited_stack, "replay", "--as-of", moment.isoformat(), "--stream", f"function-{FUNCTION}")
        assert result.returncode == 0, result.stdout + result.stderr
        [stream] = json.loads(result.stdout)["streams"]
        assert stream["service"] == "registry" and stream["stream_type"] == "function"
        return stream["state"]  # type: ignore[no-any-return]

    before = state_at(assigned_at - timedelta(microseconds=1))
    assert before["status"] == "open" and before["society_id"] is None
    after = state_at(assigned_at)
    assert after["status"] == "assigned" and after["society_id"] == "soc-audit"

    naive = chengneng(audited_stack, "replay", "--as-of", "2025-01-01T00:00:00")
    assert naive.returncode == 2 and "zone" in naive.stderr


def test_an_export_verifies_alone_and_a_corrupted_one_does_not(
    audited_stack: Stack, case: str, scratch_dir: Path
) -> None:
    bundle = scratch_dir / "audit.jsonl.gz"
    exported = chengneng(audited_stack, "export", str(bundle))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    checked = chengneng(audited_stack, "verify-export", str(bundle), "--keys", str(audited_stack.home / "keys"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: every check holds for 4 service(s)" in checked.stdout

    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    corrupted = scratch_dir / "corrupted.jsonl.gz"
    corrupted.write_bytes(bytes(data))
    broken = chengneng(audited_stack, "verify-export", str(corrupted))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.startswith("FAILED: bundle: line ") and "damaged" in broken.stdout


def test_a_tampered_database_fails_verification_naming_service_and_stream(audited_stack: Stack, case: str) -> None:
    stream = f"case-{case}"
    run_sql(
        audited_stack,
        f"""DO $$ BEGIN
              ALTER TABLE supervision.events DISABLE TRIGGER USER;
              UPDATE supervision.events SET payload = jsonb_set(payload, '{{title}}', '"a different title"')
                WHERE stream_id = '{stream}' AND stream_version = 1;
              ALTER TABLE supervision.events ENABLE ALWAYS TRIGGER events_append_only_rows;
              ALTER TABLE supervision.events ENABLE ALWAYS TRIGGER events_append_only_truncate;
            END $$""",
    )
    result = chengneng(audited_stack, "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"FAILED: supervision: stream {stream} version 1"), result.stdout
    assert "canonical encoding" in first


def test_a_re_signed_checkpoint_disagrees_with_the_one_published_on_kafka(audited_stack: Stack, case: str) -> None:
    """A superuser holding the signing key rewrites the registry's latest checkpoint; Kafka remembers."""
    key = load_private_key(audited_stack.home / "keys" / "checkpoint-registry.pem")
    forged_root = os.urandom(32)

    async def forge() -> int:
        conn = await asyncpg.connect(audited_stack.database_url)
        try:
            async with conn.transaction():
                size = await conn.fetchval("SELECT max(tree_size) FROM registry.checkpoints")
                signed_at = datetime.now(UTC)
                body = checkpoint_body("chengneng/registry", size, forged_root, signed_at)
                await conn.execute("ALTER TABLE registry.checkpoints DISABLE TRIGGER USER")
                await conn.execute(
                    """UPDATE registry.checkpoints SET root_hash = $1, body = $2, signature = $3, signed_at = $4
                       WHERE tree_size = $5""",
                    forged_root,
                    body,
                    key.sign(body.encode()),
                    signed_at,
                    size,
                )
                for name in ("checkpoints_append_only", "checkpoints_no_truncate"):
                    await conn.execute(f"ALTER TABLE registry.checkpoints ENABLE ALWAYS TRIGGER {name}")
            return int(size)
        finally:
            await conn.close()

    size = asyncio.run(forge())
    result = chengneng(audited_stack, "verify", "--service", "registry")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"FAILED: registry: checkpoint tree_size {size}: root "), result.stdout
    assert f"checkpoint tree_size {size} (published on chengneng.audit.checkpoints)" in result.stdout
    assert "the history was rewritten" in result.stdout
