"""Merkle tree hashing, proofs and proof checks for an append-only transparency log.

The tree is the one of RFC 6962 §2.1 (restated in RFC 9162 §2.1): leaves and interior
nodes are hashed under distinct one-byte prefixes, so a leaf can never be passed off as a
node (second-preimage defence), and a tree of ``n`` leaves splits at the largest power of
two smaller than ``n``, so every past tree is a prefix of every later one and consistency
between two sizes can be proven with O(log n) hashes.

Everything here works on *leaf hashes* (``leaf_hash(entry)``), never on raw entries: the
log stores them, and proofs only ever need them. Proof generation raises ``ValueError``
for impossible arguments, since those are the caller's bug; proof verification returns
``False`` for anything a log or proof could get wrong, since that input is untrusted.
Only negative sizes or indices, which no wire format can carry, make a verifier raise.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "TiledTree",
    "consistency_proof",
    "consistency_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_pieces",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 digest: every leaf hash, node hash, root and proof element."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

EMPTY_ROOT = _sha256(b"").digest()
"""MTH({}) = SHA-256 of nothing: the root of the empty log (RFC 6962 §2.1)."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data); the 0x00 prefix keeps leaves distinct from interior nodes."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right); the 0x01 prefix keeps nodes distinct from leaves."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2): RFC 6962's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _subtree_root(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) in O(hi - lo) hashes without recursion.

    Hashing adjacent pairs level by level and carrying an odd last node up unchanged
    builds exactly RFC 6962's largest-power-of-two split: the left part of every split is
    a perfect subtree, so the pairing never crosses a split boundary.
    """
    if hi <= lo:
        return EMPTY_ROOT
    if hi - lo == 1:
        return leaf_hashes[lo]
    level = [node_hash(leaf_hashes[i], leaf_hashes[i + 1]) for i in range(lo, hi - 1, 2)]
    if (hi - lo) & 1:
        level.append(leaf_hashes[hi - 1])
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash MTH(D[n]) of RFC 6962 §2.1 over already-hashed leaves.

    Iterative and O(n), so a log of millions of entries does not hit the recursion limit.
    """
    return _subtree_root(leaf_hashes, 0, len(leaf_hashes))


def _check_non_negative(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


class CompactRange:
    """An append-only accumulator that keeps only the O(log n) right border of the tree.

    After ``n`` appends it holds one hash per set bit of ``n`` — the roots of the perfect
    subtrees that tile ``[0, n)``, largest first — which is all that is needed to extend
    the tree or compute its root. A verifier can thus recompute the root of a huge log by
    streaming its leaves, and can save ``(size, hashes)`` to resume later.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        """Resume from a saved state, or start empty; the state must be self-consistent."""
        _check_non_negative(size=size)
        border = list(hashes)
        if len(border) != size.bit_count():
            raise ValueError(f"a compact range of size {size} holds {size.bit_count()} hashes, got {len(border)}")
        self._size = size
        self._hashes = border

    @property
    def size(self) -> int:
        """How many leaves have been appended."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree roots tiling the range, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash; merges the equal-sized subtrees it completes (amortised O(1))."""
        merged = leaf_hash
        size = self._size
        while size & 1:
            merged = node_hash(self._hashes.pop(), merged)
            size >>= 1
        self._hashes.append(merged)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append every leaf hash in order; accepts a generator, so leaves need not be held."""
        for item in leaf_hashes:
            self.append(item)

    def root(self) -> bytes:
        """MTH of the leaves appended so far: the border folded from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        acc = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            acc = node_hash(left, acc)
        return acc


def inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form PATH(index, D[tree_size]), in proof order."""
    _check_non_negative(index=index, tree_size=tree_size)
    if index >= tree_size:
        raise ValueError(f"index {index} is outside a tree of size {tree_size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def consistency_ranges(first_size: int, second_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose subtree hashes form PROOF(first_size, D[second_size]) (RFC 6962
    §2.1.2, its SUBPROOF unrolled), in proof order. None when ``first_size`` is 0 or equals
    ``second_size``: both are trivially consistent."""
    _check_non_negative(first_size=first_size, second_size=second_size)
    if first_size > second_size:
        raise ValueError(f"first_size {first_size} is larger than second_size {second_size}")
    if first_size == 0 or first_size == second_size:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, second_size
    whole_old_tree = True  # SUBPROOF's b: the current subtree's root is first_size's root.
    while first_size != hi:
        mid = lo + _split(hi - lo)
        if first_size <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def perfect_pieces(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The perfect subtrees, as (level, index), from which MTH(D[lo:hi]) is built."""
    size = hi - lo
    if size & (size - 1) == 0 and lo % size == 0:
        level = size.bit_length() - 1
        yield level, lo >> level
        return
    k = _split(size)
    yield from perfect_pieces(lo, lo + k)
    yield from perfect_pieces(lo + k, hi)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """PATH(index, D[tree_size]) of RFC 6962 §2.1.1, leaf-side sibling first.

    ``tree_size`` may be smaller than ``len(leaf_hashes)``, to prove inclusion in a past
    tree head. O(tree_size) hashes in total; ``TiledTree`` answers from stored leaves.
    """
    if tree_size > len(leaf_hashes):
        raise ValueError(f"tree_size {tree_size} exceeds the {len(leaf_hashes)} leaves given")
    return [_subtree_root(leaf_hashes, lo, hi) for lo, hi in inclusion_ranges(index, tree_size)]


def consistency_proof(leaf_hashes: Sequence[bytes], first_size: int, second_size: int) -> list[bytes]:
    """PROOF(first_size, D[second_size]) of RFC 6962 §2.1.2 (its SUBPROOF, unrolled).

    Empty when ``first_size`` is 0 or equals ``second_size``: both are trivially consistent.
    """
    if second_size > len(leaf_hashes):
        raise ValueError(f"second_size {second_size} exceeds the {len(leaf_hashes)} leaves given")
    return [_subtree_root(leaf_hashes, lo, hi) for lo, hi in consistency_ranges(first_size, second_size)]


LeafReader = Callable[[int, int], Awaitable[Sequence[bytes]]]
"""Reads the leaf hashes of indexes [lo, hi) of a log, in order."""


class TiledTree:
    """Proofs over a log too large to load for each request: stored leaves plus cached subtrees.

    The log is append-only, so the hash of a perfect subtree, once all its leaves exist,
    never changes. Tiles of ``2**tile_level`` leaves are hashed once (read in runs of
    ``tiles_per_read``) and kept with the perfect subtrees above them: two hashes per tile
    in memory (about a third of a megabyte per million leaves at the default 1,024-leaf tiles). A proof
    then costs O(log n) cached hashes and at most two partial tiles read from the store.
    """

    def __init__(self, read_leaves: LeafReader, *, tile_level: int = 10, tiles_per_read: int = 64) -> None:
        self._read = read_leaves
        self._tile_level = tile_level
        self._tile = 1 << tile_level
        self._tiles_per_read = tiles_per_read
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._lock = asyncio.Lock()

    async def hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """MTH(D[lo:hi]) for each range; every ``hi`` must be within the stored log."""
        read: dict[int, Sequence[bytes]] = {}  # the tiles this call read: each at most once
        async with self._lock:  # concurrent first requests must not each hash the whole log
            return [await self._range(lo, hi, read) for lo, hi in ranges]

    async def _range(self, lo: int, hi: int, read: dict[int, Sequence[bytes]]) -> bytes:
        size = hi - lo
        if size & (size - 1) == 0 and lo % size == 0 and size >= self._tile:
            level = size.bit_length() - 1
            return await self._perfect(level, lo >> level)
        tile = lo >> self._tile_level
        if tile == (hi - 1) >> self._tile_level:  # within one tile: hash it from the tile's leaves
            start = tile << self._tile_level
            if tile not in read:
                read[tile] = await self._read(start, start + self._tile)  # the log's last tile may be short
            leaves = read[tile]
            if hi - start > len(leaves):
                raise ValueError(f"the log holds {start + len(leaves)} leaves, not {hi}")
            return _subtree_root(leaves, lo - start, hi - start)
        k = _split(size)
        return node_hash(await self._range(lo, lo + k, read), await self._range(lo + k, hi, read))

    async def _perfect(self, level: int, index: int) -> bytes:
        cached = self._nodes.get((level, index))
        if cached is not None:
            return cached
        shift = level - self._tile_level
        await self._hash_tiles(index << shift, (index + 1) << shift)
        return self._node(level, index)

    def _node(self, level: int, index: int) -> bytes:
        """A perfect subtree from its tiles, which are kept (recursing only through the levels above them)."""
        cached = self._nodes.get((level, index))
        if cached is None:
            cached = node_hash(self._node(level - 1, 2 * index), self._node(level - 1, 2 * index + 1))
            self._nodes[(level, index)] = cached
        return cached

    async def _hash_tiles(self, first: int, end: int) -> None:
        """Hash and keep the tiles [first, end) not yet kept, reading their leaves in runs."""
        missing = [t for t in range(first, end) if (self._tile_level, t) not in self._nodes]
        run: list[int] = []
        for tile in missing:
            if run and (tile != run[-1] + 1 or len(run) == self._tiles_per_read):
                await self._hash_run(run)
                run = []
            run.append(tile)
        if run:
            await self._hash_run(run)

    async def _hash_run(self, tiles: list[int]) -> None:
        leaves = await self._leaves(tiles[0] * self._tile, (tiles[-1] + 1) * self._tile)
        for offset, tile in enumerate(tiles):
            self._nodes[(self._tile_level, tile)] = _subtree_root(
                leaves, offset * self._tile, (offset + 1) * self._tile
            )

    async def _leaves(self, lo: int, hi: int) -> Sequence[bytes]:
        leaves = await self._read(lo, hi)
        if len(leaves) != hi - lo:
            raise ValueError(f"the log holds {len(leaves)} of the {hi - lo} leaves [{lo}, {hi})")
        return leaves


def _well_formed(*hashes: bytes) -> bool:
    return all(len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` at ``index`` of the tree with ``root``.

    The algorithm of RFC 9162 §2.1.3.2: it needs no leaves, only the O(log n) proof, and it
    rejects proofs that are too long or too short for the claimed position.
    """
    _check_non_negative(index=index, tree_size=tree_size)
    if index >= tree_size or not _well_formed(leaf_hash, root, *proof):
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first_size: int, second_size: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree with ``second_root`` extends the one with ``first_root``.

    The algorithm of RFC 9162 §2.1.4.2, so a client can accept a new tree head only if it
    is an append-only extension of the one it already trusts. Equal sizes need equal roots
    and an empty proof; an empty first tree needs the empty root and an empty proof.
    """
    _check_non_negative(first_size=first_size, second_size=second_size)
    if first_size > second_size or not _well_formed(first_root, second_root, *proof):
        return False
    if first_size == second_size:
        return not proof and first_root == second_root
    if first_size == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        # A power-of-two old tree is a node of the new one, so its root is not repeated.
        path.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
