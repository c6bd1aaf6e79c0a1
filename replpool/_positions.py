"""Replication positions: what a server has written or applied, as values that compare.

Each engine has its own type; all offer the same small interface, so the router and the
session tracker never look inside a position:

``a.covers(b)``
    a server at ``a`` has applied everything that ``b`` denotes (``a >= b``).
``a.join(b)``
    the smallest position that covers both (the session keeps the join of its writes).
``a.meet(b)``
    the largest position both cover (a token is clamped to what the primary has).
``a.bytes_ahead_of(b)``
    how many bytes of log separate them, where the engine can tell (else ``None``).
``str(a)`` / ``Type.parse(text)``
    the server's own notation, round-tripping exactly for canonical text.

PostgreSQL positions are totally ordered byte offsets. MariaDB positions and MySQL GTID
sets are only partially ordered (one sequence per replication domain, or per source
server): two of them may each have something the other lacks, so neither covers the
other. Never compare them as strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

P = TypeVar("P", bound="Position")


class Position(Protocol):
    engine: ClassVar[str]

    def covers(self: P, other: P) -> bool: ...

    def join(self: P, other: P) -> P: ...

    def meet(self: P, other: P) -> P: ...

    def bytes_ahead_of(self: P, other: P) -> int | None: ...


# -- PostgreSQL ------------------------------------------------------------------------

_LSN_RE = re.compile(r"\A([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")
# Sizes of the WAL page headers (SizeOfXLogShortPHD, SizeOfXLogLongPHD).
_SHORT_PAGE_HEADER = 24
_LONG_PAGE_HEADER = 40


@dataclass(frozen=True, slots=True)
class LSN:
    """A PostgreSQL WAL position (``pg_lsn``), written ``X/Y``: a 64-bit byte offset."""

    value: int
    engine: ClassVar[str] = "postgresql"

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise ValueError(f"an LSN is a 64-bit unsigned offset, not {self.value}")

    @classmethod
    def parse(cls, text: str) -> LSN:
        m = _LSN_RE.match(text.strip())
        if not m:
            raise ValueError(f"not a PostgreSQL LSN (expected X/Y in hex): {text!r}")
        return cls(int(m.group(1), 16) << 32 | int(m.group(2), 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def covers(self, other: LSN) -> bool:
        return self.value >= other.value

    def join(self, other: LSN) -> LSN:
        return self if self.value >= other.value else other

    def meet(self, other: LSN) -> LSN:
        return self if self.value <= other.value else other

    def bytes_ahead_of(self, other: LSN) -> int:
        return self.value - other.value

    def as_record_end(self, block_size: int = 8192, segment_size: int = 16 << 20) -> LSN:
        """The same point of the log, written as a replica's replay position would be.

        ``pg_current_wal_insert_lsn()`` points past a page header when the last record
        ended exactly at a page boundary, while ``pg_last_wal_replay_lsn()`` stops at the
        boundary: no record lies between the two, so they denote the same state, but a
        plain comparison would wait forever for the replica to "reach" the header.
        """
        if self.value % segment_size == _LONG_PAGE_HEADER:
            return LSN(self.value - _LONG_PAGE_HEADER)
        if self.value % block_size == _SHORT_PAGE_HEADER:
            return LSN(self.value - _SHORT_PAGE_HEADER)
        return self


# -- MariaDB ------------------------------------------------------------------------------

_MARIADB_GTID_RE = re.compile(r"\A([0-9]+)-([0-9]+)-([0-9]+)\Z")
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MariaDBGTID:
    """A MariaDB GTID position such as ``0-1-100,1-2-7``: for each replication domain,
    the last transaction (``domain-server_id-sequence``) applied in it.

    Sequence numbers grow within a domain, whichever server wrote them, so a position
    covers another when it is at least as far along in every domain the other names.
    """

    domains: tuple[tuple[int, int, int], ...]  # sorted (domain, server_id, seq)
    engine: ClassVar[str] = "mariadb"

    @classmethod
    def from_gtids(cls, gtids: Iterable[tuple[int, int, int]]) -> MariaDBGTID:
        best: dict[int, tuple[int, int]] = {}
        for domain, server_id, seq in gtids:
            if not (0 <= domain <= _U32 and 0 <= server_id <= _U32 and 0 <= seq <= _U64):
                raise ValueError(f"GTID {domain}-{server_id}-{seq} is out of range")
            if domain not in best or seq > best[domain][1]:
                best[domain] = (server_id, seq)
        return cls(tuple((d, s, q) for d, (s, q) in sorted(best.items())))

    @classmethod
    def parse(cls, text: str) -> MariaDBGTID:
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        gtids = []
        for part in parts:
            m = _MARIADB_GTID_RE.match(part)
            if not m:
                raise ValueError(
                    f"not a MariaDB GTID position (expected domain-server-seq, comma "
                    f"separated): {text!r}"
                )
            gtids.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
        try:
            return cls.from_gtids(gtids)
        except ValueError as exc:
            raise ValueError(f"{exc}: {text!r}") from None

    def __str__(self) -> str:
        return ",".join(f"{d}-{s}-{q}" for d, s, q in self.domains)

    def _seqs(self) -> dict[int, int]:
        return {d: q for d, _, q in self.domains}

    def covers(self, other: MariaDBGTID) -> bool:
        mine = self._seqs()
        return all(d in mine and mine[d] >= q for d, _, q in other.domains)

    def join(self, other: MariaDBGTID) -> MariaDBGTID:
        return MariaDBGTID.from_gtids(self.domains + other.domains)

    def meet(self, other: MariaDBGTID) -> MariaDBGTID:
        theirs = {d: (s, q) for d, s, q in other.domains}
        out = []
        for d, s, q in self.domains:
            if d in theirs:
                out.append((d, s, q) if q <= theirs[d][1] else (d, *theirs[d]))
        return MariaDBGTID(tuple(out))

    def bytes_ahead_of(self, other: MariaDBGTID) -> None:
        return None

    def transactions_ahead_of(self, other: MariaDBGTID) -> int:
        """Transactions in ``self`` that ``other`` lacks, summed over domains."""
        theirs = other._seqs()
        return sum(max(0, q - theirs.get(d, 0)) for d, _, q in self.domains)


# -- MySQL -------------------------------------------------------------------------------

_UUID_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_TAG_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,31}\Z")
_DIGITS_RE = re.compile(r"\A[0-9]+\Z")  # str.isdigit() also takes "¹" and "١"
Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent, inclusive


def _normalize(intervals: Iterable[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MySQLGTIDSet:
    """A MySQL GTID set such as ``3e11fa47-...:1-5:7,4f22...:1-3`` (MySQL 8.4 adds tags:
    ``uuid:tag:1-5``): for each source (uuid, tag), the transaction numbers executed.

    One set covers another when it is a superset, as ``GTID_SUBSET`` decides.
    """

    sources: tuple[tuple[str, Intervals], ...]  # sorted by source key
    engine: ClassVar[str] = "mysql"

    @classmethod
    def from_mapping(cls, sources: Mapping[str, Iterable[tuple[int, int]]]) -> MySQLGTIDSet:
        out = []
        for key, intervals in sources.items():
            norm = _normalize(intervals)
            if norm:
                out.append((key, norm))
        return cls(tuple(sorted(out)))

    @classmethod
    def parse(cls, text: str) -> MySQLGTIDSet:
        acc: dict[str, list[tuple[int, int]]] = {}
        body = "".join(text.split())  # MySQL prints newlines after the commas
        for part in body.split(",") if body else []:
            fields = part.split(":")
            uuid = fields[0].lower()
            if not _UUID_RE.match(uuid) or len(fields) < 2:
                raise ValueError(f"not a MySQL GTID set (expected uuid:n-m,...): {text!r}")
            tag = ""
            for f in fields[1:]:
                if f and not f[0].isdigit():
                    if not f.isascii() or not _TAG_RE.match(f.lower()):
                        raise ValueError(f"bad GTID tag {f!r} in {text!r}")
                    tag = f.lower()
                    acc.setdefault(f"{uuid}:{tag}" if tag else uuid, [])
                    continue
                lo_s, dash, hi_s = f.partition("-")
                if not _DIGITS_RE.match(lo_s) or (dash and not _DIGITS_RE.match(hi_s)):
                    raise ValueError(f"bad GTID interval {f!r} in {text!r}")
                lo, hi = int(lo_s), int(hi_s or lo_s)
                if not 1 <= lo <= hi < 1 << 63:
                    raise ValueError(f"bad GTID interval {f!r} in {text!r}")
                acc.setdefault(f"{uuid}:{tag}" if tag else uuid, []).append((lo, hi))
        return cls.from_mapping(acc)

    def __str__(self) -> str:
        def ivs(intervals: Intervals) -> str:
            return ":".join(f"{lo}-{hi}" if hi != lo else f"{lo}" for lo, hi in intervals)

        return ",".join(f"{key}:{ivs(iv)}" for key, iv in self.sources)

    def covers(self, other: MySQLGTIDSet) -> bool:
        mine = dict(self.sources)
        return all(_intersect(mine.get(k, ()), iv) == iv for k, iv in other.sources)

    def join(self, other: MySQLGTIDSet) -> MySQLGTIDSet:
        acc: dict[str, list[tuple[int, int]]] = {}
        for key, iv in self.sources + other.sources:
            acc.setdefault(key, []).extend(iv)
        return MySQLGTIDSet.from_mapping(acc)

    def meet(self, other: MySQLGTIDSet) -> MySQLGTIDSet:
        theirs = dict(other.sources)
        return MySQLGTIDSet.from_mapping({k: _intersect(iv, theirs.get(k, ())) for k, iv in self.sources})

    def bytes_ahead_of(self, other: MySQLGTIDSet) -> None:
        return None

    def transactions_ahead_of(self, other: MySQLGTIDSet) -> int:
        theirs = dict(other.sources)
        total = 0
        for key, iv in self.sources:
            have = sum(hi - lo + 1 for lo, hi in _intersect(iv, theirs.get(key, ())))
            total += sum(hi - lo + 1 for lo, hi in iv) - have
        return total


POSITION_TYPES: dict[str, type[LSN] | type[MariaDBGTID] | type[MySQLGTIDSet]] = {
    "postgresql": LSN,
    "mariadb": MariaDBGTID,
    "mysql": MySQLGTIDSet,
}
