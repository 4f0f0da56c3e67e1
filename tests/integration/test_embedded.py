"""The embedded stack: real PostgreSQL and real Tansu processes under temporary homes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedStartError,
    free_port,
    pid_alive,
    stable_port,
    start_broker,
    start_postgres,
)


@pytest.fixture
def postgres(scratch_dir: Path) -> Iterator[EmbeddedPostgres]:
    pg = start_postgres(scratch_dir / "home")
    try:
        yield pg
    finally:
        pg.stop()
        assert not pid_alive(pg.pid)


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_postgres_answers_on_the_chengneng_database(postgres: EmbeddedPostgres) -> None:
    assert postgres.admin_url.startswith("postgresql://postgres@/chengneng?host=")
    conn = await asyncpg.connect(postgres.admin_url)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "chengneng"
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_postgres_keeps_data_across_a_restart(postgres: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(postgres.admin_url)
    await conn.execute("create table kept (id int primary key); insert into kept values (42)")
    await conn.close()
    home, first_pid = postgres.home, postgres.pid

    postgres.stop()
    assert not pid_alive(first_pid)
    again = start_postgres(home)
    try:
        assert again.pid != first_pid
        conn = await asyncpg.connect(again.admin_url)
        assert await conn.fetchval("select id from kept") == 42
        await conn.close()
    finally:
        again.stop()


def test_second_start_reuses_the_running_server(postgres: EmbeddedPostgres) -> None:
    again = start_postgres(postgres.home)
    assert again.pid == postgres.pid
    assert again.admin_url == postgres.admin_url


@pytest.mark.asyncio
async def test_deep_home_moves_the_socket_and_the_url_follows(scratch_dir: Path) -> None:
    deep = scratch_dir.joinpath(*["a-rather-long-directory-name"] * 5)
    pg = start_postgres(deep)
    try:
        assert len(str(pg.pgdata / ".s.PGSQL.5432")) > 107
        assert pg.socket_dir != pg.pgdata
        assert (pg.socket_dir / f".s.PGSQL.{pg.port}").is_socket()
        conn = await asyncpg.connect(pg.admin_url)
        assert await conn.fetchval("select 1") == 1
        await conn.close()
    finally:
        pg.stop()
        with contextlib.suppress(OSError):
            pg.socket_dir.rmdir()  # the fallback socket dir lives outside scratch_dir


@pytest.mark.asyncio
async def test_two_homes_get_two_brokers_that_answer_at_once(scratch_dir: Path) -> None:
    first = start_broker(scratch_dir / "one")
    try:
        second = start_broker(scratch_dir / "two")
        try:
            assert first.port != second.port
            results = await asyncio.gather(_topics(first.bootstrap), _topics(second.bootstrap))
            assert results == [[], []]
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.mark.asyncio
async def test_broker_restart_keeps_the_port_and_forgets_topics(scratch_dir: Path) -> None:
    broker = start_broker(scratch_dir / "home")
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
        await admin.start()
        await admin.create_topics([NewTopic("registry.events", num_partitions=1, replication_factor=1)])
        assert "registry.events" in await admin.list_topics()
        port, pid = broker.port, broker.process.pid if broker.process else None

        broker.restart()  # while a client is still connected: the port must come back anyway
        assert broker.port == port
        assert broker.process is not None and broker.process.pid != pid
        assert (scratch_dir / "home" / "broker.port").read_text().strip() == str(port)
        await admin.close()
        assert "registry.events" not in await _topics(broker.bootstrap)
    finally:
        broker.stop()
    assert broker.process is None


def test_a_new_start_of_the_same_home_prefers_the_stored_port(scratch_dir: Path) -> None:
    broker = start_broker(scratch_dir / "home")
    port = broker.port
    broker.stop()
    again = start_broker(scratch_dir / "home")
    try:
        assert again.port == port
    finally:
        again.stop()


def test_a_home_whose_broker_is_running_refuses_a_second_one(scratch_dir: Path) -> None:
    broker = start_broker(scratch_dir / "home")
    try:
        with pytest.raises(EmbeddedStartError, match="already running"):
            start_broker(scratch_dir / "home")
        assert broker.is_running
    finally:
        broker.stop()


def test_broker_on_a_taken_port_fails_clearly(scratch_dir: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        assert free_port(taken) != taken
        with pytest.raises(EmbeddedStartError, match=str(taken)):
            EmbeddedBroker(scratch_dir, taken).start()


def test_stable_ports_survive_and_differ_between_names_and_homes(scratch_dir: Path) -> None:
    a = stable_port(scratch_dir / "one", "registry")
    assert stable_port(scratch_dir / "one", "registry") == a
    assert stable_port(scratch_dir / "one", "disclosure") != a
    assert stable_port(scratch_dir / "two", "registry") != a
