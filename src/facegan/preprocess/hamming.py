"""Exact Hamming radius search over fixed-length bit strings by multi-index hashing (Norouzi, Punjani and
Fleet, "Fast search in Hamming space with multi-index hashing", CVPR 2012).

The bits are cut into m disjoint chunks. Two strings at most r bits apart differ in at most floor(r/m) bits
of at least one chunk (pigeonhole), so a query only compares the strings whose value in some chunk lies
within floor(r/m) flips of its own, found in one hash table per chunk. With m = r + 1 (the default shape:
r = 16 of 256 bits gives 17 chunks of 15-16 bits and exact-match lookups), photos that are not near each
other rarely share a chunk, and a query costs about m lookups instead of a scan of everything stored.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

MIN_CHUNK_BITS = 8  # narrower chunks match too many strings by chance
MAX_CHUNK_BITS = 32  # chunk values are Python ints built from this many bits


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per row of a uint64 matrix."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).sum(axis=1, dtype=np.int64)
    return np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1, dtype=np.int64)


class HammingIndex:
    """Strings of `nbits` bits, added one by one; `within(q)` returns every stored string at most `radius`
    bits from q (ids in insertion order, with their distances). Exact: no false negatives, no false positives."""

    def __init__(self, nbits: int, radius: int):
        if nbits < 1 or radius < 0:
            raise ValueError(f"HammingIndex needs nbits >= 1 and radius >= 0, got {nbits} and {radius}")
        self.nbits, self.radius = nbits, radius
        m = max(radius + 1, math.ceil(nbits / MAX_CHUNK_BITS))
        m = max(1, min(m, nbits // MIN_CHUNK_BITS or 1))
        bounds = np.linspace(0, nbits, m + 1).round().astype(int)
        self.starts = bounds[:-1]
        widths = np.diff(bounds)
        # weights turn each chunk of bits into one integer in a single np.add.reduceat
        self.weights = np.concatenate([1 << np.arange(w - 1, -1, -1, dtype=np.int64) for w in widths])
        flips = radius // m
        self.masks = [self._masks(int(w), flips) for w in widths]
        self.tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in widths]
        self.words = math.ceil(nbits / 64)
        self.codes = np.zeros((0, self.words), np.uint64)
        self.n = 0

    @staticmethod
    def _masks(width: int, flips: int) -> list[int]:
        """XOR masks of every pattern of at most `flips` flipped bits in a chunk of `width` bits."""
        return [
            sum(1 << b for b in bits)
            for k in range(min(flips, width) + 1)
            for bits in itertools.combinations(range(width), k)
        ]

    def _check(self, bits: np.ndarray) -> np.ndarray:
        bits = np.asarray(bits, bool).ravel()
        if bits.size != self.nbits:
            raise ValueError(f"expected {self.nbits} bits, got {bits.size}")
        return bits

    def _keys(self, bits: np.ndarray) -> list[int]:
        return np.add.reduceat(bits * self.weights, self.starts).tolist()

    def _code(self, bits: np.ndarray) -> np.ndarray:
        if self.nbits % 64:
            bits = np.concatenate([bits, np.zeros(self.words * 64 - self.nbits, bool)])
        return np.packbits(bits).view(np.uint64)

    def add(self, bits: np.ndarray) -> int:
        """Store one string; returns its id (0, 1, 2, ... in insertion order)."""
        bits = self._check(bits)
        i = self.n
        if i == len(self.codes):  # amortised growth, like a list
            self.codes = np.concatenate([self.codes, np.zeros((max(16, i), self.words), np.uint64)])
        self.codes[i] = self._code(bits)
        for table, key in zip(self.tables, self._keys(bits), strict=True):
            table[key].append(i)
        self.n += 1
        return i

    def within(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, distances) of every stored string at most `radius` bits from `bits`."""
        bits = self._check(bits)
        found: list[int] = []
        for table, masks, key in zip(self.tables, self.masks, self._keys(bits), strict=True):
            for mask in masks:
                hit = table.get(key ^ mask)
                if hit:
                    found += hit
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ids = np.array(sorted(set(found)), np.int64)
        dist = _popcount(self.codes[ids] ^ self._code(bits))
        keep = dist <= self.radius
        return ids[keep], dist[keep]

    def __len__(self) -> int:
        return self.n
