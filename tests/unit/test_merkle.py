"""RFC 9162 Merkle trees: reference roots, every proof for small trees, mutated proofs fail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.ledger.merkle import (
    Frontier,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The RFC 6962 reference leaves and the roots of their first n leaves (n = 0..8).
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.requirement("R22")
@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_rfc_6962_reference_vectors(size: int) -> None:
    tree = MemoryTree(leaf_hash(x) for x in LEAVES[:size])
    assert root(tree.node, size).hex() == ROOTS[size]
    assert tree.frontier.root().hex() == ROOTS[size]


def _tree(size: int) -> MemoryTree:
    return MemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(size))


BIG = _tree(64)


@pytest.mark.parametrize("size", range(1, 65))
def test_every_inclusion_proof_up_to_64_leaves_verifies(size: int) -> None:
    head = root(BIG.node, size)
    for index in range(size):
        proof = inclusion_proof(BIG.node, index, size)
        assert verify_inclusion(BIG.node(0, index), index, size, proof, head)
        assert not verify_inclusion(BIG.node(0, index), index, size, proof, root(BIG.node,
                                    size - 1) if size > 1 else b"\x00" * 32)


@pytest.mark.parametrize("new", range(1, 65))
def test_every_consistency_proof_up_to_64_leaves_verifies(new: int) -> None:
    new_root = root(BIG.node, new)
    for old in range(0, new + 1):
        proof = consistency_proof(BIG.node, old, new)
        assert verify_consistency(old, new, root(BIG.node, old), new_root, proof)


def test_the_frontier_resumes_from_stored_nodes() -> None:
    for size in range(0, 40):
        frontier = Frontier.load(BIG.node, size)
        assert frontier.root() == root(BIG.node, size)
        frontier.extend(BIG.node(0, i) for i in range(size, 64))
        assert frontier.root() == root(BIG.node, 64)


def _mutate(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    kind = data.draw(st.sampled_from(["flip", "drop", "add", "swap"]))
    mutated = list(proof)
    if kind == "flip" and mutated:
        i = data.draw(st.integers(0, len(mutated) - 1))
        byte = data.draw(st.integers(0, 31))
        h = bytearray(mutated[i])
        h[byte] ^= 1 << data.draw(st.integers(0, 7))
        mutated[i] = bytes(h)
    elif kind == "drop" and mutated:
        del mutated[data.draw(st.integers(0, len(mutated) - 1))]
    elif kind == "swap" and len(mutated) > 1 and mutated[0] != mutated[-1]:
        mutated[0], mutated[-1] = mutated[-1], mutated[0]
    else:
        mutated.insert(data.draw(st.integers(0, len(mutated))), bytes(32))
    return mutated


@settings(max_examples=300)
@given(st.data())
def test_any_mutated_inclusion_proof_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 64))
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(BIG.node, index, size)
    mutated = _mutate(proof, data)
    if mutated == proof:
        return
    assert not verify_inclusion(BIG.node(0, index), index, size, mutated, root(BIG.node, size))


@settings(max_examples=300)
@given(st.data())
def test_any_mutated_consistency_proof_fails(data: st.DataObject) -> None:
    new = data.draw(st.integers(2, 64))
    old = data.draw(st.integers(1, new - 1))
    proof = consistency_proof(BIG.node, old, new)
    mutated = _mutate(proof, data)
    if mutated == proof:
        return
    assert not verify_consistency(old, new, root(BIG.node, old), root(BIG.node, new), mutated)


@given(st.integers(1, 63), st.integers(0, 62))
def test_a_proof_for_another_index_or_root_fails(size: int, index: int) -> None:
    index %= size
    proof = inclusion_proof(BIG.node, index, size)
    wrong = (index + 1) % 64
    assert not verify_inclusion(BIG.node(0, wrong), index, size, proof, root(BIG.node, size))
