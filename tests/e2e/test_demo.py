"""`chengneng demo --exit` end to end: the scenario runs on a fresh home, the disclosed
figures match the Deyang report, the refusals are shown; then the stack starts again on
the same home, the portal shows the figures and the audit trail verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from shared.demo import load_scenario
from tests.conftest import REPO, start_stack, stop_stack

pytestmark = pytest.mark.stack

REFUSALS = ("access_type_qualification_refused", "leader_rank_too_low", "stale_agreement_version")


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CHENGNENG_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return env


@pytest.mark.timeout(300)
def test_demo_reproduces_the_report_and_leaves_a_verifiable_history(scratch: Callable[[str], Path]) -> None:
    home = scratch("demo") / ".chengneng"
    demo = subprocess.run(
        [sys.executable, "-m", "shared.cli", "demo", "--exit"],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    lines = output.splitlines()

    # the figures table: one row per figure of report.yaml, report and disclosed side by side
    report = load_scenario().report
    assert report.jurisdiction == "510600"
    for figure in report.figures:
        rows = [line.split() for line in lines if line.split()[:1] == [figure.key]]
        assert len(rows) == 1, f"no single row for {figure.key} in:\n{output}"
        _, in_report, disclosed, mark, *_ = rows[0]
        assert Decimal(in_report) == figure.value, rows[0]
        assert Decimal(disclosed) == figure.value, rows[0]
        assert mark == "ok", rows[0]
    expected = {"societies": 49, "group_members": 37, "functions_proposed": 58, "functions_undertaken": 24}
    assert {f.key: int(f.value) for f in report.figures if f.key in expected} == expected
    assert f"all {len(report.figures)} figures match the report" in output

    # every refused attempt is shown with its reason
    for code in REFUSALS:
        refused = [line for line in lines if line.strip().startswith(f"refused  {code} (422)")]
        assert refused, f"refusal {code} not shown:\n{output}"
    assert "/portal/j/510600" in output
    assert "chengneng is running" in output and output.rstrip().endswith(f"stored events are kept in {home}")

    # the demo stopped its stack; everything it recorded is still there
    stack = start_stack(home)
    try:
        page = httpx.get(f"{stack.urls['disclosure']}/portal/j/510600/statistics", timeout=30)
        assert page.status_code == 200
        assert "49" in page.text and "58" in page.text
        assert '<td class="num">49</td>' in page.text and '<td class="num">58</td>' in page.text
        audit = subprocess.run(
            [sys.executable, "-m", "shared.cli", "audit", "verify", "--no-kafka"],
            cwd=REPO,
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        stop_stack(stack)
