"""RFC 9162 Merkle trees over stored complete-subtree hashes.

Why not pymerkle: its trees compute subtree roots from the leaves (with an in-process cache),
so a proof over a log of 10^6 leaves held in PostgreSQL would read O(n) leaves. Here every
complete, aligned subtree hash is stored once when it completes; any root or proof then needs
O(log² n) node look-ups, and appending needs only the right edge of the tree.

A node is addressed by (level, index): it covers leaves [index·2^level, (index+1)·2^level).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

NodeSource = Callable[[int, int], bytes]  # (level, index) -> hash of that complete subtree

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def subtree_root(nodes: NodeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that RFC 9162's recursion produces."""
    size = end - start
    if size <= 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        return nodes(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(subtree_root(nodes, start, start + k), subtree_root(nodes, start + k, end))


def root(nodes: NodeSource, size: int) -> bytes:
    """The root hash of the first ``size`` leaves."""
    return subtree_root(nodes, 0, size)


def inclusion_proof(nodes: NodeSource, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(subtree_root(nodes, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(nodes, start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(nodes: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1); empty when nothing to prove."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    # Walk down D[start:end]; ``old_size`` stays absolute, so the old tree ends where end does.
    start, end, complete = 0, new_size, True
    while old_size != end:
        k = _split(end - start)
        if old_size - start <= k:
            proof.append(subtree_root(nodes, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(nodes, start, start + k))
            start += k
            complete = False
    if not complete:
        proof.append(subtree_root(nodes, start, end))
    proof.reverse()
    return proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` place leaf hash ``leaf`` at ``index`` under the root?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``new_size`` an append-only extension of the old?"""
    if old_size > new_size or old_size < 0:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
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
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class Frontier:
    """The right edge of a growing tree: appends leaves, yields each subtree as it completes.

    ``pending[level]`` is the hash of the complete left subtree at that level still waiting
    for its right sibling — exactly the set bits of the tree size.
    """

    def __init__(self, size: int = 0, pending: dict[int, bytes] | None = None) -> None:
        self.size = size
        self.pending: dict[int, bytes] = dict(pending or {})

    @classmethod
    def load(cls, nodes: NodeSource, size: int) -> Frontier:
        """The frontier of a stored tree of ``size`` leaves."""
        pending = {
            level: nodes(level, (size >> level) - 1)
            for level in range(size.bit_length())
            if size >> level & 1
        }
        return cls(size, pending)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return every (level, index, hash) node it completes."""
        index, level, h = self.size, 0, leaf
        created = [(0, index, h)]
        while index & 1:
            h = node_hash(self.pending.pop(level), h)
            index >>= 1
            level += 1
            created.append((level, index, h))
        self.pending[level] = h
        self.size += 1
        return created

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append several leaves; return all completed nodes."""
        created: list[tuple[int, int, bytes]] = []
        for leaf in leaves:
            created.extend(self.append(leaf))
        return created

    def root(self) -> bytes:
        """The root of the tree so far."""
        if self.size == 0:
            return EMPTY_ROOT
        levels = sorted(self.pending)
        h = self.pending[levels[0]]
        for level in levels[1:]:
            h = node_hash(self.pending[level], h)
        return h


class MemoryTree:
    """A whole tree in memory (tests, and small offline checks)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.frontier = Frontier()
        self.extend(leaves)

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append leaf hashes."""
        for level, index, h in self.frontier.extend(leaves):
            self.nodes[(level, index)] = h

    def node(self, level: int, index: int) -> bytes:
        """A stored node."""
        return self.nodes[(level, index)]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self.frontier.size
