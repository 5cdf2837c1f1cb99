"""RFC 9162 Merkle trees against the Certificate Transparency known answers.

Vectors: the CT 8-leaf test tree (RFC 6962 test data, as in transparency-dev/merkle
``rfc6962``) and the ``happy-path`` files of transparency-dev/merkle ``testdata/inclusion``
and ``testdata/consistency``, copied verbatim (base64 as there). The mutated probes are
built exactly as that repository's generator builds its ``testdata`` files
(``proof/verify_test.go``: corruptInclusionProof / corruptConsistencyProof), and a few of
the stored mutated files are copied verbatim as well.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from tenure.evidence._merkle import (
    EMPTY_ROOT,
    CompactTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

CT_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_HASHES = [leaf_hash(x) for x in CT_LEAVES]


def b(s: str) -> bytes:
    return base64.b64decode(s)


# transparency-dev/merkle testdata/inclusion/{0..4}/happy-path.json
INCLUSION_HAPPY = [
    (
        0,
        1,
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [],
    ),
    (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        5,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "QnGia+DYqE8L1UyMMC58s6O10fpngKQLzOKHNHfatlg=",
        [
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (
        2,
        3,
        "rra8/idLcKFPsGel5VeCZNsPqbUa9eC6FZFY8yngbnc=",
        "ApjRIpBtz8EIkstTpzmS/FufST6kybrbJ7eRtBJ6f+c=",
        ["+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU="],
    ),
    (
        1,
        5,
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
        "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
        [
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
        ],
    ),
]

# transparency-dev/merkle testdata/consistency/{0..4}/happy-path.json
CONSISTENCY_HAPPY = [
    (
        1,
        1,
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [],
    ),
    (
        1,
        8,
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    (
        6,
        8,
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        [
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
    (
        2,
        5,
        "+sVCA+fMaWzw38tCySodnbr3CtnmIfS9jZhmLwDjwSU=",
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ=",
        [
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "vBoGQ7EuTS18d5GPROD095qDi2z57FtcKD4fTYhZnms=",
        ],
    ),
    (
        6,
        7,
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
        "3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=",
        [
            "DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=",
            "sIaT7C5yFZcTBkHoIR5+7cy0wmQTlj7ubB4u0W/7Gl8=",
            "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc=",
        ],
    ),
]

# The "random" hash transparency-dev uses for random-root / inserted-component.
SOME_HASH = b("q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=")


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    assert CompactTree().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_ct_known_answer_roots(size: int) -> None:
    assert root_hash(CT_HASHES[:size]).hex() == CT_ROOTS[size - 1]


def test_leaf_and_node_prefixes_differ() -> None:
    """A leaf can never be mistaken for a node: 0x00 vs 0x01 domain separation."""
    a, c = leaf_hash(b"a"), leaf_hash(b"c")
    assert node_hash(a, c) != leaf_hash(a + c)


@pytest.mark.parametrize("vector", INCLUSION_HAPPY, ids=lambda v: f"{v[0]}-of-{v[1]}")
def test_inclusion_happy_path_vectors(vector: tuple[int, int, str, str, list[str]]) -> None:
    index, size, root, leaf, proof = vector
    hashes = [b(p) for p in proof]
    verify_inclusion(index, size, b(leaf), hashes, b(root))
    assert inclusion_proof(CT_HASHES[:size], index) == hashes
    assert b(leaf) == CT_HASHES[index]


@pytest.mark.parametrize("vector", CONSISTENCY_HAPPY, ids=lambda v: f"{v[0]}-to-{v[1]}")
def test_consistency_happy_path_vectors(vector: tuple[int, int, str, str, list[str]]) -> None:
    size1, size2, root1, root2, proof = vector
    hashes = [b(p) for p in proof]
    verify_consistency(size1, size2, hashes, b(root1), b(root2))
    assert consistency_proof(CT_HASHES[:size2], size1) == hashes


def _flip(h: bytes, mask: int) -> bytes:
    return bytes([h[0] ^ mask]) + h[1:]


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """transparency-dev/merkle corruptInclusionProof: (name, index, size, root, leaf, proof)."""
    probes = [
        ("leafIdx-1", index - 1, size, root, leaf, proof),
        ("leafIdx+1", index + 1, size, root, leaf, proof),
        ("leafIdx^2", index ^ 2, size, root, leaf, proof),
        ("treeSize*2", index, size * 2, root, leaf, proof),
        ("treeSize div 2", index, size // 2, root, leaf, proof),
        ("wrong-leaf", index, size, root, b"WrongLeaf", proof),
        ("empty-root", index, size, EMPTY_ROOT, leaf, proof),
        ("random-root", index, size, SOME_HASH, leaf, proof),
        ("trailing-garbage", index, size, root, leaf, [*proof, b""]),
        ("trailing-root", index, size, root, leaf, [*proof, root]),
        ("preceding-garbage", index, size, root, leaf, [b"", *proof]),
        ("preceding-root", index, size, root, leaf, [root, *proof]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 8)
        probes.append((f"modified-proof[{i}]-bit-3", index, size, root, leaf, wrong))
    if proof:
        probes.append(("removed-component", index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append(
            ("inserted-component", index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]])
        )
    probes.append(
        ("empty-proof", index, size, root, leaf, [])
        if proof
        else ("extra-proof", index, size, root, leaf, [root])
    )
    return probes


INCLUSION_MUTATIONS = [
    (f"{v[0]}-of-{v[1]}/{p[0]}", p)
    for v in INCLUSION_HAPPY
    for p in _inclusion_probes(v[0], v[1], [b(x) for x in v[4]], b(v[2]), b(v[3]))
]


@pytest.mark.parametrize(
    ("name", "probe"), INCLUSION_MUTATIONS, ids=[m[0] for m in INCLUSION_MUTATIONS]
)
def test_inclusion_mutations_are_rejected(
    name: str, probe: tuple[str, int, int, bytes, bytes, list[bytes]]
) -> None:
    _, index, size, root, leaf, proof = probe
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, root)


def _consistency_probes(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """transparency-dev/merkle corruptConsistencyProof: (name, size1, size2, r1, r2, proof)."""
    probes = [
        ("size1-1", size1 - 1, size2, root1, root2, proof),
        ("size1+1", size1 + 1, size2, root1, root2, proof),
        ("size1^2", size1 ^ 2, size2, root1, root2, proof),
        ("size2*2", size1, size2 * 2, root1, root2, proof),
        ("size2 div 2", size1, size2 // 2, root1, root2, proof),
        ("wrong-root1", size1, size2, b"WrongRoot", root2, proof),
        ("wrong-root2", size1, size2, root1, b"WrongRoot", proof),
        ("swapped-roots", size1, size2, root2, root1, proof),
        ("empty-proof", size1, size2, root1, root2, []),
        ("trailing-garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing-root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing-root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding-garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding-root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding-root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding-proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 16)
        probes.append((f"modified-proof[{i}]-bit-4", size1, size2, root1, root2, wrong))
    probes.append(("truncated-proof", size1, size2, root1, root2, proof[:-1]))
    return probes


CONSISTENCY_MUTATIONS = [
    (f"{v[0]}-to-{v[1]}/{p[0]}", p)
    for v in CONSISTENCY_HAPPY
    if v[0] != v[1]  # equal sizes have an empty proof: nothing to corrupt
    for p in _consistency_probes(v[0], v[1], [b(x) for x in v[4]], b(v[2]), b(v[3]))
]


@pytest.mark.parametrize(
    ("name", "probe"), CONSISTENCY_MUTATIONS, ids=[m[0] for m in CONSISTENCY_MUTATIONS]
)
def test_consistency_mutations_are_rejected(
    name: str, probe: tuple[str, int, int, bytes, bytes, list[bytes]]
) -> None:
    _, size1, size2, root1, root2, proof = probe
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)


# Stored mutated files of transparency-dev/merkle, copied verbatim.
STORED_INCLUSION_FILES = {
    "inclusion/1/modified-proof[0]-bit-3": (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [
            "nqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    "inclusion/1/inserted-component": (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "q6yroAAAAAAAAAAAAAAAAAAAAAAAAAAAAGAGHgASNFY=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    "inclusion/1/preceding-root": (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [
            "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    "inclusion/1/wrong-leaf": (
        0,
        8,
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
        "V3JvbmdMZWFm",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
    "inclusion/1/empty-root": (
        0,
        8,
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
        [
            "lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=",
            "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
            "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ=",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(STORED_INCLUSION_FILES))
def test_stored_transparency_dev_inclusion_mutations_are_rejected(name: str) -> None:
    index, size, root, leaf, proof = STORED_INCLUSION_FILES[name]
    with pytest.raises(ProofError):
        verify_inclusion(index, size, b(leaf), [b(p) for p in proof], b(root))


def test_stored_consistency_size2_div_2_and_empty_proof_are_rejected() -> None:
    r1 = b("bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=")
    r8 = b("XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=")
    proof = [b(x) for x in CONSISTENCY_HAPPY[1][4]]
    with pytest.raises(ProofError):
        verify_consistency(1, 4, proof, r1, r8)  # consistency/1/size2-div-2.json
    with pytest.raises(ProofError):
        verify_consistency(1, 8, [], r1, r8)  # consistency/1/empty-proof.json
    with pytest.raises(ProofError):
        verify_consistency(1, 8, [b"", *proof], r1, r8)  # consistency/1/preceding-garbage


def _distinct_leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_all_pairs_consistency_1_to_64_verify_and_reject_a_wrong_root() -> None:
    """Every honest proof (m, n), 1 <= m <= n <= 64, verifies; a different old root never does."""
    leaves = _distinct_leaves(64)
    roots = [root_hash(leaves[:n]) for n in range(65)]
    for n in range(1, 65):
        for m in range(1, n + 1):
            proof = consistency_proof(leaves[:n], m)
            verify_consistency(m, n, proof, roots[m], roots[n])
            if m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, proof, roots[m - 1] if m > 1 else SOME_HASH, roots[n])
                with pytest.raises(ProofError):
                    verify_consistency(m, n, proof, roots[m], roots[n - 1])


def test_inclusion_of_every_leaf_in_every_tree_up_to_64() -> None:
    leaves = _distinct_leaves(64)
    for n in range(1, 65):
        root = root_hash(leaves[:n])
        for i in range(n):
            proof = inclusion_proof(leaves[:n], i)
            verify_inclusion(i, n, leaves[i], proof, root)
            other = leaves[(i + 1) % n]
            if n > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(i, n, other, proof, root)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: verify_consistency(0, 5, [SOME_HASH], EMPTY_ROOT, SOME_HASH),
        lambda: verify_consistency(5, 4, [], SOME_HASH, SOME_HASH),
        lambda: verify_consistency(3, 3, [SOME_HASH], SOME_HASH, SOME_HASH),
        lambda: verify_consistency(3, 3, [], SOME_HASH, EMPTY_ROOT),
        lambda: verify_inclusion(3, 3, SOME_HASH, [], SOME_HASH),
        lambda: verify_inclusion(0, 0, SOME_HASH, [], SOME_HASH),
    ],
    ids=[
        "from-empty",
        "size2<size1",
        "equal-sizes-nonempty-proof",
        "equal-sizes-other-root",
        "index==size",
        "empty-tree",
    ],
)
def test_meaningless_proof_parameters_are_rejected(bad: Callable[[], None]) -> None:
    with pytest.raises(ProofError):
        bad()


def test_compact_tree_root_equals_mth_at_every_size() -> None:
    """The writer's O(log n) compact range agrees with the recursive MTH at sizes 0..300."""
    leaves = _distinct_leaves(300)
    tree = CompactTree()
    assert tree.root() == root_hash([])
    for n, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.size == n
        assert tree.root() == root_hash(leaves[:n])
        assert len(tree._hashes) == bin(n).count("1")  # one hash per set bit: O(log n)
