"""The cmid filter: which (conversation, sender, cmid) may already be stored. Pure.

spec §4: a `send` whose cmid was already sequenced gets the original seq back, across
restarts, for every retained event. The events themselves live in the history store on
disk; asking it on every send would put a disk read on the path of every message. This
filter answers "certainly new" for almost every new cmid from memory, and "maybe stored"
for every cmid that is stored (never a false "new"), so only a maybe costs a store lookup.

It is a scalable Bloom filter (Almeida et al., 2007): a list of plain Bloom filters, each
twice the capacity of the one before, so it grows with the history without knowing its
size in advance. Filter i probes `FIRST_HASHES + i` bits per key in
`capacity * probes / ln 2` bits, a false-positive rate of about 2^-(9 + i) when full, so
however many filters there are, a new cmid is a "maybe" less than 0.4% of the time. A key
is checked against every filter, and a check stops at the first clear bit. The first
filter holds 2^20 keys (1.6 MB), so 10 million cmids take four filters and about 2.4 bytes
each. Deleting is not possible, and not needed: a retained-away event's cmid answers
"maybe", the store says no, and the send is new.
"""

from __future__ import annotations

from hashlib import blake2b

FIRST_HASHES = 9  # probes of the first filter: ~0.2% false positives when full
FIRST_CAPACITY = 1 << 20
_MASK64 = (1 << 64) - 1
_LN2 = 0.6931471805599453


def _size(capacity: int, hashes: int) -> int:
    """Bits for `capacity` keys at `hashes` probes each (the optimum: m = n k / ln 2)."""
    return int(capacity * hashes / _LN2) + 1


#: The filters as a snapshot stores them, in order: [capacity, keys added, bits] each
#: (filter i probes FIRST_HASHES + i bits per key).
FilterState = list[list[int | bytes]]


def _key(conv: str, sender: str, cmid: str) -> bytes:
    return f"{conv}\0{sender}\0{cmid}".encode()


class _Bloom:
    __slots__ = ("bits", "capacity", "count", "hashes", "size")

    def __init__(
        self, capacity: int, hashes: int, bits: bytearray | None = None, count: int = 0
    ) -> None:
        self.capacity = capacity
        self.hashes = hashes
        self.size = _size(capacity, hashes)
        self.bits = bits if bits is not None else bytearray((self.size + 7) // 8)
        self.count = count

    def add(self, h1: int, h2: int) -> None:
        bits, size = self.bits, self.size
        for i in range(self.hashes):
            p = ((h1 + i * h2) & _MASK64) % size
            bits[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def __contains__(self, key: tuple[int, int]) -> bool:
        h1, h2 = key
        bits, size = self.bits, self.size
        for i in range(self.hashes):
            p = ((h1 + i * h2) & _MASK64) % size
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
        return True


class CmidFilter:
    """Remembers every cmid added; says whether a cmid may have been added.

    Args:
        first_capacity: keys in the first filter (later ones double).
    """

    __slots__ = ("_filters", "first_capacity")

    def __init__(self, first_capacity: int = FIRST_CAPACITY) -> None:
        self.first_capacity = first_capacity
        self._filters: list[_Bloom] = []

    @staticmethod
    def _hashes(conv: str, sender: str, cmid: str) -> tuple[int, int]:
        digest = blake2b(_key(conv, sender, cmid), digest_size=16).digest()
        return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1

    def add(self, conv: str, sender: str, cmid: str) -> None:
        filters = self._filters
        if not filters or filters[-1].count >= filters[-1].capacity:
            capacity = filters[-1].capacity * 2 if filters else self.first_capacity
            filters.append(_Bloom(capacity, FIRST_HASHES + len(filters)))
        filters[-1].add(*self._hashes(conv, sender, cmid))

    def may_contain(self, conv: str, sender: str, cmid: str) -> bool:
        """False: certainly never added. True: added, or (rarely) a false positive."""
        if not self._filters:
            return False
        hashes = self._hashes(conv, sender, cmid)
        return any(hashes in f for f in self._filters)

    @property
    def keys(self) -> int:
        return sum(f.count for f in self._filters)

    @property
    def nbytes(self) -> int:
        return sum(len(f.bits) for f in self._filters)

    def to_state(self) -> FilterState:
        """What a snapshot stores (copies of the bits)."""
        return [[f.capacity, f.count, bytes(f.bits)] for f in self._filters]

    @classmethod
    def from_state(cls, state: FilterState, first_capacity: int = FIRST_CAPACITY) -> CmidFilter:
        """The filter `to_state` described.

        Raises:
            ValueError: a filter's bits do not match its capacity.
        """
        made = cls(first_capacity)
        for i, (capacity, count, bits) in enumerate(state):
            if not isinstance(capacity, int) or not isinstance(count, int):
                raise ValueError("a filter's capacity and count must be integers")
            hashes = FIRST_HASHES + i
            if not isinstance(bits, bytes) or len(bits) != (_size(capacity, hashes) + 7) // 8:
                raise ValueError("a filter's bits do not match its capacity")
            made._filters.append(_Bloom(capacity, hashes, bytearray(bits), count))
        return made
