"""The sealer: a dense log index and signed checkpoints of the whole log.

Each stored event becomes a leaf of a Merkle tree (RFC 6962 / RFC 9162: leaf hash =
SHA-256(0x00 || event hash), node hash = SHA-256(0x01 || left || right)). The sealer tails
the events table in (transaction id, position) order below the commit horizon
(``store.read_after``), so the log index is dense and never skips an event that commits
late; the relay and the feeds follow this log. At an interval it signs a checkpoint — origin, tree size, root
hash, time — with the service's Ed25519 key, after proving the new tree consistent with
the previous checkpoint; checkpoints are stored append-only and published to
``chengneng.audit.checkpoints``, so a rewritten database disagrees with checkpoints that
others already hold. One active sealer per service, chosen by an advisory lock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client import Gauge

from shared import db, kafka, merkle, store
from shared.auth import ensure_keypair, load_private_key
from shared.envelope import Envelope
from shared.resilience import keep_running

log = structlog.get_logger(__name__)

CHECKPOINT_TOPIC = "chengneng.audit.checkpoints"
SEALED = Gauge("chengneng_sealer_tree_size", "Events sealed into the log", ["service"])


def origin(service: str) -> str:
    return f"chengneng/{service}"


def key_paths(keys_dir: Path, service: str) -> tuple[Path, Path]:
    return keys_dir / f"checkpoint-{service}.pem", keys_dir / f"checkpoint-{service}.pub.pem"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_body(origin_name: str, tree_size: int, root_hash: bytes, signed_at: datetime) -> str:
    """The signed text: a C2SP-style note body, one field per line."""
    return f"{origin_name}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n{signed_at.isoformat()}\n"


def verify_checkpoint_signature(public_key: Ed25519PublicKey, body: str, signature: bytes) -> bool:
    try:
        public_key.verify(signature, body.encode())
        return True
    except Exception:  # cryptography raises InvalidSignature; any failure means "not valid"
        return False


class Sealer:
    """Seals one service's events and signs its checkpoints."""

    def __init__(
        self,
        service: str,
        pool: asyncpg.Pool,
        dsn: str,
        bootstrap: str,
        keys_dir: Path,
        *,
        interval_s: float = 10.0,
        batch_size: int = 2000,
        poll_s: float = 0.05,
    ) -> None:
        self.service = service
        self.pool = pool
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.batch_size = batch_size
        private, public = key_paths(keys_dir, service)
        ensure_keypair(private, public)
        self.key: Ed25519PrivateKey = load_private_key(private)
        self.key_id = key_id(self.key.public_key())
        self.origin = origin(service)
        self.range = merkle.CompactRange()
        self.leaves_loaded = 0
        self.consistent = True

    async def run(self) -> None:
        await keep_running(self._run_as_leader, "sealer", service=self.service)

    async def _run_as_leader(self) -> None:
        lock = await asyncpg.connect(self.dsn, server_settings={"search_path": self.service})
        try:
            while not await lock.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"chengneng-sealer-{self.service}"
            ):
                await asyncio.sleep(1.0)
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            try:
                await producer.start()  # inside: a start that fails must still close the client
                await kafka.ensure_topics(self.bootstrap, [CHECKPOINT_TOPIC], partitions=1)
                await self._load_range()
                last_checkpoint = time.monotonic()
                # Woken at once by this process's commits; the poll finds the events that
                # other instances of the service commit.
                wakeup = db.Wakeup()
                with store.woken_by_commits(wakeup):
                    while True:
                        sealed = await self.seal_pending()
                        if time.monotonic() - last_checkpoint >= self.interval_s:
                            await self.checkpoint(producer)
                            await lock.fetchval("SELECT 1")
                            last_checkpoint = time.monotonic()
                        if not sealed:
                            await wakeup.wait(min(self.poll_s, self.interval_s))
            finally:
                with contextlib.suppress(Exception):
                    await producer.stop()
        finally:
            await lock.close()

    async def _load_range(self) -> None:
        """Rebuild the in-memory compact range from the stored leaves (O(log n) memory).

        On the way it checks that the stored leaves still hash to the latest signed root: from
        then on the range only grows by what this sealer appends, so every later root extends
        that one, and no checkpoint needs the whole log in memory to prove it.
        """
        self.range = merkle.CompactRange()
        self.leaves_loaded = 0
        self.consistent = True
        async with self.pool.acquire() as conn, conn.transaction():
            signed = await conn.fetchrow("SELECT tree_size, root_hash FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
            cursor = await conn.cursor("SELECT leaf_hash FROM log_entries ORDER BY log_index")
            while rows := await cursor.fetch(10_000):
                for row in rows:
                    if signed is not None and self.leaves_loaded == signed["tree_size"]:
                        self._check_signed_root(signed["tree_size"], bytes(signed["root_hash"]))
                    self.range.append(bytes(row["leaf_hash"]))
                    self.leaves_loaded += 1
            if signed is not None and self.leaves_loaded == signed["tree_size"]:
                self._check_signed_root(signed["tree_size"], bytes(signed["root_hash"]))
            elif signed is not None and self.leaves_loaded < signed["tree_size"]:
                self.consistent = False
                log.error("the log is shorter than its last checkpoint; not signing", service=self.service)
        SEALED.labels(self.service).set(self.leaves_loaded)

    def _check_signed_root(self, size: int, root_hash: bytes) -> None:
        if self.range.root() != root_hash:
            self.consistent = False
            log.error(
                "the stored log no longer hashes to its last checkpoint; not signing",
                service=self.service,
                tree_size=size,
            )

    async def seal_pending(self) -> int:
        """Give the next committed events their log index; returns how many were sealed.

        Events are read in (transaction id, position) order below the commit horizon, which
        never skips one. That order can put a stream's version n+1 before version n (a
        transaction that had its id before it read the stream's head), so within what is
        sealed together each stream goes in version order, and a predecessor the batch
        lacks is sealed with it. The cursor of what was read is stored with the entries.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = await store.sealer_cursor(conn)
            read = await store.read_after(conn, cursor, self.batch_size)
            if not read:
                return 0
            sealed_positions = {
                r["position"]
                for r in await conn.fetch(
                    "SELECT position FROM log_entries WHERE position = ANY($1::bigint[])", [e.position for _, e in read]
                )
            }
            fresh = [e for _, e in read if e.position not in sealed_positions]
            by_stream: dict[str, list[Envelope]] = {}
            for envelope in fresh:
                by_stream.setdefault(envelope.stream_id, []).append(envelope)
            if by_stream:
                # Each stream's highest sealed version, found from its newest version down:
                # a stream enters the log in version order, so the walk stops at the first
                # sealed one, however long the stream's history.
                heads = {
                    r["stream_id"]: r["version"] or 0
                    for r in await conn.fetch(
                        """SELECT s.stream_id,
                                  (SELECT e.stream_version FROM events e JOIN log_entries l USING (position)
                                    WHERE e.stream_id = s.stream_id ORDER BY e.stream_version DESC LIMIT 1) AS version
                           FROM unnest($1::text[]) AS s(stream_id)""",
                        list(by_stream),
                    )
                }
                for stream_id, envelopes in by_stream.items():
                    lowest = min(e.stream_version for e in envelopes)
                    expected = heads.get(stream_id, 0) + 1
                    if lowest > expected:  # committed earlier, read later: seal it first
                        envelopes += await store.read_versions(conn, stream_id, expected, lowest)
                    envelopes.sort(key=lambda e: e.stream_version)
            batch = [e for envelopes in by_stream.values() for e in envelopes]
            start = self.leaves_loaded
            leaves = [merkle.leaf_hash(e.hash) for e in batch]
            if batch:
                await conn.execute(
                    """INSERT INTO log_entries (log_index, position, leaf_hash)
                       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])""",
                    list(range(start, start + len(batch))),
                    [e.position for e in batch],
                    leaves,
                )
            if batch:  # delivered at commit: the relay wakes instead of polling
                await conn.execute("SELECT pg_notify($1, '')", db.channel(self.service, "sealed"))
            last = read[-1][0]
            await conn.execute(
                """INSERT INTO sealer_cursor (singleton, xid, position) VALUES (true, $1, $2)
                   ON CONFLICT (singleton) DO UPDATE SET xid = $1, position = $2""",
                last[0],
                last[1],
            )
        for leaf in leaves:
            self.range.append(leaf)
        self.leaves_loaded += len(batch)
        SEALED.labels(self.service).set(self.leaves_loaded)
        return len(read)

    async def checkpoint(self, producer: AIOKafkaProducer | None) -> dict[str, Any] | None:
        """Sign and store a checkpoint of the whole sealed log, if it grew since the last one."""
        previous = await self.pool.fetchrow("SELECT * FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
        size = self.leaves_loaded
        if previous is not None and previous["tree_size"] >= size:
            return None
        if not self.consistent:
            return None  # the log was changed under the last checkpoint: an operator must look
        root_hash = self.range.root()
        signed_at = datetime.now(UTC)
        body = checkpoint_body(self.origin, size, root_hash, signed_at)
        signature = self.key.sign(body.encode())
        await self.pool.execute(
            """INSERT INTO checkpoints (tree_size, origin, root_hash, signed_at, key_id, body, signature)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            size,
            self.origin,
            root_hash,
            signed_at,
            self.key_id,
            body,
            signature,
        )
        record = checkpoint_json(self.origin, size, root_hash, signed_at, self.key_id, body, signature)
        if producer is not None:
            await producer.send_and_wait(
                CHECKPOINT_TOPIC,
                key=self.origin.encode(),
                value=json.dumps(record).encode(),
                headers=[
                    ("ce_specversion", b"1.0"),
                    ("ce_id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.origin}/{size}")).encode()),
                    ("ce_source", f"/chengneng/{self.service}".encode()),
                    ("ce_type", b"org.chengneng.audit.Checkpoint"),
                    ("ce_subject", self.origin.encode()),
                    ("ce_time", signed_at.isoformat().encode()),
                    ("content-type", b"application/json"),
                ],
            )
        log.info("checkpoint signed", service=self.service, tree_size=size)
        return record


def checkpoint_json(
    origin_name: str, tree_size: int, root_hash: bytes, signed_at: datetime, kid: str, body: str, signature: bytes
) -> dict[str, Any]:
    return {
        "origin": origin_name,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "signed_at": signed_at.isoformat(),
        "key_id": kid,
        "body": body,
        "signature": base64.b64encode(signature).decode(),
    }
