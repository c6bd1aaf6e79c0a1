"""Shard maps: which logical shard a key belongs to, and which cluster holds each
logical shard. Pure values, no I/O.

A key goes to a **logical shard** (a number in ``range(placement.shards)``) by one of
three placements:

- :class:`HashPlacement`: PostgreSQL's hash partitioning (:func:`replpool.shard_for`),
  so a logical shard is exactly the hash partition ``(MODULUS shards, REMAINDER n)``;
- :class:`RangePlacement`: split points, as in ``PARTITION BY RANGE``;
- :class:`DirectoryPlacement`: a lookup table (a mapping or a function), e.g. tenant
  -> logical shard, for keys whose placement is chosen rather than computed.

A :class:`ShardMap` then assigns each logical shard to a physical cluster by name.
Many logical shards on few clusters is what lets a shard move: moving logical shard
``n`` to another cluster changes one entry of the map (:meth:`ShardMap.moved`), and no
other row changes place, whereas changing the number of hash partitions would move
nearly every row.

:class:`ShardIds` lays out 64-bit ids that carry their logical shard, so that a row
can be found from its id alone.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._errors import ConfigurationError, Error
from ._placement import MAX_MODULUS, partition_hash


class ShardKeyError(Error, LookupError):
    """A key has no logical shard: a directory has no entry for it, or a range
    placement's keys cannot be compared with it."""


class Placement(Protocol):
    """Places keys on logical shards ``0 .. shards - 1``."""

    @property
    def shards(self) -> int: ...

    def logical_shard(self, key: Any) -> int: ...


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a whole number >= 1, not {value!r}")
    return value


class HashPlacement:
    """Logical shard = the remainder PostgreSQL's ``PARTITION BY HASH`` gives the key
    with ``MODULUS shards`` (:func:`replpool.shard_for`): logical shard ``n`` holds
    exactly the rows a hash partition ``FOR VALUES WITH (MODULUS shards, REMAINDER n)``
    would hold.

    :param shards: the number of logical shards (the modulus), from 1 to 2**31 - 1.
        Choose it once and large (hundreds or thousands): it can never change without
        moving rows, whereas logical shards move between clusters freely.
    """

    __slots__ = ("_shards",)

    def __init__(self, shards: int) -> None:
        self._shards = _check_count("HashPlacement: shards", shards)
        if shards > MAX_MODULUS:
            raise ConfigurationError(
                f"HashPlacement: shards is the hash modulus, at most {MAX_MODULUS} (PostgreSQL's "
                f"MODULUS is a positive integer), not {shards}"
            )

    @property
    def shards(self) -> int:
        return self._shards

    def logical_shard(self, key: Any) -> int:
        """Raises TypeError or ValueError for a key of an unsupported type or range."""
        return partition_hash(key) % self._shards  # shard_for(key, shards), checked once

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashPlacement) and other._shards == self._shards

    def __hash__(self) -> int:
        return hash(("hash", self._shards))

    def __repr__(self) -> str:
        return f"HashPlacement({self._shards})"


class RangePlacement:
    """Logical shard ``i`` holds the keys from ``bounds[i - 1]`` (included) to
    ``bounds[i]`` (excluded), as ``PARTITION BY RANGE ... FOR VALUES FROM (a) TO (b)``:
    shard 0 everything below ``bounds[0]``, the last shard everything from
    ``bounds[-1]`` on. ``len(bounds) + 1`` logical shards.

    :param bounds: strictly increasing split points, all of one comparable type
        (ints, strings, dates...). A key that cannot be compared with them raises
        :class:`ShardKeyError`.
    """

    __slots__ = ("_bounds",)

    def __init__(self, bounds: Sequence[Any]) -> None:
        if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
            raise ConfigurationError(
                f"RangePlacement: bounds must be a list of split points, not {type(bounds).__name__}"
            )
        values = list(bounds)
        for i in range(1, len(values)):
            try:
                ordered = values[i - 1] < values[i]
            except TypeError:
                raise ConfigurationError(
                    f"RangePlacement: bounds {values[i - 1]!r} and {values[i]!r} cannot be "
                    "compared; use split points of one type"
                ) from None
            if not ordered:
                raise ConfigurationError(
                    f"RangePlacement: bounds must be strictly increasing, but {values[i - 1]!r} "
                    f"comes before {values[i]!r}"
                )
        self._bounds = tuple(values)

    @property
    def bounds(self) -> tuple[Any, ...]:
        return self._bounds

    @property
    def shards(self) -> int:
        return len(self._bounds) + 1

    def logical_shard(self, key: Any) -> int:
        if key is None:
            raise ShardKeyError("a range placement cannot place None; give the row a key")
        try:
            return bisect.bisect_right(self._bounds, key)
        except TypeError:
            raise ShardKeyError(
                f"key {key!r} ({type(key).__name__}) cannot be compared with this range "
                f"placement's bounds ({type(self._bounds[0]).__name__})"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangePlacement) and other._bounds == self._bounds

    def __hash__(self) -> int:
        return hash(("range", self._bounds))

    def __repr__(self) -> str:
        return f"RangePlacement({list(self._bounds)!r})"


class DirectoryPlacement:
    """Logical shards looked up in a table: a mapping (``{tenant: shard}``) or a
    function returning the logical shard, or None when the key has no entry.

    :param lookup: a ``Mapping`` or a callable ``key -> int | None``. A function may
        read a table of its own (cache it: it runs on every routed query).
    :param shards: the number of logical shards entries may name.
    :param default: the logical shard of keys without an entry (None: such keys raise
        :class:`ShardKeyError`).
    """

    __slots__ = ("_lookup", "_shards", "_default")

    def __init__(
        self, lookup: Mapping[Any, int] | Callable[[Any], int | None], shards: int,
        default: int | None = None,
    ) -> None:
        self._shards = _check_count("DirectoryPlacement: shards", shards)
        if isinstance(lookup, Mapping):
            for key, value in lookup.items():
                self._check(key, value)
            table = dict(lookup)
            self._lookup: Callable[[Any], int | None] = table.get
        elif callable(lookup):
            self._lookup = lookup
        else:
            raise ConfigurationError(
                f"DirectoryPlacement: lookup must be a mapping or a function, not {type(lookup).__name__}"
            )
        if default is not None:
            self._check("the default", default)
        self._default = default

    def _check(self, key: Any, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self._shards:
            raise ConfigurationError(
                f"DirectoryPlacement: {key!r} is placed on {value!r}, which is not a logical "
                f"shard (0 .. {self._shards - 1})"
            )
        return value

    @property
    def shards(self) -> int:
        return self._shards

    def logical_shard(self, key: Any) -> int:
        found = self._lookup(key)
        if found is None:
            found = self._default
            if found is None:
                raise ShardKeyError(f"the shard directory has no entry for key {key!r}")
        return self._check(key, found)

    def __repr__(self) -> str:
        return f"DirectoryPlacement(shards={self._shards}, default={self._default})"


def _spread(names: Sequence[str], shards: int) -> dict[str, range]:
    """Contiguous blocks of logical shards, as even as can be, in the names' order."""
    out: dict[str, range] = {}
    start = 0
    for i, name in enumerate(names):
        end = (i + 1) * shards // len(names)
        out[name] = range(start, end)
        start = end
    return out


class ShardMap:
    """Keys to logical shards (a placement), and logical shards to clusters (by name).
    Immutable: :meth:`moved` returns a new map.

    :param placement: a :class:`HashPlacement`, :class:`RangePlacement`,
        :class:`DirectoryPlacement` or anything with ``shards`` and
        ``logical_shard(key)``.
    :param clusters: either cluster names, which share the logical shards in
        contiguous blocks as even as possible (``["db1", "db2"]`` with 480 logical
        shards: 0-239 on db1, 240-479 on db2), or a mapping ``{name: logical shards}``
        that assigns every logical shard exactly once. A cluster may hold none (a new
        cluster shards are about to move to).

    Raises :class:`ConfigurationError` if a logical shard is assigned twice or not at
    all, or a name is not a str.
    """

    __slots__ = ("placement", "_names", "_owner")

    def __init__(
        self, placement: Placement, clusters: Sequence[str] | Mapping[str, Iterable[int]]
    ) -> None:
        count = getattr(placement, "shards", None)
        if not callable(getattr(placement, "logical_shard", None)) or not isinstance(count, int):
            raise ConfigurationError(
                f"ShardMap: {placement!r} is not a placement (it needs shards and "
                "logical_shard(key)); use HashPlacement, RangePlacement or DirectoryPlacement"
            )
        if isinstance(clusters, Mapping):
            assignment: Mapping[str, Iterable[int]] = clusters
        elif isinstance(clusters, (str, bytes)) or not isinstance(clusters, Sequence):
            raise ConfigurationError(
                f"ShardMap: clusters must be a list of names or a mapping of names to "
                f"logical shards, not {type(clusters).__name__}"
            )
        else:
            if not clusters:
                raise ConfigurationError("ShardMap: name at least one cluster")
            if len(set(clusters)) != len(clusters):
                raise ConfigurationError(f"ShardMap: a cluster is listed twice in {list(clusters)!r}")
            assignment = _spread(list(clusters), count)
        owner: list[str | None] = [None] * count
        names: list[str] = []
        for name, shards in assignment.items():
            if not isinstance(name, str):
                raise ConfigurationError(f"ShardMap: cluster names are str, not {name!r}")
            names.append(name)
            for n in shards:
                if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < count:
                    raise ConfigurationError(
                        f"ShardMap: {name!r} is given logical shard {n!r}, but the placement "
                        f"has logical shards 0 .. {count - 1}"
                    )
                if owner[n] is not None:
                    raise ConfigurationError(
                        f"ShardMap: logical shard {n} is assigned to both {owner[n]!r} and {name!r}"
                    )
                owner[n] = name
        missing = [i for i, o in enumerate(owner) if o is None]
        if missing:
            raise ConfigurationError(
                f"ShardMap: logical shards {_ranges(missing)} are assigned to no cluster"
            )
        if not names:
            raise ConfigurationError("ShardMap: name at least one cluster")
        self.placement = placement
        self._names = tuple(names)
        self._owner: tuple[str, ...] = tuple(o for o in owner if o is not None)

    @property
    def clusters(self) -> tuple[str, ...]:
        """The clusters' names, in the order given."""
        return self._names

    @property
    def shards(self) -> int:
        """The number of logical shards."""
        return len(self._owner)

    def logical_shard(self, key: Any) -> int:
        return self.placement.logical_shard(key)

    def cluster_of_shard(self, logical_shard: int) -> str:
        """The name of the cluster holding a logical shard (IndexError if there is no
        such logical shard)."""
        if isinstance(logical_shard, bool) or not isinstance(logical_shard, int) or logical_shard < 0:
            raise IndexError(f"no logical shard {logical_shard!r} (0 .. {len(self._owner) - 1})")
        try:
            return self._owner[logical_shard]
        except IndexError:
            raise IndexError(
                f"no logical shard {logical_shard!r} (0 .. {len(self._owner) - 1})"
            ) from None

    def cluster_of(self, key: Any) -> str:
        """The name of the cluster holding ``key``'s rows."""
        return self._owner[self.placement.logical_shard(key)]

    def shards_of(self, cluster: str) -> tuple[int, ...]:
        """The logical shards a cluster holds, in order (KeyError for an unknown name)."""
        if cluster not in self._names:
            raise KeyError(f"no cluster named {cluster!r} in this shard map ({', '.join(self._names)})")
        return tuple(i for i, o in enumerate(self._owner) if o == cluster)

    def assignment(self) -> dict[str, tuple[int, ...]]:
        """``{cluster: logical shards}``, every cluster included."""
        return {name: self.shards_of(name) for name in self._names}

    def moved(self, logical_shard: int, to: str) -> ShardMap:
        """This map with one logical shard on another cluster (a name of this map, or a
        new one, which is added). Nothing else moves."""
        self.cluster_of_shard(logical_shard)
        assignment = {name: list(self.shards_of(name)) for name in self._names}
        for shards in assignment.values():
            if logical_shard in shards:
                shards.remove(logical_shard)
        assignment.setdefault(to, []).append(logical_shard)
        return ShardMap(self.placement, assignment)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ShardMap) and other.placement == self.placement
            and other._owner == self._owner and set(other._names) == set(self._names)
        )

    def __hash__(self) -> int:
        return hash(self._owner)

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {_ranges(self.shards_of(name)) or 'none'}" for name in self._names)
        return f"<ShardMap {self.placement!r} {{{parts}}}>"


def _ranges(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


# -- ids that carry their logical shard -----------------------------------------------------

_IDENTIFIER_RE = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
DEFAULT_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class ShardIds:
    """The layout of 64-bit ids that carry their logical shard (Instagram's scheme):

    ``[0][time: milliseconds since epoch_ms][logical shard][sequence]``

    from the most significant bit down; the top bit stays 0, so ids are positive
    ``bigint`` values, and they sort by time of creation (to the millisecond). With the
    defaults (13 bits of shard: up to 8192 logical shards; 10 bits of sequence; 40 bits
    of time) ids last 34.8 years from ``epoch_ms``.

    Ids are made on the shard's primary by a SQL function (:meth:`postgresql_function`)
    from the clock and a sequence of that database, so every process and server agrees
    without coordination: two ids of one logical shard differ unless that database hands
    out more than ``2 ** sequence_bits`` sequence values within one millisecond (or its
    clock steps back by more than a millisecond in the middle of such a burst, e.g. a
    failover to a server whose clock is behind); ids of different logical shards always
    differ.

    :param epoch_ms: Unix time in milliseconds of time 0 (default 2025-01-01 UTC). Never
        change it once ids exist.
    :param shard_bits: bits for the logical shard (13): at least
        ``log2(placement.shards)``.
    :param sequence_bits: bits for the sequence (10).
    """

    epoch_ms: int = DEFAULT_EPOCH_MS
    shard_bits: int = 13
    sequence_bits: int = 10

    def __post_init__(self) -> None:
        for name in ("epoch_ms", "shard_bits", "sequence_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"ShardIds: {name} must be a whole number >= 0, not {value!r}")
        if self.shard_bits < 1 or self.time_bits < 32:
            raise ConfigurationError(
                f"ShardIds: shard_bits ({self.shard_bits}) must be >= 1 and leave at least 32 "
                f"bits of time next to sequence_bits ({self.sequence_bits}), in 63 bits"
            )

    @property
    def time_bits(self) -> int:
        return 63 - self.shard_bits - self.sequence_bits

    @property
    def max_shards(self) -> int:
        """How many logical shards ids can name."""
        return 1 << self.shard_bits

    def compose(self, unix_ms: int, logical_shard: int, sequence: int) -> int:
        """The id made at ``unix_ms`` (milliseconds since 1970) for ``logical_shard``,
        with ``sequence`` (taken modulo ``2 ** sequence_bits``). ValueError if the time
        is before ``epoch_ms`` or past the layout's end, or the shard does not fit."""
        t = unix_ms - self.epoch_ms
        if not 0 <= t < 1 << self.time_bits:
            raise ValueError(
                f"time {unix_ms} ms is outside this id layout's span "
                f"({self.epoch_ms} .. {self.epoch_ms + (1 << self.time_bits) - 1})"
            )
        if isinstance(logical_shard, bool) or not 0 <= logical_shard < self.max_shards:
            raise ValueError(
                f"logical shard {logical_shard!r} does not fit in {self.shard_bits} bits"
            )
        sequence &= (1 << self.sequence_bits) - 1
        return (t << (self.shard_bits + self.sequence_bits)) | (logical_shard << self.sequence_bits) | sequence

    def _check_id(self, id: int) -> int:
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id < 1 << 63:
            raise ValueError(f"{id!r} is not an id of this layout (a positive 63-bit int)")
        return id

    def logical_shard(self, id: int) -> int:
        """The logical shard an id was made for."""
        return (self._check_id(id) >> self.sequence_bits) & ((1 << self.shard_bits) - 1)

    def unix_ms(self, id: int) -> int:
        """When an id was made, in milliseconds since 1970 (the server's clock)."""
        return (self._check_id(id) >> (self.shard_bits + self.sequence_bits)) + self.epoch_ms

    def sequence(self, id: int) -> int:
        return self._check_id(id) & ((1 << self.sequence_bits) - 1)

    def postgresql_function(
        self, name: str = "replpool_shard_id", sequence: str = "replpool_shard_id_seq"
    ) -> str:
        """The SQL that creates (or replaces) the function ``name(logical_shard
        integer) -> bigint`` making ids of this layout on a PostgreSQL database, and the
        sequence it draws from. Run it on every shard cluster's primary (in a migration,
        or :meth:`replpool.ShardSet.install_ids`); use it as a column default or call it
        before an insert."""
        for what, ident in (("name", name), ("sequence", sequence)):
            if not _IDENTIFIER_RE.match(ident):
                raise ConfigurationError(
                    f"ShardIds: {what} {ident!r} must be a lower-case SQL identifier"
                )
        low = self.shard_bits + self.sequence_bits
        return (
            f"CREATE SEQUENCE IF NOT EXISTS {sequence};\n"
            f"CREATE OR REPLACE FUNCTION {name}(logical_shard integer) RETURNS bigint\n"
            "LANGUAGE plpgsql VOLATILE AS $replpool$\n"
            "BEGIN\n"
            f"  IF logical_shard IS NULL OR logical_shard < 0 OR logical_shard >= {self.max_shards} THEN\n"
            f"    RAISE EXCEPTION '{name}: logical shard % does not fit in {self.shard_bits} bits',"
            " logical_shard;\n"
            "  END IF;\n"
            "  RETURN ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
            f" - {self.epoch_ms}) << {low})\n"
            f"    | (logical_shard::bigint << {self.sequence_bits})\n"
            f"    | (nextval('{sequence}') % {1 << self.sequence_bits});\n"
            "END\n"
            "$replpool$;\n"
        )
