"""The auditor's tools: verify the stores, replay state as of a time, follow a case, export a bundle.

``verify`` checks, per service schema and without trusting the services:

* every stream's hash chain (versions dense from 1, ``prev_hash`` links, each hash the
  SHA-256 of the event's canonical encoding), streamed with a server-side cursor;
* the log: entries dense from 0, in position order, each pointing at an existing event
  whose leaf hash it holds; an event below the last sealed position without an entry was
  inserted after the fact; events after it are only "not yet sealed";
* every checkpoint: its body against its columns, its Ed25519 signature with a key the
  auditor holds, its root recomputed over the first ``tree_size`` leaves while streaming
  (a compact range, O(log n) memory), an RFC 9162 consistency proof between successive
  checkpoints (proof nodes collected while streaming);
* checkpoints held elsewhere (published on ``chengneng.audit.checkpoints``, or given by
  the auditor): the database must still agree with each, which is what catches a history
  rewritten consistently (hashes, log and root recomputed);
* Kafka: every sealed event on the service's topic with the same hash, and no record on
  the topic that the store does not hold.

``export`` writes one gzipped JSON Lines bundle (events with hashes and leaves, checkpoints,
public keys); ``verify_bundle`` re-checks it with nothing else. ``replay`` folds streams with
their aggregates up to a time; ``trail`` lists everything that concerns one case.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gc
import gzip
import hashlib
import importlib
import json
import multiprocessing
import os
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import db, kafka, merkle, store
from shared.envelope import GENESIS_HASH, Envelope, utc_iso
from shared.principal import Principal, Role
from shared.sealer import CHECKPOINT_TOPIC, key_id, key_paths, origin, verify_checkpoint_signature

SERVICES = ("registry", "capability", "supervision", "disclosure")
"""The services whose stores are sealed (the deadline processor keeps no events)."""

PUBLIC_TOPIC = "chengneng.disclosure.public"
TOPICS = {"disclosure": PUBLIC_TOPIC}
"""Where a service's relay publishes when it is not ``chengneng.<service>.events``."""

AGGREGATES: dict[str, tuple[str, str]] = {
    "function": ("services.registry.domain", "FUNCTION"),
    "function-list": ("services.registry.domain", "FUNCTION_LIST"),
    "society": ("services.capability.domain", "SOCIETY"),
    "selection": ("services.capability.domain", "SELECTION"),
    "case": ("services.supervision.domain", "CASE"),
    "public-subject": ("services.disclosure.domain", "PUBLIC"),
}
"""stream type -> (module, aggregate); the module's ``EVENTS`` decodes (and upcasts) its events."""

BUNDLE_FORMAT = "chengneng-audit-bundle/1"
MAX_FAILURES = 1000

PARALLEL_FROM = 50_000
"""Events in a service's store from which its chains are checked by worker processes."""

EVENTS_PER_RANGE = 25_000
"""About how many events one worker's job covers: the unit of progress and of load balance."""


def topic_of(service: str) -> str:
    return TOPICS.get(service, kafka.events_topic(service))


# --- findings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One thing that does not hold: which service, where exactly, and what is wrong."""

    service: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.service}: {self.where}: {self.what}"


@dataclass
class ServiceSummary:
    service: str
    events: int = 0
    streams: int = 0
    log_entries: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    latest_tree_size: int | None = None
    key_id: str | None = None
    topic_records: int | None = None
    external_checkpoints: int = 0


@dataclass
class Report:
    """What a verification found: failures (the first one is what matters), notes, counts."""

    failures: list[Failure] = field(default_factory=list)
    failure_count: int = 0
    notes: list[str] = field(default_factory=list)
    services: list[ServiceSummary] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure_count == 0

    @property
    def events(self) -> int:
        return sum(s.events for s in self.services)

    def fail(self, service: str, where: str, what: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(Failure(service, where, what))

    def take(self, failures: Sequence[Failure], count: int) -> None:
        """Findings made elsewhere (a worker, or held back), in their order; ``count`` also
        counts those beyond the listed ones."""
        for failure in failures:
            self.fail(failure.service, failure.where, failure.what)
        self.failure_count += count - len(failures)

    def lines(self, *, listed: int = 20) -> list[str]:
        """A human summary; on failure the first failure comes first."""
        out: list[str] = []
        if not self.ok:
            out.append(f"FAILED: {self.failures[0]}")
        for s in self.services:
            sealed = f"{s.log_entries} log entries"
            if s.unsealed:
                sealed += f", {s.unsealed} event(s) not yet sealed"
            cps = f"{s.checkpoints} checkpoint(s)"
            if s.latest_tree_size is not None:
                cps += f" (latest tree_size {s.latest_tree_size}, key {s.key_id})"
            if s.external_checkpoints:
                cps += f", {s.external_checkpoints} held/published checkpoint(s) compared"
            topic = "" if s.topic_records is None else f"; {s.topic_records} record(s) on {topic_of(s.service)}"
            out.append(f"  {s.service}: {s.events} events in {s.streams} streams; {sealed}; {cps}{topic}")
        out.extend(f"  note: {n}" for n in self.notes)
        rate = self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0
        timing = f"{self.events} events in {self.elapsed_s:.2f} s ({rate:.0f} events/s)"
        if self.ok:
            out.append(f"OK: every check holds for {len(self.services)} service(s); {timing}")
        else:
            out.append(f"{self.failure_count} failure(s); {timing}")
            out.extend(f"  - {f}" for f in self.failures[:listed])
            if self.failure_count > listed:
                out.append(f"  ... and {self.failure_count - listed} more")
        return out


class Progress:
    """A line to stderr every ``every`` items, with the rate so far."""

    def __init__(self, every: int, out: TextIO | None) -> None:
        self.every = max(every, 1)
        self.out = out
        self.started: dict[tuple[str, str], float] = {}
        self.printed: dict[tuple[str, str], int] = {}

    def tick(self, service: str, what: str, count: int) -> None:
        if count == 1:
            self.started[(service, what)] = time.monotonic()
        if self.out is not None and count % self.every == 0:
            self._line(service, what, count)

    def reached(self, service: str, what: str, count: int) -> None:
        """Progress that comes in jumps (a worker's range at a time): a line when it passes a multiple."""
        key = (service, what)
        self.started.setdefault(key, time.monotonic())
        if self.out is not None and count // self.every > self.printed.get(key, 0):
            self.printed[key] = count // self.every
            self._line(service, what, count)

    def _line(self, service: str, what: str, count: int) -> None:
        elapsed = time.monotonic() - self.started.get((service, what), time.monotonic())
        rate = count / max(elapsed, 1e-9)
        print(f"{service}: {count} {what} checked ({rate:.0f}/s)", file=self.out, flush=True)


# --- checkpoints and keys ----------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head as stored, published or exported."""

    origin: str
    tree_size: int
    root_hash: bytes
    signed_at: str
    key_id: str
    body: str
    signature: bytes

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Checkpoint:
        return cls(
            origin=row["origin"],
            tree_size=int(row["tree_size"]),
            root_hash=bytes(row["root_hash"]),
            signed_at=row["signed_at"].isoformat(),
            key_id=row["key_id"],
            body=row["body"],
            signature=bytes(row["signature"]),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            origin=str(data["origin"]),
            tree_size=int(data["tree_size"]),
            root_hash=bytes.fromhex(data["root_hash"]),
            signed_at=str(data["signed_at"]),
            key_id=str(data["key_id"]),
            body=str(data["body"]),
            signature=base64.b64decode(data["signature"], validate=True),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "body": self.body,
            "signature": base64.b64encode(self.signature).decode(),
        }

    def body_problem(self) -> str | None:
        """Why the signed body does not say what the columns say, or None."""
        parts = self.body.split("\n")
        if len(parts) != 5 or parts[4] != "":
            return "the signed body is not origin, size, root, time on four lines"
        try:
            size, root_hash, signed = int(parts[1]), base64.b64decode(parts[2], validate=True), parts[3]
            same_time = datetime.fromisoformat(signed) == datetime.fromisoformat(self.signed_at)
        except ValueError as exc:
            return f"the signed body cannot be parsed: {exc}"
        if parts[0] != self.origin:
            return f"the signed body names origin {parts[0]!r}, the record {self.origin!r}"
        if size != self.tree_size:
            return f"the signed body says tree size {size}, the record {self.tree_size}"
        if root_hash != self.root_hash:
            return f"the signed body says root {root_hash.hex()}, the record {self.root_hash.hex()}"
        if not same_time:
            return f"the signed body says signed at {signed}, the record {self.signed_at}"
        return None


def load_held_key(keys_dir: Path, service: str) -> Ed25519PublicKey | None:
    """The checkpoint key of ``service`` that the auditor holds (never one from the database)."""
    _, public = key_paths(keys_dir, service)
    if not public.exists():
        return None
    return parse_public_key(public.read_bytes())


def parse_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_checkpoint_file(path: Path) -> list[dict[str, Any]]:
    """Checkpoints an auditor kept: JSON Lines, a JSON list, or ``{"checkpoints": [...]}`` (the API's shape)."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        return list(data["checkpoints"]) if "checkpoints" in data else [data]
    return list(data)


# --- Merkle: roots and consistency proofs from one pass over the leaves --------------------


class LeafStream:
    """Takes leaf hashes once, in order, and keeps O(log n) of them plus what it was asked for:
    the root at each chosen size (via a compact range) and the subtree hashes of the
    consistency proofs between chosen pairs of sizes."""

    def __init__(self, sizes: Iterable[int], pairs: Iterable[tuple[int, int]] = ()) -> None:
        self.size = 0
        self._sizes = set(sizes)
        self.roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT} if 0 in self._sizes else {}
        self._border: list[bytes] = []
        self._wanted: set[tuple[int, int]] = set()
        for first, second in pairs:
            for lo, hi in merkle.consistency_ranges(first, second):
                self._wanted.update(merkle.perfect_pieces(lo, hi))
        self._nodes: dict[tuple[int, int], bytes] = {}

    def append(self, leaf: bytes) -> None:
        index = self.size
        wanted = self._wanted
        if wanted and (0, index) in wanted:
            self._nodes[(0, index)] = leaf
        node, level, size = leaf, 0, index
        while size & 1:
            node = merkle.node_hash(self._border.pop(), node)
            level += 1
            size >>= 1
            if wanted and (level, index >> level) in wanted:
                self._nodes[(level, index >> level)] = node
        self._border.append(node)
        self.size += 1
        if self.size in self._sizes:
            self.roots[self.size] = merkle.CompactRange(self.size, self._border).root()

    def _range_hash(self, lo: int, hi: int) -> bytes:
        size = hi - lo
        if size & (size - 1) == 0 and lo % size == 0:
            level = size.bit_length() - 1
            return self._nodes[(level, lo >> level)]
        k = 1 << ((size - 1).bit_length() - 1)  # RFC 6962's split: the largest power of two below size
        return merkle.node_hash(self._range_hash(lo, lo + k), self._range_hash(lo + k, hi))

    def consistency_proof(self, first: int, second: int) -> list[bytes] | None:
        """PROOF(first, D[second]) as RFC 9162 defines it, or None if fewer leaves were seen."""
        if second > self.size:
            return None
        return [self._range_hash(lo, hi) for lo, hi in merkle.consistency_ranges(first, second)]


# --- one service's checks, shared by the database and the bundle verifier -------------------


def _where(env: Envelope) -> str:
    return f"stream {env.stream_id} version {env.stream_version} (position {env.position})"


class ServiceCheck:
    """Checks one service's events, log entries and checkpoints as they stream past."""

    def __init__(
        self,
        service: str,
        report: Report,
        progress: Progress,
        key: Ed25519PublicKey | None,
        checkpoints: Sequence[Checkpoint],
        external: Sequence[tuple[str, Checkpoint]] = (),
        *,
        by_stream: bool = True,
    ) -> None:
        self.service = service
        self.origin = origin(service)
        self.report = report
        self.progress = progress
        self.key = key
        self.checkpoints = sorted(checkpoints, key=lambda c: c.tree_size)
        self.external = list(external)
        self.by_stream = by_stream
        self.summary = ServiceSummary(service, key_id=key_id(key) if key else None)
        report.services.append(self.summary)
        sizes = {c.tree_size for c in self.checkpoints} | {c.tree_size for _, c in self.external}
        pairs = [(a.tree_size, b.tree_size) for a, b in zip(self.checkpoints, self.checkpoints[1:], strict=False)]
        self.leaves = LeafStream(sizes, pairs)
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._last_stream: str | None = None
        self._next_index = 0
        self._stream_versions: dict[str, int] = {}
        self._pending_unsealed: tuple[str, int] | None = None  # bundle mode: first unsealed before a sealed one
        self._held: Report | None = None

    def fail(self, where: str, what: str) -> None:
        (self.report if self._held is None else self._held).fail(self.service, where, what)

    def hold_failures(self) -> None:
        """Keep this process's findings back while workers check the chains, which come first."""
        self._held = Report()

    def release_failures(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self.report.take(held.failures, held.failure_count)

    def merge(self, result: ChainResult) -> None:
        """A worker's findings on its range of streams, as if they had been found here."""
        self.report.take(result.failures, result.failure_count)
        self.summary.streams += result.streams
        self.summary.events += result.events
        self.summary.unsealed += result.unsealed

    # (a) hash chains
    def event(self, env: Envelope) -> None:
        if self.by_stream and env.stream_id != self._last_stream:
            self._heads.clear()
        if env.stream_id not in self._heads:
            self.summary.streams += 1
        self._last_stream = env.stream_id
        head = self._heads.get(env.stream_id)
        expected_version = head[0] + 1 if head else 1
        expected_prev = head[1] if head else GENESIS_HASH
        if env.stream_version != expected_version:
            if head is None:
                self.fail(_where(env), f"the stream starts at version {env.stream_version}, not 1")
            else:
                self.fail(
                    _where(env),
                    f"version {env.stream_version} follows version {head[0]}: "
                    f"version {expected_version} is missing, or an event was inserted",
                )
        elif env.prev_hash != expected_prev:
            previous = "the genesis hash" if head is None else f"the hash of version {head[0]}"
            self.fail(_where(env), f"prev_hash {env.prev_hash.hex()} is not {previous} ({expected_prev.hex()})")
        if not env.hash_is_valid():
            self.fail(
                _where(env),
                "the stored hash is not the SHA-256 of the event's canonical encoding: "
                f"its content was changed after it was written ({env.event_type})",
            )
        self._heads[env.stream_id] = (env.stream_version, env.hash)
        self.summary.events += 1
        self.progress.tick(self.service, "events", self.summary.events)

    def unreadable(self, position: Any, stream_id: Any, version: Any, exc: Exception) -> None:
        self.fail(f"stream {stream_id} version {version} (position {position})", f"the row cannot be read: {exc}")
        self.summary.events += 1

    # (b) the log
    def log_entry(
        self,
        log_index: int,
        position: int,
        leaf: bytes,
        event_hash: bytes | None,
        stream_id: str | None = None,
        version: int | None = None,
    ) -> None:
        if log_index != self._next_index:
            self.fail(
                self._where(log_index, position, stream_id, version),
                f"log indices are not dense: expected {self._next_index}",
            )
        # Each stream's events enter the log in version order (what consumers rely on).
        if stream_id is not None and version is not None:
            last = self._stream_versions.get(stream_id, 0)
            if version <= last:
                self.fail(
                    self._where(log_index, position, stream_id, version),
                    f"version {version} of {stream_id} is logged after version {last}",
                )
            self._stream_versions[stream_id] = version
        if event_hash is None:
            self.fail(
                self._where(log_index, position, stream_id, version),
                f"points at position {position}, which holds no event (deleted?)",
            )
        elif merkle.leaf_hash(event_hash) != leaf:
            self.fail(
                self._where(log_index, position, stream_id, version),
                "the leaf hash does not match the event's hash (event or log entry changed)",
            )
        self._next_index = log_index + 1
        self.leaves.append(leaf)
        self.summary.log_entries += 1
        self.progress.tick(self.service, "log entries", self.summary.log_entries)

    @staticmethod
    def _where(log_index: int, position: int, stream_id: str | None, version: int | None) -> str:
        stream = f", stream {stream_id} version {version}" if stream_id is not None else ""
        return f"log index {log_index} (position {position}{stream})"

    def unsealed_in_db(self, env: Envelope, xid: int, last_sealed: tuple[int, int]) -> None:
        """An event without a log entry: an error when the sealer has already passed its place."""
        assert env.position is not None
        if (xid, env.position) < last_sealed:
            self.fail(
                f"stream {env.stream_id} version {env.stream_version} (position {env.position})",
                f"has no log entry although the sealer is past it (at {last_sealed}): inserted after the fact",
            )
        else:
            self.summary.unsealed += 1

    def unsealed_in_order(self, env: Envelope) -> None:
        """Bundle mode: an unsealed event is counted. Position order is not tail order (a later
        position may commit, and be sealed, first), so the bundle cannot call it inserted."""
        self.summary.unsealed += 1

    def sealed_in_order(self, position: int) -> None:
        """Bundle mode: nothing to check here (see ``unsealed_in_order``)."""

    # (c) checkpoints
    def finish(self) -> None:
        size = self.leaves.size
        if self.key is None:
            self.fail("checkpoint key", "the auditor holds no public key for this service; signatures not checked")
        previous: Checkpoint | None = None
        for cp in self.checkpoints:
            self._checkpoint(cp, size, "checkpoint")
            if previous is not None and 0 < previous.tree_size <= cp.tree_size <= size:
                proof = self.leaves.consistency_proof(previous.tree_size, cp.tree_size)
                if proof is None or not merkle.verify_consistency(
                    previous.tree_size, cp.tree_size, previous.root_hash, cp.root_hash, proof
                ):
                    self.fail(
                        f"checkpoint tree_size {cp.tree_size}",
                        f"not consistent with the previous checkpoint (tree_size {previous.tree_size}): "
                        "the log was not only appended to",
                    )
            previous = cp
        self.summary.checkpoints = len(self.checkpoints)
        self.summary.latest_tree_size = self.checkpoints[-1].tree_size if self.checkpoints else None
        stored = {c.tree_size: c for c in self.checkpoints}
        for source, held in self.external:
            self.summary.external_checkpoints += 1
            where = f"checkpoint tree_size {held.tree_size} ({source})"
            if held.origin != self.origin:
                continue
            if self.key is not None and not verify_checkpoint_signature(self.key, held.body, held.signature):
                self.fail(where, "its signature does not verify with the held key: not a checkpoint of this service")
                continue
            mine = stored.get(held.tree_size)
            if mine is None:
                if held.tree_size > size:
                    why = f"it covers {held.tree_size} entries, the log holds only {size}: entries were removed"
                elif self.leaves.roots.get(held.tree_size) != held.root_hash:
                    why = "the log's first entries no longer hash to its root: the history was rewritten"
                else:
                    why = "the log still matches its root, but the database lost the checkpoint"
                self.fail(where, f"the database has no checkpoint of this size; {why}")
            elif mine.root_hash != held.root_hash or mine.body != held.body or mine.signature != held.signature:
                self.fail(
                    where,
                    f"the database's checkpoint (root {mine.root_hash.hex()}) disagrees with the one {source} "
                    f"(root {held.root_hash.hex()}): the history was rewritten",
                )
        if size and (not self.checkpoints or self.checkpoints[-1].tree_size < size):
            covered = self.checkpoints[-1].tree_size if self.checkpoints else 0
            self.report.notes.append(f"{self.service}: {size - covered} log entries are after the latest checkpoint")
        if self.summary.unsealed:
            self.report.notes.append(f"{self.service}: {self.summary.unsealed} event(s) not yet sealed")

    def _checkpoint(self, cp: Checkpoint, size: int, label: str) -> None:
        where = f"{label} tree_size {cp.tree_size}"
        if cp.origin != self.origin:
            self.fail(where, f"origin {cp.origin!r} is not {self.origin!r}")
        problem = cp.body_problem()
        if problem:
            self.fail(where, problem)
        if self.key is not None:
            if cp.key_id != key_id(self.key):
                self.fail(where, f"signed with key {cp.key_id}, the auditor holds key {key_id(self.key)}")
            elif not verify_checkpoint_signature(self.key, cp.body, cp.signature):
                self.fail(where, "the Ed25519 signature does not verify with the held key")
        if cp.tree_size > size:
            self.fail(where, f"covers {cp.tree_size} entries but the log holds only {size}: entries were removed")
        elif self.leaves.roots.get(cp.tree_size) != cp.root_hash:
            recomputed = self.leaves.roots.get(cp.tree_size, b"").hex()
            self.fail(
                where,
                f"root {cp.root_hash.hex()} differs from the root recomputed over the first {cp.tree_size} "
                f"log entries ({recomputed})",
            )


# --- verify against the database and Kafka -----------------------------------------------


async def _schema_exists(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.events"))


async def verify(
    database_url: str,
    services: Sequence[str],
    keys_dir: Path,
    *,
    kafka_bootstrap: str | None = None,
    held_checkpoints: Sequence[dict[str, Any]] = (),
    progress_every: int = 10_000,
    progress: TextIO | None = None,
    kafka_timeout_s: float = 10.0,
    jobs: int | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> Report:
    """Check every service's chains, log, checkpoints and (if a bootstrap is given) Kafka topics.

    A service with ``parallel_from`` events or more has its chains checked by ``jobs`` worker
    processes (default: one per CPU) while this one checks its log; 1 checks everything here.
    """
    report = Report()
    jobs = jobs or os.cpu_count() or 1
    workers = ChainWorkers(jobs) if jobs > 1 else None
    started = time.monotonic()
    ticker = Progress(progress_every, progress)
    published: dict[str, list[Checkpoint]] = {}
    if kafka_bootstrap is None:
        report.notes.append("Kafka not checked (no bootstrap, or --no-kafka)")
    else:
        try:
            published = await _published_checkpoints(kafka_bootstrap, kafka_timeout_s, report)
        except Exception as exc:  # unreachable broker: say so and check the rest
            report.notes.append(f"Kafka not checked: broker {kafka_bootstrap} unreachable ({exc!r})")
            kafka_bootstrap = None
    held: dict[str, list[Checkpoint]] = {}
    for number, item in enumerate(held_checkpoints, start=1):
        try:
            cp = Checkpoint.from_json(item)
        except (KeyError, ValueError, TypeError) as exc:
            report.fail("auditor", f"held checkpoint {number}", f"malformed: {exc!r}")
            continue
        held.setdefault(cp.origin, []).append(cp)
    try:
        for service in services:
            conn = await db.connect(database_url, service)
            try:
                if not await _schema_exists(conn, service):
                    report.fail(service, "schema", f"no events table in schema {service!r}")
                    continue
                external = [("published on " + CHECKPOINT_TOPIC, c) for c in published.get(origin(service), [])]
                external += [("held by the auditor", c) for c in held.get(origin(service), [])]
                check = await _verify_store(
                    conn,
                    service,
                    report,
                    ticker,
                    load_held_key(keys_dir, service),
                    external,
                    database_url,
                    workers,
                    parallel_from,
                )
                if kafka_bootstrap is not None:
                    on_topic = {c.tree_size for c in published.get(origin(service), [])}
                    unpublished = [c.tree_size for c in check.checkpoints if c.tree_size not in on_topic]
                    if unpublished:
                        report.notes.append(
                            f"{service}: {len(unpublished)} stored checkpoint(s) not found on {CHECKPOINT_TOPIC} "
                            f"(tree sizes {', '.join(map(str, unpublished[:10]))}"
                            f"{' ...' if len(unpublished) > 10 else ''})"
                        )
                    try:
                        await _verify_topic(conn, service, check, kafka_bootstrap, kafka_timeout_s)
                    except Exception as exc:  # report, do not crash the audit
                        report.notes.append(f"{service}: Kafka topic not checked ({exc!r})")
            finally:
                await conn.close()
    finally:
        if workers is not None:
            workers.close()
    report.elapsed_s = time.monotonic() - started
    return report


async def _chunks(
    conn: asyncpg.Connection, sql: str, *args: Any, chunk: int = 1000
) -> AsyncIterator[list[asyncpg.Record]]:
    """Rows of ``sql`` through a server-side cursor, a chunk at a time (bounded memory, few
    round trips; the caller loops over each chunk: a generator resumed per row cost a
    twentieth of checking a chain).

    Chunks of a thousand: larger ones cost more in the cyclic collector's scans of the rows
    alive at once than they save in round trips (measured at 1,000, 5,000 and 20,000).
    """
    cursor = await conn.cursor(sql, *args)
    while rows := await cursor.fetch(chunk):
        yield rows


StreamRange = tuple[str | None, str | None]
"""Stream ids ``low <= id < high``; None is open-ended."""


@dataclass(frozen=True)
class ChainJob:
    """One range of streams for a worker process, read in the auditor's own snapshot."""

    database_url: str
    service: str
    snapshot: str
    streams: StreamRange
    last_sealed: tuple[int, int]


@dataclass(frozen=True)
class ChainResult:
    """What a worker found in its range: the first failures, how many in all, and counts."""

    failures: list[Failure]
    failure_count: int
    streams: int
    events: int
    unsealed: int


def _chain_sql(streams: StreamRange) -> str:
    """Events of a range of streams with their log index, in (stream, version) order."""
    conditions = [f"stream_id {op} $" for op, bound in zip((">=", "<"), streams, strict=True) if bound is not None]
    where = " AND ".join(f"{condition}{n}" for n, condition in enumerate(conditions, 1))
    return (
        f"SELECT {store.COLUMNS}, xact_id::text::bigint AS xid, log_index FROM events "
        f"LEFT JOIN log_entries USING (position) {'WHERE ' + where if where else ''} "
        "ORDER BY stream_id, stream_version"
    )


async def _check_chains(
    conn: asyncpg.Connection, check: ServiceCheck, streams: StreamRange, last_sealed: tuple[int, int]
) -> None:
    """(a) for the streams of one range, in (stream, version) order: one chain head at a time."""
    bounds = [bound for bound in streams if bound is not None]
    async for rows in _chunks(conn, _chain_sql(streams), *bounds):
        for row in rows:
            try:
                env = store.envelope_from_record(row)
            except Exception as exc:  # a role or jurisdiction that no writer could have stored
                check.unreadable(row["position"], row["stream_id"], row["stream_version"], exc)
                continue
            check.event(env)
            if row["log_index"] is None:
                check.unsealed_in_db(env, int(row["xid"]), last_sealed)


def check_chains_in_worker(job: ChainJob) -> ChainResult:
    """A worker process's job: its own connection, in the snapshot the auditor exported."""
    return asyncio.run(_check_chains_job(job))


async def _check_chains_job(job: ChainJob) -> ChainResult:
    report = Report()
    check = ServiceCheck(job.service, report, Progress(1, None), None, [])
    conn = await db.connect(job.database_url, job.service)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            # A range is read along the (stream, version) index. For a range the planner
            # estimates a sort of the rows cheaper, which costs the server five times more.
            await conn.execute("SET LOCAL enable_sort = off")
            await _check_chains(conn, check, job.streams, job.last_sealed)
    finally:
        await conn.close()
    gc.collect()  # the worker runs with the collector off (``_worker_started``): clean up per job
    summary = check.summary
    return ChainResult(report.failures, report.failure_count, summary.streams, summary.events, summary.unsealed)


def _worker_started() -> None:
    """Worker processes check rows that make no reference cycles: the collector would only
    rescan the rows of each chunk (a seventh of the time); each job ends with a collection.
    What the process holds before its first job (the imported modules) is frozen out of
    those collections, which otherwise walked it all again after every job."""
    gc.disable()
    gc.freeze()


class ChainWorkers:
    """Processes for the chain checks, started on first use and shared by one audit's services.

    They are forked from a clean server process that has imported the auditor, not from the
    auditor itself, which has threads by then (asyncio's resolver).
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def submit(self, jobs: Sequence[ChainJob]) -> list[asyncio.Future[ChainResult]]:
        """Hand the jobs over from a thread: the first ones start the processes, and the fork
        server imports the auditor first (half a second), which must not stall this process's
        own checks meanwhile."""
        futures = await asyncio.to_thread(lambda: [self._executor().submit(check_chains_in_worker, j) for j in jobs])
        return [asyncio.wrap_future(future) for future in futures]

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["shared.audit"])
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.jobs, mp_context=context, initializer=_worker_started
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


async def _stream_ranges(conn: asyncpg.Connection, events: int, jobs: int) -> list[StreamRange]:
    """Ranges of stream ids holding roughly ``EVENTS_PER_RANGE`` events each, at least two per
    worker, with bounds taken from a sample of the events (a bound never splits a stream)."""
    wanted = min(1024, max(2 * jobs, events // EVENTS_PER_RANGE))
    percent = min(100.0, 100.0 * 64 * wanted / max(events, 1))  # about 64 sampled events per range
    sample = [
        r[0]
        for r in await conn.fetch(
            "SELECT stream_id FROM events TABLESAMPLE BERNOULLI ($1) REPEATABLE (0) ORDER BY stream_id", percent
        )
    ]
    # In the sample's order, which is the database's collation: Python's own order of the
    # same strings can differ, and ranges cut by it would overlap or leave streams out.
    bounds: list[str] = []
    for k in range(1, wanted):
        bound = sample[len(sample) * k // wanted]
        if bound != sample[0] and (not bounds or bound != bounds[-1]):
            bounds.append(bound)
    lows: list[str | None] = [None, *bounds]
    highs: list[str | None] = [*bounds, None]
    return list(zip(lows, highs, strict=True))


async def _verify_store(
    conn: asyncpg.Connection,
    service: str,
    report: Report,
    ticker: Progress,
    key: Ed25519PublicKey | None,
    external: Sequence[tuple[str, Checkpoint]],
    database_url: str,
    workers: ChainWorkers | None,
    parallel_from: int,
) -> ServiceCheck:
    # One snapshot for events, log and checkpoints; read-only, so it takes no transaction id
    # and does not hold back the commit horizon that the relays and sealers tail behind.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        stored = [Checkpoint.from_row(r) for r in await conn.fetch("SELECT * FROM checkpoints ORDER BY tree_size")]
        check = ServiceCheck(service, report, ticker, key, stored, external)
        last_sealed = await store.sealer_cursor(conn)
        events = int(await conn.fetchval("SELECT count(*) FROM events")) if workers else 0
        if workers is None or events < parallel_from:
            await _check_chains(conn, check, (None, None), last_sealed)
            await _check_log(conn, check)
        else:
            # The workers read in this transaction's snapshot, so they see exactly what it sees;
            # this process checks the log meanwhile and reports its findings after theirs.
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            ranges = await _stream_ranges(conn, events, workers.jobs)
            submitted = asyncio.ensure_future(
                workers.submit([ChainJob(database_url, service, snapshot, r, last_sealed) for r in ranges])
            )
            try:
                check.hold_failures()
                await _check_log(conn, check)
                jobs = await submitted
                checked = 0
                ticker.reached(service, "events", checked)  # the rate counts from here
                for done in asyncio.as_completed(jobs):
                    checked += (await done).events
                    ticker.reached(service, "events", checked)
                for job in jobs:  # in range order, which is (stream, version) order
                    check.merge(job.result())
                check.release_failures()
            finally:
                submitted.cancel()
                if submitted.done() and not submitted.cancelled() and submitted.exception() is None:
                    for job in submitted.result():
                        job.cancel()
        check.finish()
    return check


async def _check_log(conn: asyncpg.Connection, check: ServiceCheck) -> None:
    """(b) the log in index order; its leaves feed the Merkle roots of (c)."""
    log_sql = """SELECT l.log_index, l.position, l.leaf_hash, e.hash, e.stream_id, e.stream_version
                 FROM log_entries l LEFT JOIN events e USING (position) ORDER BY l.log_index"""
    async for rows in _chunks(conn, log_sql):
        for row in rows:
            check.log_entry(*row)


@contextlib.asynccontextmanager
async def _consumer(bootstrap: str, timeout_s: float) -> AsyncIterator[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
        fetch_max_wait_ms=50,  # the broker may hold a fetch for its whole wait: a short one ends each topic sooner
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except BaseException:
        await consumer.stop()
        raise
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _read_topic(bootstrap: str, topic: str, timeout_s: float) -> AsyncIterator[list[Any]]:
    """Batches of every record of ``topic`` from the beginning (no group), until its end."""
    from aiokafka import TopicPartition

    async with _consumer(bootstrap, timeout_s) as consumer:
        if topic not in await consumer.topics():
            return
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        idle_since = time.monotonic()
        while True:
            at_end = all([await consumer.position(tp) >= end[tp] for tp in partitions])
            # At the reported end, wait only for one more fetch (the embedded broker may report
            # wrong end offsets): an empty read otherwise costs its whole timeout, per topic.
            batches = await consumer.getmany(*partitions, timeout_ms=100 if at_end else 500, max_records=5000)
            records = [r for batch in batches.values() for r in batch]
            if records:
                idle_since = time.monotonic()
                yield records
                continue
            # The end offsets may also be too high: stop after a quiet while.
            if at_end or time.monotonic() - idle_since > timeout_s:
                return


async def _published_checkpoints(bootstrap: str, timeout_s: float, report: Report) -> dict[str, list[Checkpoint]]:
    out: dict[str, list[Checkpoint]] = {}
    async for records in _read_topic(bootstrap, CHECKPOINT_TOPIC, timeout_s):
        for r in records:
            try:
                cp = Checkpoint.from_json(json.loads(r.value))
            except (ValueError, KeyError, TypeError) as exc:
                report.fail(
                    "kafka", f"{CHECKPOINT_TOPIC} partition {r.partition} offset {r.offset}", f"malformed: {exc}"
                )
                continue
            out.setdefault(cp.origin, []).append(cp)
    for origin_name, cps in out.items():  # the sealer may publish one twice: keep each size once
        unique = {(c.tree_size, c.body, c.signature): c for c in cps}
        out[origin_name] = sorted(unique.values(), key=lambda c: c.tree_size)
    return out


async def _verify_topic(
    conn: asyncpg.Connection, service: str, check: ServiceCheck, bootstrap: str, timeout_s: float
) -> None:
    """Every sealed event on the topic with its hash; nothing on the topic the store lacks.

    The topic's records go to a temporary table, so the comparison is a join, not a set in memory.
    """
    topic = topic_of(service)
    # How far the relay says it published, read before the topic: a sealed event after it
    # is only "not yet published"; one at or before it must be on the topic.
    # The relay's position is the next log index it will publish.
    relayed = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM relay_positions"))
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS audit_topic (
               event_id uuid, eventhash text, subject text, version text, part integer, "offset" bigint)"""
    )
    await conn.execute("TRUNCATE audit_topic")
    seen = 0
    async for records in _read_topic(bootstrap, topic, timeout_s):
        rows = []
        for r in records:
            headers = {name: value.decode(errors="replace") for name, value in r.headers or ()}
            try:
                event_id = uuid.UUID(headers["ce_id"])
            except (KeyError, ValueError):
                check.fail(f"topic {topic} partition {r.partition} offset {r.offset}", "a record without a valid ce_id")
                continue
            rows.append(
                (
                    event_id,
                    headers.get("ce_eventhash"),
                    headers.get("ce_subject"),
                    headers.get("ce_streamversion"),
                    r.partition,
                    r.offset,
                )
            )
        await conn.copy_records_to_table("audit_topic", records=rows)
        seen += len(records)
    check.summary.topic_records = seen
    for row in await conn.fetch(
        """SELECT t.*, e.stream_id, e.stream_version, encode(e.hash, 'hex') AS stored FROM audit_topic t
           JOIN events e USING (event_id) WHERE t.eventhash IS DISTINCT FROM encode(e.hash, 'hex')
           ORDER BY e.stream_id, e.stream_version LIMIT 100"""
    ):
        check.fail(
            f"stream {row['stream_id']} version {row['stream_version']}",
            f"topic {topic} partition {row['part']} offset {row['offset']} carries hash {row['eventhash']}, "
            f"the store holds {row['stored']}",
        )
    for row in await conn.fetch(
        """SELECT t.* FROM audit_topic t LEFT JOIN events e USING (event_id)
           WHERE e.event_id IS NULL ORDER BY t.part, t."offset" LIMIT 100"""
    ):
        check.fail(
            f"topic {topic} partition {row['part']} offset {row['offset']}",
            f"event {row['event_id']} (subject {row['subject']}, version {row['version']}) was published "
            "but is not in the store: deleted or replaced",
        )
    missing = """FROM events e JOIN log_entries l USING (position)
                 WHERE l.log_index < $1 AND NOT EXISTS (SELECT 1 FROM audit_topic t WHERE t.event_id = e.event_id)"""
    for row in await conn.fetch(
        f"SELECT e.stream_id, e.stream_version, e.position {missing} AND l.log_index < $2 "
        "ORDER BY l.log_index LIMIT 100",
        check.summary.log_entries,
        relayed,
    ):
        check.fail(
            f"stream {row['stream_id']} version {row['stream_version']} (position {row['position']})",
            f"sealed and relayed (the relay is at log index {relayed}) but not on topic {topic}",
        )
    pending = await conn.fetchval(
        f"SELECT count(*) {missing} AND l.log_index >= $2", check.summary.log_entries, relayed
    )
    if pending:
        check.report.notes.append(f"{service}: {pending} sealed event(s) not yet published to {topic}")
    await conn.execute("DROP TABLE audit_topic")


# --- replay ------------------------------------------------------------------------------


def aggregate_for(stream_type: str) -> tuple[Any, Any] | None:
    """(aggregate, event registry) of a stream type, or None when no aggregate folds it."""
    spec = AGGREGATES.get(stream_type)
    if spec is None:
        return None
    module = importlib.import_module(spec[0])
    return getattr(module, spec[1]), module.EVENTS


def jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=lambda v: sorted(v) if isinstance(v, set | frozenset) else str(v)))


def fold(envelopes: Sequence[Envelope]) -> dict[str, Any]:
    """The state of one stream after ``envelopes`` (upcast, then folded with its aggregate)."""
    first = envelopes[0]
    found = aggregate_for(first.stream_type)
    view: dict[str, Any] = {
        "stream_id": first.stream_id,
        "stream_type": first.stream_type,
        "version": envelopes[-1].stream_version,
        "last_occurred_at": utc_iso(envelopes[-1].occurred_at),
    }
    if found is None:
        view["state"] = None
        view["note"] = f"no aggregate folds stream type {first.stream_type!r}"
        return view
    aggregate, registry = found
    state = aggregate.initial()
    try:
        for env in envelopes:
            state = aggregate.evolve(state, registry.decode(env.event_type, env.schema_version, env.payload))
    except Exception as exc:  # a stream cut at an odd point, or an unknown event type
        view["error"] = f"version {env.stream_version} ({env.event_type}) cannot be folded: {exc}"
    view["state"] = jsonable(state)
    return view


async def replay(
    database_url: str, as_of: datetime, out: TextIO, *, stream_id: str | None = None, services: Sequence[str] = SERVICES
) -> int:
    """Print ``{"as_of", "streams": [...]}``: each stream's state from its events up to ``as_of``.

    Streams are folded one at a time from a cursor, and written as they are done.
    """
    out.write(json.dumps({"as_of": utc_iso(as_of)})[:-1] + ', "streams": [')
    count = 0
    for service in services:
        conn = await db.connect(database_url, service)
        try:
            if not await _schema_exists(conn, service):
                continue
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                where = "occurred_at <= $1" + (" AND stream_id = $2" if stream_id else "")
                args: list[Any] = [as_of, stream_id] if stream_id else [as_of]
                if stream_id and not await conn.fetchval("SELECT 1 FROM events WHERE stream_id = $1", stream_id):
                    continue
                batch: list[Envelope] = []
                query = f"SELECT {store.COLUMNS} FROM events WHERE {where} ORDER BY stream_id, stream_version"
                async for row in conn.cursor(query, *args, prefetch=1000):
                    env = store.envelope_from_record(row)
                    if batch and batch[0].stream_id != env.stream_id:
                        count = _write_state(out, service, batch, count)
                        batch = []
                    batch.append(env)
                if batch:
                    count = _write_state(out, service, batch, count)
                elif stream_id:  # the stream exists, but began after as_of
                    out.write(
                        ("," if count else "")
                        + "\n"
                        + json.dumps(
                            {
                                "service": service,
                                "stream_id": stream_id,
                                "version": 0,
                                "state": None,
                                "note": "the stream has no events at or before as_of",
                            }
                        )
                    )
                    count += 1
        finally:
            await conn.close()
    out.write("\n]}\n")
    return count


def _write_state(out: TextIO, service: str, batch: list[Envelope], count: int) -> int:
    out.write(("," if count else "") + "\n" + json.dumps({"service": service, **fold(batch)}, ensure_ascii=False))
    return count + 1


# --- trail -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrailEntry:
    service: str
    envelope: Envelope

    def as_json(self) -> dict[str, Any]:
        env = self.envelope
        return {
            "service": self.service,
            "occurred_at": utc_iso(env.occurred_at),
            "position": env.position,
            "stream_id": env.stream_id,
            "stream_version": env.stream_version,
            "event_type": env.event_type,
            "event_id": str(env.event_id),
            "actor": env.actor.model_dump(mode="json"),
            "correlation_id": str(env.correlation_id),
            "basis": env.payload.get("basis"),
        }

    def line(self) -> str:
        env, actor = self.envelope, self.envelope.actor
        text = (
            f"{utc_iso(env.occurred_at)}  {self.service:<11} {env.stream_id} v{env.stream_version:<3} "
            f"{env.event_type:<28} by {actor.role.value} ({actor.organisation}, {actor.subject})"
        )
        basis = env.payload.get("basis")
        return text + (f"\n{'':>34}basis: {basis}" if basis else "")


async def trail(database_url: str, case_id: str, services: Sequence[str] = SERVICES) -> list[TrailEntry]:
    """Every event of every service that concerns one case, in time order.

    The case stream, the registry's function and the capability selection of its function,
    and every event that shares a correlation id with any of them.
    """
    from services.capability.domain import selection_stream
    from services.registry.domain import function_stream
    from services.supervision.domain import case_stream

    conns = {s: await db.connect(database_url, s) for s in services}
    try:
        present = {s: c for s, c in conns.items() if await _schema_exists(c, s)}
        if "supervision" not in present:
            raise LookupError("there is no supervision store")
        case = await store.read_stream(present["supervision"], case_stream(case_id))
        if not case:
            raise LookupError(f"no case {case_id!r}: stream {case_stream(case_id)} is empty")
        function_id = next((e.payload["function_id"] for e in case if e.payload.get("function_id")), None)
        core: dict[str, list[str]] = {"supervision": [case_stream(case_id)]}
        if function_id:
            core["registry"] = [function_stream(function_id)]
            core["capability"] = [selection_stream(function_id)]
        correlations: set[uuid.UUID] = {e.correlation_id for e in case}
        for service, streams in core.items():
            if service in present and service != "supervision":
                for stream_id in streams:
                    correlations |= {e.correlation_id for e in await store.read_stream(present[service], stream_id)}
        found: dict[tuple[str, int], TrailEntry] = {}
        for service, conn in present.items():
            rows = await conn.fetch(
                f"SELECT {store.COLUMNS} FROM events WHERE correlation_id = ANY($1::uuid[]) OR stream_id = ANY($2)",
                list(correlations),
                core.get(service, []),
            )
            for row in rows:
                env = store.envelope_from_record(row)
                found[(service, env.position or 0)] = TrailEntry(service, env)
        order = {s: i for i, s in enumerate(services)}
        return sorted(
            found.values(), key=lambda t: (t.envelope.occurred_at, order[t.service], t.envelope.position or 0)
        )
    finally:
        for c in conns.values():
            await c.close()


# --- export and verify-export ------------------------------------------------------------


class _BundleWriter:
    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.digest.update(line.encode())
        self.handle.write(line)
        self.lines += 1


async def export(
    database_url: str, out_path: Path, keys_dir: Path, services: Sequence[str] = SERVICES
) -> dict[str, int]:
    """Write a self-verifying bundle: keys, checkpoints, then events in position order with
    their log index and leaf hash (the verifier recomputes every root and proof from those)."""
    counts: dict[str, int] = {}
    with gzip.open(out_path, "wt", encoding="utf-8") as handle:
        writer = _BundleWriter(handle)  # type: ignore[arg-type]
        writer.write({"kind": "bundle", "format": BUNDLE_FORMAT, "services": list(services)})
        for service in services:
            key = load_held_key(keys_dir, service)
            if key is None:
                raise FileNotFoundError(f"no checkpoint key for {service} in {keys_dir}")
            conn = await db.connect(database_url, service)
            try:
                if not await _schema_exists(conn, service):
                    raise LookupError(f"no events table in schema {service!r}")
                writer.write(
                    {"kind": "service", "service": service, "origin": origin(service), "public_key": public_pem(key)}
                )
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    for row in await conn.fetch("SELECT * FROM checkpoints ORDER BY tree_size"):
                        writer.write({"kind": "checkpoint", "service": service, **Checkpoint.from_row(row).as_json()})
                    query = f"""SELECT {store.COLUMNS}, l.log_index, l.leaf_hash, l.position AS log_position
                                FROM events FULL JOIN log_entries l USING (position)
                                ORDER BY l.log_index NULLS LAST, coalesce(events.position, l.position)"""
                    n = 0
                    async for row in conn.cursor(query, prefetch=2000):
                        sealed = {
                            "log_index": row["log_index"],
                            "leaf_hash": bytes(row["leaf_hash"]).hex() if row["leaf_hash"] is not None else None,
                        }
                        if row["stream_id"] is None:
                            writer.write(
                                {"kind": "log_entry", "service": service, "position": row["log_position"], **sealed}
                            )
                            continue
                        envelope = store.envelope_from_record(row)
                        writer.write({"kind": "event", "service": service, **envelope.as_json(), **sealed})
                        n += 1
                    counts[service] = n
            finally:
                await conn.close()
        writer.write({"kind": "end", "lines": writer.lines, "sha256": writer.digest.hexdigest()})
    return counts


def _envelope_from_json(data: dict[str, Any]) -> Envelope:
    actor = data["actor"]
    return Envelope(
        position=data["position"],
        stream_id=data["stream_id"],
        stream_type=data["stream_type"],
        stream_version=int(data["stream_version"]),
        event_id=uuid.UUID(data["event_id"]),
        event_type=data["event_type"],
        schema_version=int(data["schema_version"]),
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        recorded_at=datetime.fromisoformat(data["recorded_at"]) if data.get("recorded_at") else None,
        actor=Principal(
            subject=actor["subject"],
            organisation=actor["organisation"],
            role=Role(actor["role"]),
            jurisdiction=actor["jurisdiction"],
        ),
        jurisdiction=data["jurisdiction"],
        correlation_id=uuid.UUID(data["correlation_id"]),
        causation_id=uuid.UUID(data["causation_id"]) if data.get("causation_id") else None,
        payload=data["payload"],
        prev_hash=bytes.fromhex(data["prev_hash"]),
        hash=bytes.fromhex(data["hash"]),
    )


def _bundle_lines(path: Path, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parsed records of the bundle; a damaged file ends in a failure, not an exception."""
    digest = hashlib.sha256()
    number = 0
    ended = False
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("a line is not a JSON object")
                if record.get("kind") == "end":
                    if record.get("lines") != number - 1 or record.get("sha256") != digest.hexdigest():
                        report.fail("bundle", f"line {number}", "the bundle's digest or line count does not match")
                    ended = True
                    continue
                if ended:
                    raise ValueError("data after the end record")
                digest.update(line.encode())
                yield number, record
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        report.fail("bundle", f"line {number + 1}", f"the bundle is damaged and cannot be read: {exc}")
        return
    if not ended:
        report.fail("bundle", f"line {number}", "the bundle is truncated: no end record")


def verify_bundle(
    path: Path,
    *,
    keys_dir: Path | None = None,
    progress_every: int = 10_000,
    progress: TextIO | None = None,
) -> Report:
    """Re-check an exported bundle with nothing else: chains, leaves, roots, signatures, consistency.

    With ``keys_dir``, the bundle's keys must also be the ones the auditor holds.
    """
    report = Report()
    started = time.monotonic()
    # First the bundle as a whole (gzip CRC, line count, digest): a damaged file is reported
    # as such, not as the odd failures its garbled lines would produce.
    for _ in _bundle_lines(path, report):
        pass
    if not report.ok:
        report.elapsed_s = time.monotonic() - started
        return report
    ticker = Progress(progress_every, progress)
    check: ServiceCheck | None = None
    key: Ed25519PublicKey | None = None
    service = ""
    checkpoints: list[Checkpoint] = []
    header_seen = False

    def start_checks() -> ServiceCheck:
        # Events come in log order, which keeps each stream in version order (the log check
        # says so if not), so chains are checked as they come: one head per stream in memory.
        return ServiceCheck(service, report, ticker, key, checkpoints, by_stream=False)

    for number, record in _bundle_lines(path, report):
        kind = record.get("kind")
        try:
            if not header_seen:
                if kind != "bundle" or record.get("format") != BUNDLE_FORMAT:
                    report.fail("bundle", "line 1", f"not a {BUNDLE_FORMAT} bundle")
                    break
                header_seen = True
            elif kind == "service":
                if service:
                    (check or start_checks()).finish()
                service, check, checkpoints = record["service"], None, []
                key = parse_public_key(record["public_key"].encode())
                if keys_dir is not None:
                    held = load_held_key(keys_dir, service)
                    if held is None or public_pem(held) != public_pem(key):
                        report.fail(service, "public key", f"the bundle's key is not the one held in {keys_dir}")
            elif kind == "checkpoint":
                checkpoints.append(Checkpoint.from_json(record))
            elif kind == "event":
                check = check or start_checks()
                env = _envelope_from_json(record)
                check.event(env)
                _bundle_leaf(check, record, env.position, env.hash, env)
            elif kind == "log_entry":
                check = check or start_checks()
                _bundle_leaf(check, record, record["position"], None, None)
            else:
                report.fail(service or "bundle", f"line {number}", f"unknown record kind {kind!r}")
        except (KeyError, ValueError, TypeError) as exc:
            report.fail(service or "bundle", f"line {number}", f"malformed {kind} record: {exc!r}")
    if service:
        (check or start_checks()).finish()
    report.elapsed_s = time.monotonic() - started
    return report


def _bundle_leaf(
    check: ServiceCheck, record: dict[str, Any], position: Any, event_hash: bytes | None, env: Envelope | None
) -> None:
    if record.get("log_index") is None:
        if env is not None:
            check.unsealed_in_order(env)
        return
    check.sealed_in_order(int(position))
    check.log_entry(
        int(record["log_index"]),
        int(position),
        bytes.fromhex(record["leaf_hash"]),
        event_hash,
        env.stream_id if env else None,
        env.stream_version if env else None,
    )


def print_report(report: Report, out: TextIO = sys.stdout) -> None:
    for line in report.lines():
        print(line, file=out)
