"""The bench's workloads on the running services: commands over HTTP, and end to end to the public topic.

The stack is started exactly as `chengneng up` starts it (every service its own process),
on the bench's PostgreSQL and an embedded broker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from shared.auth import issue_token, load_private_key
from shared.principal import Principal, Role

DEYANG = "510600"
PUBLIC_TOPIC = "chengneng.disclosure.public"


@dataclass(frozen=True)
class Actors:
    """One token per party of the registry's command mix."""

    society: str
    association: str
    department: str

    @staticmethod
    def issue(private_key_path: Any) -> Actors:
        key = load_private_key(private_key_path)

        def token(role: Role, org: str) -> str:
            principal = Principal(subject=org, organisation=org, role=role, jurisdiction=DEYANG)
            return issue_token(key, principal, ttl=timedelta(hours=2))

        return Actors(
            society=token(Role.SOCIETY, "deyang-software-society"),
            association=token(Role.ASSOCIATION, "deyang-cast"),
            department=token(Role.DEPARTMENT, "deyang-hr"),
        )


def proposal(function_id: str) -> dict[str, Any]:
    return {
        "function_id": function_id,
        "jurisdiction": DEYANG,
        "title": "专业技术人员水平评价（基准测试）",
        "description": "Level evaluation of engineers in non-public organisations, proposed by a society",
        "category": "qualification_certification",
        "sub_kind": "level_evaluation",
        "scope": "partial",
        "entrustment_mode": "tripartite_task_agreement",
        "department": "deyang-hr",
    }


def client_session(url: str, connections: int) -> aiohttp.ClientSession:
    """The load generator's HTTP client.

    aiohttp, not httpx as elsewhere in chengneng: the generator shares the machine's cores
    with the stack it measures, and per request httpx took 3.4 ms of CPU against aiohttp's
    0.4 ms (300 proposals to the registry, 10 at a time). At 100 commands/s that is a third
    of a core taken from the stack.
    """
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
        json_serialize=lambda value: orjson.dumps(value).decode(),
    )


class CommandMix:
    """A function's way onto the list, as the registry sees it: proposal by a society,
    consultation by the association, review and listing by the department, and a read."""

    def __init__(self, client: aiohttp.ClientSession, actors: Actors) -> None:
        self.client = client
        self.actors = actors
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}

    async def _send(self, kind: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> None:
        began = time.perf_counter()
        async with self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            await r.read()
        self.latencies.setdefault(kind, []).append(time.perf_counter() - began)
        if r.status >= 400:
            self.errors[f"{kind} {r.status}"] = self.errors.get(f"{kind} {r.status}", 0) + 1

    async def one_function(self) -> None:
        fid = f"bench-{uuid.uuid4().hex[:12]}"
        await self._send("propose", "POST", "/functions", self.actors.society, proposal(fid))
        await self._send(
            "consult", "POST", f"/functions/{fid}/consultation", self.actors.association, {"note": "bench"}
        )
        await self._send(
            "review", "POST", f"/functions/{fid}/department-review", self.actors.department, {"reference": "bench"}
        )
        await self._send("list", "POST", f"/functions/{fid}/listing", self.actors.department, {})
        await self._send("read", "GET", f"/functions/{fid}", self.actors.department)


async def http_commands(url: str, actors: Actors, functions: int, concurrency: int) -> tuple[CommandMix, float]:
    """``functions`` command sequences, ``concurrency`` at a time; returns the mix and the wall time."""
    async with client_session(url, concurrency) as client:
        mix = CommandMix(client, actors)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(functions):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await mix.one_function()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return mix, time.perf_counter() - began


async def end_to_end(
    url: str, bootstrap: str, actors: Actors, rate: float, seconds: float
) -> tuple[list[float], int, int]:
    """Propose functions at a steady ``rate`` and time each until its public FunctionProposed arrives.

    Returns the latencies (s) of the received ones, how many were sent, and how many failed.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    partitions = [TopicPartition(PUBLIC_TOPIC, p) for p in (consumer.partitions_for_topic(PUBLIC_TOPIC) or {0})]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    failed = 0
    stop = asyncio.Event()
    last_send = time.perf_counter()

    async def receive() -> None:
        while not stop.is_set() or sent_at:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    if not headers.get("ce_type", b"").endswith(b".FunctionProposed"):
                        continue
                    began = sent_at.pop(headers.get("ce_subject", b"").decode(), None)
                    if began is not None:
                        latencies.append(now - began)
            if stop.is_set() and time.perf_counter() - last_send > 30:
                return  # what has not arrived within 30 s of the last command counts as lost

    async with client_session(url, 100) as client:

        async def send(fid: str) -> None:
            nonlocal failed
            sent_at[f"function/{fid}"] = time.perf_counter()
            headers = {"Authorization": f"Bearer {actors.society}"}
            async with client.post("/functions", json=proposal(fid), headers=headers) as response:
                await response.read()
            if response.status != 201:
                failed += 1
                sent_at.pop(f"function/{fid}", None)

        receiver = asyncio.create_task(receive())
        # Warm-up, not measured: the first events through a fresh stack wait for consumer
        # groups to form and settle (every partition assigned), so run 3 s at the rate first.
        warmups = []
        for _ in range(max(3, int(rate * 3))):
            warmups.append(asyncio.create_task(send(f"e2e-warmup-{uuid.uuid4().hex[:8]}")))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*warmups)
        deadline = time.perf_counter() + 60
        while sent_at and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        latencies.clear()
        failed = 0
        interval = 1.0 / rate
        sends: list[asyncio.Task[None]] = []
        began = time.perf_counter()
        count = int(rate * seconds)
        for n in range(count):
            await asyncio.sleep(max(0.0, began + n * interval - time.perf_counter()))
            sends.append(asyncio.create_task(send(f"e2e-{uuid.uuid4().hex[:12]}")))
            last_send = time.perf_counter()
        await asyncio.gather(*sends)
        stop.set()
        await receiver
    await consumer.stop()
    return latencies, count, failed


STACK_DATABASE = "chengneng_bench_stack"
"""The database the bench's stack runs on, created anew each run."""


async def fresh_database(admin_url: str, name: str = STACK_DATABASE) -> str:
    """Drop and create the database ``name``; its URL (``admin_url`` with that database).

    The services' read models must not grow with every earlier run: the http mix lists
    functions, and after twenty runs on one database it measured half the commands/s.
    """
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


async def stack_workloads(options: Any, admin_url: str, results: Any) -> None:
    from shared.bench import Figure, percentile, say
    from shared.cli import _running_stack

    say(f"starting the stack (every service its own process) on a new database {STACK_DATABASE} ...")
    stack_url = await fresh_database(admin_url)
    with _running_stack(stack_url, None, options.home / "stack") as stack:
        actors = Actors.issue(stack.settings.private_key_path)
        registry = stack.urls["registry"]
        if options.wants("http"):
            functions = max(1, options.http_commands // 4)
            say(f"http: {functions:,} functions through the registry's command mix ...")
            await http_commands(registry, actors, min(20, functions), 4)  # warm-up
            mix, seconds = await http_commands(registry, actors, functions, options.http_concurrency)
            commands = [s for kind, samples in mix.latencies.items() if kind != "read" for s in samples]
            reads = mix.latencies.get("read", [])
            results.add(
                Figure(
                    f"registry commands over HTTP, {options.http_concurrency} clients",
                    "chengneng",
                    len(commands),
                    seconds,
                    len(commands) / seconds,
                    percentile(commands, 50),
                    percentile(commands, 99),
                    extra={"reads": len(reads), "read_p50_ms": round(percentile(reads, 50), 2), "errors": mix.errors},
                )
            )
        if options.wants("e2e"):
            for rate in sorted({options.e2e_probe_rate, options.e2e_rate}):
                say(f"e2e: {rate:g} commands/s for {options.e2e_seconds:g} s, until each is public ...")
                latencies, sent, failed = await end_to_end(registry, stack.bootstrap, actors, rate, options.e2e_seconds)
                lost = sent - failed - len(latencies)
                figure = results.add(
                    Figure(
                        f"end to end, command to public event, {rate:g}/s",
                        "chengneng",
                        len(latencies),
                        options.e2e_seconds,
                        len(latencies) / options.e2e_seconds,
                        percentile(latencies, 50),
                        percentile(latencies, 99),
                        extra={"sent": sent, "failed": failed, "not_received": lost},
                    )
                )
                if rate == options.e2e_rate:
                    results.target(
                        "end to end p99",
                        f"< 300 ms at {rate:g}/s",
                        f"p99 {figure.p99_ms:,.0f} ms at {rate:g}/s ({lost} not received)",
                        figure.p99_ms < 300 and lost == 0 and failed == 0,
                    )
