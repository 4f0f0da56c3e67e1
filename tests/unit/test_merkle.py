"""The RFC 6962 / RFC 9162 Merkle tree: published test vectors, then properties.

Known-answer vectors are copied from transparency-dev/merkle (the Go library that
Trillian and Tessera use, carrying the certificate-transparency reference data):

* proof/verify_test.go @ 02194e9afb6c1d95b5381350007963aa70fff472 — ``leaves``,
  ``roots``, ``inclusionProofs``, ``consistencyProofs`` and the corruption probes;
* rfc6962/rfc6962_test.go @ 78493b07ef9b552e3379abf9e23d4da26fbe797c — hasher vectors.

Nothing below is filled in by running this module: every expected hash is either one of
those published values or comes from the naive recursive definitions in this file.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.merkle import (
    EMPTY_ROOT,
    CompactRange,
    TiledTree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# proof/verify_test.go: `leaves` (inputs, before leaf hashing) and `roots` for sizes 1..8.
LEAVES = [
    h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# `inclusionProofs`: (index, tree_size, path). The Go table numbers leaves from 1 and
# tests `leaf - 1`; the indices here are already 0-based.
INCLUSION_VECTORS = [
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
# `consistencyProofs`: (first_size, second_size, proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")  # `sha256SomeHash`


def leaf_hashes(count: int) -> list[bytes]:
    return [leaf_hash(data) for data in LEAVES[:count]]


# --- Hashing (rfc6962/rfc6962_test.go) ------------------------------------------------


def test_hasher_vectors() -> None:
    assert h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == h("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert leaf_hash(b"") != EMPTY_ROOT  # an empty log is not a log of one empty entry


def test_leaf_and_node_domains_are_separated() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert a != b
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) != node_hash(b, a)


# --- Known roots and proofs (proof/verify_test.go) ------------------------------------


@pytest.mark.parametrize("size", range(1, 9))
def test_known_roots(size: int) -> None:
    hashes = leaf_hashes(size)
    assert root(hashes) == ROOTS[size - 1]
    compact = CompactRange()
    compact.extend(hashes)
    assert compact.root() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_known_inclusion_proofs(index: int, size: int, path: list[bytes]) -> None:
    hashes = leaf_hashes(8)
    assert inclusion_proof(hashes, index, size) == path
    assert verify_inclusion(hashes[index], index, size, path, ROOTS[size - 1])

    # Ported `corruptInclusionProof` probes: each must be refused.
    good_root, leaf = ROOTS[size - 1], hashes[index]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (index + 1, size, good_root, leaf, path),
        (index ^ 2, size, good_root, leaf, path),
        (index, size * 2, good_root, leaf, path),
        (index, size // 2, good_root, leaf, path),
        (index, size, good_root, b"WrongLeaf", path),
        (index, size, EMPTY_ROOT, leaf, path),
        (index, size, SOME_HASH, leaf, path),
        (index, size, good_root, leaf, [*path, b""]),
        (index, size, good_root, leaf, [*path, good_root]),
        (index, size, good_root, leaf, [b"", *path]),
        (index, size, good_root, leaf, [good_root, *path]),
    ]
    if index > 0:
        probes.append((index - 1, size, good_root, leaf, path))
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, good_root, leaf, flipped))
    if path:
        probes.append((index, size, good_root, leaf, path[:-1]))
    if len(path) > 1:
        probes.append((index, size, good_root, leaf, [path[0], SOME_HASH, *path[1:]]))
    for p_index, p_size, p_root, p_leaf, p_path in probes:
        assert not verify_inclusion(p_leaf, p_index, p_size, p_path, p_root), (p_index, p_size)


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY_VECTORS)
def test_known_consistency_proofs(first: int, second: int, proof: list[bytes]) -> None:
    hashes = leaf_hashes(8)
    assert consistency_proof(hashes, first, second) == proof
    root1, root2 = ROOTS[first - 1], ROOTS[second - 1]
    assert verify_consistency(first, second, root1, root2, proof)
    if not proof:
        return

    # Ported `corruptConsistencyProof` probes: each must be refused.
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (first - 1, second, root1, root2, proof),
        (first + 1, second, root1, root2, proof),
        (first ^ 2, second, root1, root2, proof),
        (first, second * 2, root1, root2, proof),
        (first, second // 2, root1, root2, proof),
        (first, second, b"WrongRoot", root2, proof),
        (first, second, root1, b"WrongRoot", proof),
        (first, second, root2, root1, proof),
        (first, second, root1, root2, []),
        (first, second, root1, root2, [*proof, b""]),
        (first, second, root1, root2, [*proof, root1]),
        (first, second, root1, root2, [*proof, root2]),
        (first, second, root1, root2, [b"", *proof]),
        (first, second, root1, root2, [root1, *proof]),
        (first, second, root1, root2, [root2, *proof]),
        (first, second, root1, root2, [proof[0], *proof]),
        (first, second, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, root1, root2, flipped))
    for p_first, p_second, p_root1, p_root2, p_proof in probes:
        assert not verify_consistency(p_first, p_second, p_root1, p_root2, p_proof), (p_first, p_second)


def test_trivial_consistency() -> None:
    """verify_test.go's `TestVerifyConsistency` table, with the roots a client would hold."""
    r1 = ROOTS[0]
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 1, EMPTY_ROOT, r1, [])
    assert verify_consistency(1, 1, r1, r1, [])
    assert not verify_consistency(1, 1, r1, ROOTS[1], [])  # same size, different roots
    assert not verify_consistency(1, 0, r1, EMPTY_ROOT, [])  # time travel
    assert not verify_consistency(2, 1, ROOTS[1], r1, [])
    assert not verify_consistency(1, 2, r1, ROOTS[1], [])  # empty proof
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])  # proof must be empty
    assert not verify_consistency(0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, r1, r1, [])  # the empty tree's root is SHA-256("")


def test_single_entry_inclusion() -> None:
    """verify_test.go's `TestVerifyInclusionSingleEntry`: the leaf hash is the root."""
    hashed = leaf_hash(b"data")
    assert verify_inclusion(hashed, 0, 1, [], hashed)
    assert not verify_inclusion(b"", 0, 1, [], hashed)
    assert not verify_inclusion(hashed, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], b"")
    for index, size in ((0, 0), (1, 0), (2, 1)):
        assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


# --- Argument errors -------------------------------------------------------------------


def test_out_of_range_arguments_raise() -> None:
    hashes = leaf_hashes(8)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: inclusion_proof(hashes, 8, 8), "outside a tree of size 8"),
        (lambda: inclusion_proof(hashes, 0, 0), "outside a tree of size 0"),
        (lambda: inclusion_proof(hashes, 0, 9), "exceeds the 8 leaves"),
        (lambda: inclusion_proof(hashes, -1, 8), "index must be >= 0"),
        (lambda: consistency_proof(hashes, 5, 4), "larger than second_size"),
        (lambda: consistency_proof(hashes, 1, 9), "exceeds the 8 leaves"),
        (lambda: consistency_proof(hashes, -1, 4), "first_size must be >= 0"),
        (lambda: verify_inclusion(hashes[0], -1, 8, [], ROOTS[7]), "index must be >= 0"),
        (lambda: verify_inclusion(hashes[0], 0, -8, [], ROOTS[7]), "tree_size must be >= 0"),
        (lambda: verify_consistency(-1, 8, ROOTS[0], ROOTS[7], []), "first_size must be >= 0"),
        (lambda: verify_consistency(1, -8, ROOTS[0], ROOTS[7], []), "second_size must be >= 0"),
        (lambda: CompactRange(3, [ROOTS[0]]), "size 3 holds 2 hashes"),
        (lambda: CompactRange(-1), "size must be >= 0"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_consistency_from_empty_and_to_self_is_empty() -> None:
    hashes = leaf_hashes(8)
    assert consistency_proof(hashes, 0, 8) == []
    assert consistency_proof(hashes, 0, 0) == []
    assert consistency_proof(hashes, 8, 8) == []
    assert consistency_proof(hashes, 3, 3) == []


def test_compact_range_resumes_from_saved_state() -> None:
    hashes = leaf_hashes(8)
    first = CompactRange()
    first.extend(hashes[:5])
    assert first.size == 5
    assert len(first.hashes) == 2  # one per set bit of 5 = 0b101
    resumed = CompactRange(first.size, first.hashes)
    resumed.extend(hashes[5:])
    assert resumed.root() == ROOTS[7]
    assert resumed.hashes == (ROOTS[7],)


# --- Properties against the RFC's recursive definitions --------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, transcribed literally."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]), transcribed literally."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b), transcribed literally."""
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def unique_leaves(count: int, salt: bytes) -> list[bytes]:
    """Distinct leaves: with duplicates a proof for one index can honestly fit another."""
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(count)]


def flip(value: bytes, rnd: random.Random) -> bytes:
    """``value`` with one byte at a random position changed."""
    at = rnd.randrange(len(value))
    return value[:at] + bytes([value[at] ^ rnd.randrange(1, 256)]) + value[at + 1 :]


sizes = st.integers(min_value=1, max_value=200)
salts = st.binary(max_size=8)
rnds = st.randoms(use_true_random=False)


@settings(max_examples=30, deadline=None)
@given(n=sizes, salt=salts, rnd=rnds)
def test_root_and_compact_range_match_the_definition_for_every_prefix(n: int, salt: bytes, rnd: random.Random) -> None:
    hashes = unique_leaves(n, salt)
    compact = CompactRange()
    assert compact.root() == root([]) == EMPTY_ROOT
    for size in range(1, n + 1):
        compact.append(hashes[size - 1])
        assert compact.size == size
        assert len(compact.hashes) == size.bit_count()
        assert compact.root() == root(hashes[:size])
    assert root(hashes) == ref_mth(hashes)
    some = rnd.randrange(n + 1)
    assert root(hashes[:some]) == ref_mth(hashes[:some])


@settings(max_examples=30, deadline=None)
@given(n=sizes, salt=salts, rnd=rnds)
def test_inclusion_proofs_verify_and_tampering_is_caught(n: int, salt: bytes, rnd: random.Random) -> None:
    hashes = unique_leaves(2 * n + 1, salt)
    tree = hashes[:n]
    good_root = root(tree)
    roots_by_size: dict[int, bytes] = {}

    def root_of(size: int) -> bytes:
        if size not in roots_by_size:
            roots_by_size[size] = root(hashes[:size])
        return roots_by_size[size]

    for index in range(n):
        leaf = tree[index]
        proof = inclusion_proof(tree, index, n)
        assert proof == ref_path(index, tree)
        assert verify_inclusion(leaf, index, n, proof, good_root)

        if proof:
            at = rnd.randrange(len(proof))
            tampered = [*proof[:at], flip(proof[at], rnd), *proof[at + 1 :]]
            assert not verify_inclusion(leaf, index, n, tampered, good_root)
            assert not verify_inclusion(leaf, index, n, proof[:-1], good_root)
        assert not verify_inclusion(flip(leaf, rnd), index, n, proof, good_root)
        assert not verify_inclusion(leaf, index, n, proof, flip(good_root, rnd))
        assert not verify_inclusion(leaf, index, n, [*proof, good_root], good_root)

        for wrong in {index - 1, index + 1, index ^ 1, index ^ 2, rnd.randrange(n)} - {index}:
            if wrong >= 0:
                assert not verify_inclusion(leaf, wrong, n, proof, good_root), wrong
        # A wrong size is caught against that size's genuine root. (Against this root it
        # need not be: RFC 9162 only checks the path's shape, and e.g. leaf 0's path in
        # trees of 5 and 6 leaves has the same shape. The root binds the size.)
        for wrong in {n - 1, n + 1, 2 * n, n // 2, index, rnd.randrange(1, 2 * n + 2)} - {n}:
            if wrong >= 1:
                assert not verify_inclusion(leaf, index, wrong, proof, root_of(wrong)), wrong


@settings(max_examples=30, deadline=None)
@given(n=sizes, salt=salts, rnd=rnds)
def test_consistency_proofs_verify_and_tampering_is_caught(n: int, salt: bytes, rnd: random.Random) -> None:
    hashes = unique_leaves(2 * n + 1, salt)
    tree = hashes[:n]
    prefix_roots = [EMPTY_ROOT]
    compact = CompactRange()
    for item in hashes:
        compact.append(item)
        prefix_roots.append(compact.root())
    second_root = prefix_roots[n]
    assert second_root == ref_mth(tree)

    assert consistency_proof(tree, 0, n) == []
    assert verify_consistency(0, n, EMPTY_ROOT, second_root, [])

    for m in range(1, n + 1):
        first_root = prefix_roots[m]
        proof = consistency_proof(tree, m, n)
        assert proof == ([] if m == n else ref_subproof(m, tree, True))
        assert verify_consistency(m, n, first_root, second_root, proof)

        assert not verify_consistency(m, n, flip(first_root, rnd), second_root, proof)
        assert not verify_consistency(m, n, first_root, flip(second_root, rnd), proof)
        assert not verify_consistency(m, n, first_root, second_root, [*proof, second_root])
        assert not verify_consistency(m, n, first_root, second_root, [first_root, *proof])
        if proof:
            at = rnd.randrange(len(proof))
            tampered = [*proof[:at], flip(proof[at], rnd), *proof[at + 1 :]]
            assert not verify_consistency(m, n, first_root, second_root, tampered)
            assert not verify_consistency(m, n, first_root, second_root, proof[:-1])
            assert not verify_consistency(m, n, first_root, second_root, [])
            assert not verify_consistency(m, n, second_root, first_root, proof)

        # Another genuine tree head of the same log must not pass with this proof.
        for wrong in {m - 1, m + 1, m ^ 2, rnd.randrange(1, n + 1)} - {m}:
            if 1 <= wrong <= n:
                assert not verify_consistency(wrong, n, prefix_roots[wrong], second_root, proof), wrong
        for wrong in {n - 1, n + 1, 2 * n, rnd.randrange(m, 2 * n + 2)} - {n}:
            if wrong >= m:
                assert not verify_consistency(m, wrong, first_root, prefix_roots[wrong], proof), wrong


# --- Scale --------------------------------------------------------------------------


def test_million_leaf_compact_range() -> None:
    """A verifier streams a million entries through O(log n) state and gets the root."""
    count = 1_000_000
    hashes = [leaf_hash(i.to_bytes(8, "big")) for i in range(count)]
    started = time.perf_counter()
    compact = CompactRange()
    compact.extend(hashes)
    streamed = compact.root()
    elapsed = time.perf_counter() - started
    assert len(compact.hashes) == count.bit_count() == 7
    assert streamed == root(hashes)
    assert elapsed < 5, f"CompactRange over {count} leaves took {elapsed:.2f}s"


# --- TiledTree: the same proofs from stored leaves and kept subtrees --------------------------


class CountingLog:
    """A log's leaves behind the reader ``TiledTree`` takes, counting the leaves read."""

    def __init__(self, size: int) -> None:
        self.leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
        self.read = 0

    async def __call__(self, lo: int, hi: int) -> list[bytes]:
        self.read += len(self.leaves[lo:hi])
        return self.leaves[lo:hi]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 31, 64, 65, 100, 257])
async def test_tiled_tree_proofs_equal_the_proofs_from_all_leaves(size: int) -> None:
    log = CountingLog(size)
    tree = TiledTree(log, tile_level=2, tiles_per_read=3)  # 4-leaf tiles: every path crosses tiles
    leaves = log.leaves
    for second in range(1, size + 1):
        (whole,) = await tree.hashes([(0, second)])
        assert whole == root(leaves[:second])
        for index in {0, second // 2, second - 1}:
            assert await tree.hashes(inclusion_ranges(index, second)) == inclusion_proof(leaves, index, second)
        for first in {1, second // 3, second - 1} - {0}:
            assert await tree.hashes(consistency_ranges(first, second)) == consistency_proof(leaves, first, second)


async def test_tiled_tree_reads_each_leaf_once_then_only_partial_tiles() -> None:
    log = CountingLog(100_003)
    tree = TiledTree(log)  # 1,024-leaf tiles
    size = len(log.leaves)
    first = await tree.hashes([(0, size), *inclusion_ranges(5, size)])
    assert first[0] == root(log.leaves)
    assert log.read <= size + 2 * 1024  # every leaf once, and parts of two tiles for the path
    for index in (0, 77_777, size - 1):
        log.read = 0
        proof = await tree.hashes(inclusion_ranges(index, size))
        assert verify_inclusion(log.leaves[index], index, size, proof, first[0])
        assert log.read <= 2 * 1024  # the proven leaf's tile and the log's last, short one
    log.read = 0
    proof = await tree.hashes(consistency_ranges(50_000, size))
    assert verify_consistency(50_000, size, root(log.leaves[:50_000]), first[0], proof)
    assert log.read <= 2 * 1024


async def test_tiled_tree_refuses_a_range_beyond_the_log() -> None:
    tree = TiledTree(CountingLog(10), tile_level=2)
    with pytest.raises(ValueError, match="holds 2 of the 4 leaves"):
        await tree.hashes([(0, 12)])
    with pytest.raises(ValueError, match="holds 10 leaves, not 11"):
        await tree.hashes([(8, 11)])
