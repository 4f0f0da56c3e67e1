"""`chengneng bench --quick` runs every workload on the real parts and writes its figures.

This checks that the benchmark works and measures what it says (events counted, audit
clean, nothing lost end to end); it asserts no speed: speed is for the full bench's table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack


def test_the_quick_bench_measures_every_workload_and_loses_nothing(scratch_dir: Path) -> None:
    out = scratch_dir / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.cli",
            "bench",
            "--quick",
            "--rounds",
            "2",
            "--home",
            str(scratch_dir / "home"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    figures = {(f["workload"], f["system"]): f for f in document["figures"]}
    workloads = {w for w, _ in figures}
    for prefix in (
        "single-event appends",
        "batched appends",
        "replay from the store",
        "replay from the topic",
        "audit verify",
        "relay's lag check",
        "state as of a moment",
        "registry commands over HTTP",
        "end to end",
        "catch-up",
    ):
        assert any(w.startswith(prefix) for w in workloads), (prefix, sorted(workloads))
    for figure in document["figures"]:
        assert figure["events"] > 0 and figure["per_s"] > 0, figure
    # Appends and replays ran twice on each side; the figure is the median (here the faster) run.
    for (workload, _), figure in figures.items():
        if workload.startswith(("single-event appends", "replay from the store")):
            assert len(figure["extra"]["runs_per_s"]) == 2, figure
            assert figure["per_s"] == pytest.approx(max(figure["extra"]["runs_per_s"]), abs=1), figure
    # Both sides ran the same workloads and the ratio is reported for each: where they ran in
    # rounds, the median of the rounds' own ratios (here the mean of two).
    assert {r["workload"] for r in document["side_by_side"]} >= {w for w, s in figures if s == "eventsourcing"}
    for row in document["side_by_side"]:
        ours, theirs = figures[(row["workload"], "chengneng")], figures[(row["workload"], "eventsourcing")]
        if row["workload"].startswith(("single-event appends", "replay from the store")):
            paired = [a / b for a, b in zip(ours["extra"]["runs_per_s"], theirs["extra"]["runs_per_s"], strict=True)]
            assert row["ratio"] == pytest.approx(sum(paired) / 2, rel=0.01), (row, paired)
        else:
            assert row["ratio"] == pytest.approx(ours["per_s"] / theirs["per_s"]), row
    # Each replay says what an event cost the client and the (embedded) server in CPU. CPU
    # times come in clock ticks (10 ms): one quick replay can cost the server less than a tick,
    # so only the server's total over the replays must show.
    replayed = [f for (w, _), f in figures.items() if w.startswith("replay from the store")]
    for figure in replayed:
        assert figure["extra"]["client_cpu_us"] > 0 and figure["extra"]["server_cpu_us"] >= 0, figure
    assert sum(f["extra"]["server_cpu_us"] * f["events"] for f in replayed) > 0, replayed
    # Every event written was read back by the replays (singles + batches), and audit verify is clean.
    replays = [f for f in document["figures"] if f["workload"].startswith("replay from the store")]
    assert all(f["events"] >= int(f["workload"].split(", ")[1].split(" ")[0].replace(",", "")) for f in replays)
    [audit] = [f for f in document["figures"] if f["workload"] == "audit verify"]
    assert audit["extra"]["ok"] is True
    [lag] = [f for f in document["figures"] if f["workload"].startswith("relay's lag check")]
    assert lag["events"] == 50 and 0 < lag["p50_ms"] <= lag["p99_ms"], lag
    [e2e] = [f for f in document["figures"] if f["workload"].startswith("end to end")]
    assert e2e["extra"]["failed"] == 0 and e2e["extra"]["not_received"] == 0, e2e
    [http] = [f for f in document["figures"] if f["workload"].startswith("registry commands")]
    assert http["extra"]["errors"] == {}, http
    # The ceiling (raw asyncpg, nothing of ours) ran beside: single rows with and without a
    # transaction, a batch by COPY, and each replay, reading every event ours read.
    raw = {w: f for (w, system), f in figures.items() if system == "raw asyncpg"}
    assert any(w.startswith("single-event appends") and w.endswith("writers") for w in raw), sorted(raw)
    assert any(w.endswith("no transaction") for w in raw) and any(w.startswith("batched") for w in raw), sorted(raw)
    for workload, figure in figures.items():
        if workload[0].startswith("replay from the store") and workload[1] == "chengneng":
            assert raw[workload[0]]["events"] == figure["events"], (raw.get(workload[0]), figure)
    # The catch-up consumer went through every new event with the disclosure policy (each one
    # disclosed), then through the same records again, once a fetch together, once one at a time.
    caught_up = {w: f for (w, _), f in figures.items() if w.startswith("catch-up")}
    assert len(caught_up) == 4, sorted(caught_up)
    for workload, figure in caught_up.items():
        together = figure["extra"]["per_transaction"] > 1
        assert ("a fetch together" in workload) == together, workload
        assert ("batches_together" in figure["extra"]) == together, figure
        # The consumer's CPU only: the server's would count autovacuum workers whole or not at all.
        assert figure["extra"]["client_cpu_us"] > 0 and "server_cpu_us" not in figure["extra"], figure
        if "new events" in workload:
            assert figure["extra"]["disclosed"] == 400, figure
        if together:
            assert figure["extra"]["speed_up"] > 0, figure
    assert "side by side" in done.stdout and "targets (issue #9)" in done.stdout


@pytest.mark.parametrize(
    ("given", "expected"),
    [("10000 100000", (10_000, 100_000)), ("10_000,1_000_000", (10_000, 1_000_000)), ("500", (500,))],
)
def test_sizes_are_read_as_a_user_writes_them(given: str, expected: tuple[int, ...]) -> None:
    from shared.cli import _sizes

    assert _sizes(given) == expected


@pytest.mark.parametrize("given", ["", "ten", "0", "10000,100000000000", "1e6"])
def test_bad_sizes_stop_the_bench_before_it_starts(given: str, scratch_dir: Path) -> None:
    from typer.testing import CliRunner

    from shared.cli import app

    result = CliRunner().invoke(app, ["bench", "--sizes", given, "--home", str(scratch_dir / "home")])
    assert result.exit_code == 2, result.output
    assert "--sizes" in result.output
    assert not (scratch_dir / "home").exists()  # nothing was started


@pytest.mark.parametrize(
    ("arguments", "rounds"),
    [([], 3), (["--quick"], 1), (["--quick", "--rounds", "2"], 2), (["--rounds", "5"], 5)],
)
def test_rounds_default_to_three_and_to_one_when_quick(
    arguments: list[str], rounds: int, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from shared import bench
    from shared.cli import app

    given: list[bench.Options] = []
    monkeypatch.setattr(bench, "main", lambda options: given.append(options) or 0)
    result = CliRunner().invoke(app, ["bench", *arguments, "--home", str(scratch_dir / "home")])
    assert result.exit_code == 0, result.output
    assert [options.rounds for options in given] == [rounds]
