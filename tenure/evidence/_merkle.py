"""RFC 9162 (RFC 6962) Merkle trees: tree heads, proofs, verifiers and a compact range.

Hashing is exactly RFC 9162 §2.1.1: ``MTH({}) = SHA-256("")``, a leaf is
``SHA-256(0x00 || d)``, an inner node ``SHA-256(0x01 || left || right)``, and a tree of
``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``. The prefixes
keep a leaf from being read as a node (second preimage).

Invariants, each with its own ``raise``:

- Proof verifiers accept exactly RFC 9162 §2.1.3.2 / §2.1.4.2: an inclusion proof needs
  ``index < size`` and exactly ``inner + border`` hashes; a consistency proof needs
  ``0 < size1 <= size2``, an empty proof iff ``size1 == size2``, and the exact length.
  Every hash must be 32 bytes. Anything else is a :class:`ProofError`.
- :class:`CompactTree` keeps one hash per set bit of its size (O(log n) memory) and its
  root always equals :func:`root_hash` over every leaf appended so far.

The builders (:func:`root_hash`, :func:`inclusion_proof`, :func:`consistency_proof`) take
the full list of leaf hashes; they are for proofs over small trees and tests. The ledger
writer and the verifier stream through :class:`CompactTree`.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from .._errors import EvidenceError

__all__ = [
    "EMPTY_ROOT",
    "CompactTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

#: ``MTH({})``, the root of the empty tree.
EMPTY_ROOT = sha256(b"").digest()
_HASH_LEN = 32


class ProofError(EvidenceError):
    """A Merkle proof (or its parameters) does not prove what it claims."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """``MTH`` over a list of *leaf hashes* (not leaf data)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_hash(leaves[:k]), root_hash(leaves[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """``PATH(index, D[n])``: the audit path of leaf ``index`` in the tree of ``leaves``."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"inclusion_proof: index {index} is outside a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root_hash(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root_hash(leaves[:k])]


def consistency_proof(leaves: Sequence[bytes], size1: int) -> list[bytes]:
    """``PROOF(size1, D[n])``: proves the first ``size1`` leaves are a prefix of ``leaves``."""
    n = len(leaves)
    if not 0 < size1 <= n:
        raise ValueError(f"consistency_proof: size1 {size1} must be in 1..{n}")
    return _subproof(size1, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root_hash(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root_hash(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root_hash(leaves[:k])]


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for pos, h in enumerate(hashes):
        if not isinstance(h, bytes) or len(h) != _HASH_LEN:
            raise ProofError(f"{what}[{pos}]: expected a 32-byte hash, got {len(h)} bytes")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split an inclusion proof's length into (inner, border) as in RFC 9162."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2), or :class:`ProofError`."""
    if index < 0 or size < 0:
        raise ProofError(f"inclusion: negative index {index} or size {size}")
    if index >= size:
        raise ProofError(f"inclusion: index {index} is beyond tree size {size}")
    if not isinstance(leaf, bytes) or len(leaf) != _HASH_LEN:
        raise ProofError("inclusion: the leaf hash must be 32 bytes")
    _check_hashes("inclusion proof", proof)
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion: proof for index {index} in size {size} must have "
            f"{inner + border} hashes, got {len(proof)}"
        )
    h = leaf
    for i in range(inner):
        h = node_hash(proof[i], h) if (index >> i) & 1 else node_hash(h, proof[i])
    for sibling in proof[inner:]:
        h = node_hash(sibling, h)
    return h


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows ``leaf`` at ``index`` under ``root``."""
    got = root_from_inclusion(index, size, leaf, proof)
    if got != root:
        raise ProofError(f"inclusion: proof gives root {got.hex()}, expected {bytes(root).hex()}")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows tree ``size1`` is a prefix of ``size2``.

    Follows RFC 9162 §2.1.4.2 (and transparency-dev/merkle ``VerifyConsistency``).
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"consistency: negative sizes {size1}, {size2}")
    if size2 < size1:
        raise ProofError(f"consistency: size2 {size2} < size1 {size1}")
    _check_hashes("consistency proof", proof)
    if size1 == size2:
        if proof:
            raise ProofError("consistency: sizes are equal but the proof is not empty")
        if root1 != root2:
            raise ProofError("consistency: sizes are equal but the roots differ")
        return
    if size1 == 0:
        raise ProofError("consistency: a proof from the empty tree is meaningless")
    if not proof:
        raise ProofError("consistency: the proof is empty")
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    inner -= shift
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise ProofError(
            f"consistency: proof {size1}->{size2} must have {start + inner + border} hashes, "
            f"got {len(proof)}"
        )
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    # Root of the old tree from the proof.
    h1 = seed
    for i in range(inner):
        if (mask >> i) & 1:
            h1 = node_hash(rest[i], h1)
    for sibling in rest[inner:]:
        h1 = node_hash(sibling, h1)
    if h1 != root1:
        raise ProofError(f"consistency: proof gives old root {h1.hex()}, expected {root1.hex()}")
    # Root of the new tree from the proof.
    h2 = seed
    for i in range(inner):
        h2 = node_hash(rest[i], h2) if (mask >> i) & 1 else node_hash(h2, rest[i])
    for sibling in rest[inner:]:
        h2 = node_hash(sibling, h2)
    if h2 != root2:
        raise ProofError(f"consistency: proof gives new root {h2.hex()}, expected {root2.hex()}")


class CompactTree:
    """An append-only Merkle tree that keeps only its compact range (O(log n) hashes).

    ``append`` takes a *leaf hash*; ``root()`` is ``MTH`` of every leaf appended so far.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []  # roots of perfect subtrees, largest first
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves appended."""
        return self._size

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash at index ``size``."""
        n = self._size
        hashes = self._hashes
        while n & 1:
            leaf = sha256(b"\x01" + hashes.pop() + leaf).digest()
            n >>= 1
        hashes.append(leaf)
        self._size += 1

    def root(self) -> bytes:
        """``MTH`` over all leaves so far (``EMPTY_ROOT`` when empty)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = sha256(b"\x01" + left + h).digest()
        return h
