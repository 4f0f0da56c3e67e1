"""The stored envelope of an event, its canonical encoding and its hash.

The canonical encoding is RFC 8785 (JSON Canonicalization Scheme) of the fields the
writer controls; ``recorded_at`` and ``position`` are assigned by the database and are
not hashed. Each event's hash covers the previous event's hash, so a stream is a chain.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

from shared.principal import Principal

GENESIS_HASH = bytes(32)
"""The ``prev_hash`` of the first event of every stream."""


def utc_iso(moment: datetime) -> str:
    """Microsecond ISO-8601 in UTC: what PostgreSQL's timestamptz keeps exactly."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are refused: time must carry its zone")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Envelope:
    """One event as stored: identity, stream place, who/where/why, payload and hash chain."""

    stream_id: str
    stream_type: str
    stream_version: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    occurred_at: datetime
    actor: Principal
    jurisdiction: str
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    payload: dict[str, Any]
    prev_hash: bytes
    hash: bytes
    position: int | None = None
    recorded_at: datetime | None = None

    def canonical(self) -> bytes:
        return canonical_bytes(
            stream_id=self.stream_id,
            stream_type=self.stream_type,
            stream_version=self.stream_version,
            event_id=self.event_id,
            event_type=self.event_type,
            schema_version=self.schema_version,
            occurred_at=self.occurred_at,
            actor=self.actor,
            jurisdiction=self.jurisdiction,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            payload=self.payload,
            prev_hash=self.prev_hash,
        )

    def hash_is_valid(self) -> bool:
        return hashlib.sha256(self.canonical()).digest() == self.hash

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view for APIs and exports (hashes in hex)."""
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "stream_type": self.stream_type,
            "stream_version": self.stream_version,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": utc_iso(self.occurred_at),
            "recorded_at": utc_iso(self.recorded_at) if self.recorded_at else None,
            "actor": self.actor.model_dump(mode="json"),
            "jurisdiction": self.jurisdiction,
            "correlation_id": str(self.correlation_id),
            "causation_id": str(self.causation_id) if self.causation_id else None,
            "payload": self.payload,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


def canonical_bytes(
    *,
    stream_id: str,
    stream_type: str,
    stream_version: int,
    event_id: uuid.UUID,
    event_type: str,
    schema_version: int,
    occurred_at: datetime,
    actor: Principal,
    jurisdiction: str,
    correlation_id: uuid.UUID,
    causation_id: uuid.UUID | None,
    payload: dict[str, Any],
    prev_hash: bytes,
) -> bytes:
    """RFC 8785 bytes of everything the hash chain protects."""
    document = {
        "stream_id": stream_id,
        "stream_type": stream_type,
        "stream_version": stream_version,
        "event_id": str(event_id),
        "event_type": event_type,
        "schema_version": schema_version,
        "occurred_at": utc_iso(occurred_at),
        "actor": actor.model_dump(mode="json"),
        "jurisdiction": jurisdiction,
        "correlation_id": str(correlation_id),
        "causation_id": str(causation_id) if causation_id else None,
        "payload": payload,
        "prev_hash": prev_hash.hex(),
    }
    return rfc8785.dumps(document)  # type: ignore[arg-type]


def chain_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()
