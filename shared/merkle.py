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

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
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


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """PATH(index, D[tree_size]) of RFC 6962 §2.1.1, leaf-side sibling first.

    ``tree_size`` may be smaller than ``len(leaf_hashes)``, to prove inclusion in a past
    tree head. Walks down the splits iteratively; O(tree_size) hashes in total.
    """
    _check_non_negative(index=index, tree_size=tree_size)
    if tree_size > len(leaf_hashes):
        raise ValueError(f"tree_size {tree_size} exceeds the {len(leaf_hashes)} leaves given")
    if index >= tree_size:
        raise ValueError(f"index {index} is outside a tree of size {tree_size}")
    siblings: list[bytes] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            siblings.append(_subtree_root(leaf_hashes, mid, hi))
            hi = mid
        else:
            siblings.append(_subtree_root(leaf_hashes, lo, mid))
            lo = mid
    siblings.reverse()
    return siblings


def consistency_proof(leaf_hashes: Sequence[bytes], first_size: int, second_size: int) -> list[bytes]:
    """PROOF(first_size, D[second_size]) of RFC 6962 §2.1.2 (its SUBPROOF, unrolled).

    Empty when ``first_size`` is 0 or equals ``second_size``: both are trivially consistent.
    """
    _check_non_negative(first_size=first_size, second_size=second_size)
    if second_size > len(leaf_hashes):
        raise ValueError(f"second_size {second_size} exceeds the {len(leaf_hashes)} leaves given")
    if first_size > second_size:
        raise ValueError(f"first_size {first_size} is larger than second_size {second_size}")
    if first_size == 0 or first_size == second_size:
        return []
    nodes: list[bytes] = []
    lo, hi = 0, second_size
    whole_old_tree = True  # SUBPROOF's b: the current subtree's root is first_size's root.
    while first_size != hi:
        mid = lo + _split(hi - lo)
        if first_size <= mid:
            nodes.append(_subtree_root(leaf_hashes, mid, hi))
            hi = mid
        else:
            nodes.append(_subtree_root(leaf_hashes, lo, mid))
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        nodes.append(_subtree_root(leaf_hashes, lo, hi))
    nodes.reverse()
    return nodes


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
