"""Audit endpoints on every service: checkpoints, the signing key, inclusion and consistency proofs.

They reveal hashes, never payloads, so they need no token: anyone holding a checkpoint can
check that an event is in the log (inclusion) and that the log only grew (consistency),
with any RFC 9162 verifier.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse

from shared import merkle
from shared.errors import IntegrityFailure, InvalidInput, NotFound
from shared.http import PG_BIGINT_MAX

router = APIRouter(prefix="/audit", tags=["audit"])

# Sizes and indexes are bigint in the store; a larger number is a 422, not a database error.
Index = Annotated[int, Query(ge=0, le=PG_BIGINT_MAX)]
Size = Annotated[int, Query(ge=1, le=PG_BIGINT_MAX)]


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _checkpoint_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "origin": row["origin"],
        "tree_size": row["tree_size"],
        "root_hash": bytes(row["root_hash"]).hex(),
        "signed_at": row["signed_at"].isoformat(),
        "key_id": row["key_id"],
        "body": row["body"],
        "signature": base64.b64encode(bytes(row["signature"])).decode(),
    }


@router.get("/checkpoints", summary="Signed checkpoints, oldest first")
async def checkpoints(
    request: Request,
    after_size: Index = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = await _pool(request).fetch(
        "SELECT * FROM checkpoints WHERE tree_size > $1 ORDER BY tree_size LIMIT $2", after_size, limit
    )
    return {"checkpoints": [_checkpoint_view(r) for r in rows]}


@router.get("/checkpoints/latest", summary="The latest signed checkpoint")
async def latest_checkpoint(request: Request) -> dict[str, Any]:
    row = await _pool(request).fetchrow("SELECT * FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
    if row is None:
        raise NotFound("no_checkpoint", "no checkpoint has been signed yet")
    return _checkpoint_view(row)


@router.get("/public-key", summary="The Ed25519 key that signs this service's checkpoints (PEM)")
async def public_key(request: Request) -> PlainTextResponse:
    sealer = request.app.state.sealer
    pem = sealer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PlainTextResponse(pem.decode(), headers={"X-Key-Id": sealer.key_id})


def _tree(request: Request) -> merkle.TiledTree:
    """The service's log as a tiled tree, kept for the life of the process (the log only grows)."""
    tree: merkle.TiledTree | None = getattr(request.app.state, "log_tree", None)
    if tree is None:
        pool = _pool(request)

        async def read_leaves(lo: int, hi: int) -> list[bytes]:
            rows = await pool.fetch(
                "SELECT leaf_hash FROM log_entries WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index", lo, hi
            )
            return [bytes(r[0]) for r in rows]

        tree = request.app.state.log_tree = merkle.TiledTree(read_leaves)
    return tree


async def _hashes(request: Request, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The subtree hashes of ``ranges``; a log with a hole in its indexes cannot prove anything."""
    try:
        return await _tree(request).hashes(ranges)
    except ValueError as exc:
        raise IntegrityFailure("log_not_dense", f"the log's indexes have a gap: {exc}") from exc


async def _check_size(request: Request, size: int) -> None:
    held = await _pool(request).fetchval("SELECT coalesce(max(log_index) + 1, 0) FROM log_entries")
    if size > held:
        raise InvalidInput("tree_size_too_large", f"the log holds {held} entries, fewer than {size}")


@router.get("/entries/{position}", summary="The log index and leaf hash of a stored event")
async def entry(request: Request, position: Annotated[int, Path(ge=1, le=PG_BIGINT_MAX)]) -> dict[str, Any]:
    row = await _pool(request).fetchrow("SELECT * FROM log_entries WHERE position = $1", position)
    if row is None:
        raise NotFound("not_sealed", f"the event at position {position} is not sealed (yet)")
    return {"position": position, "log_index": row["log_index"], "leaf_hash": bytes(row["leaf_hash"]).hex()}


@router.get("/proofs/inclusion", summary="Inclusion proof of log entry `log_index` in the tree of `tree_size`")
async def inclusion(request: Request, log_index: Index, tree_size: Size) -> dict[str, Any]:
    if log_index >= tree_size:
        raise InvalidInput("index_out_of_range", "log_index must be below tree_size")
    await _check_size(request, tree_size)
    ranges = merkle.inclusion_ranges(log_index, tree_size)
    leaf, root, *proof = await _hashes(request, [(log_index, log_index + 1), (0, tree_size), *ranges])
    return {
        "log_index": log_index,
        "tree_size": tree_size,
        "leaf_hash": leaf.hex(),
        "root_hash": root.hex(),
        "proof": [p.hex() for p in proof],
    }


@router.get("/proofs/consistency", summary="Consistency proof between trees of size `first` and `second`")
async def consistency(request: Request, first: Size, second: Size) -> dict[str, Any]:
    if first > second:
        raise InvalidInput("sizes_out_of_order", "first must not exceed second")
    await _check_size(request, second)
    ranges = merkle.consistency_ranges(first, second)
    first_root, second_root, *proof = await _hashes(request, [(0, first), (0, second), *ranges])
    return {
        "first": first,
        "second": second,
        "first_root": first_root.hex(),
        "second_root": second_root.hex(),
        "proof": [p.hex() for p in proof],
    }
