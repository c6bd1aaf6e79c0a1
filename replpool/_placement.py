"""Where PostgreSQL's ``PARTITION BY HASH`` puts a key: the partition hash and its
remainder, computed in Python, bit for bit as the server computes them.

The rule (PostgreSQL 11 and later; ``src/backend/partitioning/partbounds.c``,
``compute_partition_hash_value`` and ``satisfies_hash_partition``): a row's hash
starts at 0 and, for each key column, is combined with the column type's *extended*
hash of the value, seeded with ``HASH_PARTITION_SEED`` (0x7A5B22367996DCFD), by
``hash_combine64`` (``src/include/common/hashfn.h``). The row belongs to the partition
``(modulus m, remainder r)`` for which ``hash % m == r``, the hash taken as an unsigned
64-bit number.

The type's extended hash function (``src/backend/access/hash/hashfunc.c``,
``src/backend/utils/adt/uuid.c``):

- ``smallint``, ``integer``, ``bigint``: ``hashint2extended``, ``hashint4extended``,
  ``hashint8extended``, which agree for equal values (built for cross-type hash joins):
  the two 32-bit halves of the 64-bit value are folded into one (the high half, or its
  complement for a negative value, XORed into the low half), then hashed as a 32-bit
  word by ``hash_bytes_uint32_extended``.
- ``text``, ``varchar`` (deterministic collations), ``bytea``: ``hash_bytes_extended`` of
  the value's bytes (for text, its UTF-8 encoding: the database encoding must be UTF8).
- ``uuid``: ``hash_bytes_extended`` of its 16 bytes.

``hash_bytes_extended`` is Bob Jenkins' 2006 ``lookup3`` hash (``src/common/hashfn.c``),
returning its ``b`` and ``c`` words as one 64-bit value, with the seed mixed in first.
PostgreSQL reads the bytes as little-endian words on little-endian machines (x86-64,
ARM64) and as big-endian ones on big-endian machines, so string placements differ
between the two; this module computes the little-endian result, the one of every
server this library is likely to meet.

Every function here is pure; ``tests/test_placement.py`` checks them against a real
server's ``satisfies_hash_partition``.
"""

from __future__ import annotations

import functools
import re
import struct
import uuid
from typing import Any

HASH_PARTITION_SEED = 0x7A5B22367996DCFD
_COMBINE = 0x49A0F4DD15E5A8E3  # hash_combine64's constant
_GOLDEN = 0x9E3779B9  # lookup3's initial value, before the length
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_WORDS3 = struct.Struct("<3I").unpack_from


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    # lookup3's mix(): six rounds of subtract, rotate-XOR, add, on 32-bit words (the
    # rotations written out: this runs once per 12 bytes of key).
    a = ((a - c) & _M32) ^ (((c << 4) | (c >> 28)) & _M32)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ (((a << 6) | (a >> 26)) & _M32)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ (((b << 8) | (b >> 24)) & _M32)
    b = (b + a) & _M32
    a = ((a - c) & _M32) ^ (((c << 16) | (c >> 16)) & _M32)
    c = (c + b) & _M32
    b = ((b - a) & _M32) ^ (((a << 19) | (a >> 13)) & _M32)
    a = (a + c) & _M32
    c = ((c - b) & _M32) ^ (((b << 4) | (b >> 28)) & _M32)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int]:
    # lookup3's final(): seven XOR-subtract-rotate steps that spread every bit; returns
    # (b, c), the words the 64-bit hash is made of.
    c = ((c ^ b) - (((b << 14) | (b >> 18)) & _M32)) & _M32
    a = ((a ^ c) - (((c << 11) | (c >> 21)) & _M32)) & _M32
    b = ((b ^ a) - (((a << 25) | (a >> 7)) & _M32)) & _M32
    c = ((c ^ b) - (((b << 16) | (b >> 16)) & _M32)) & _M32
    a = ((a ^ c) - (((c << 4) | (c >> 28)) & _M32)) & _M32
    b = ((b ^ a) - (((a << 14) | (a >> 18)) & _M32)) & _M32
    c = ((c ^ b) - (((b << 24) | (b >> 8)) & _M32)) & _M32
    return b, c


@functools.lru_cache(maxsize=512)
def _seeded(length: int, seed: int) -> tuple[int, int, int]:
    """The state after the length and the seed (the same for every key of a length)."""
    a = b = c = (_GOLDEN + length + 3923095) & _M32
    if seed:
        # The seed counts as a first 12-byte block: its high word, its low word, zeros.
        a = (a + (seed >> 32)) & _M32
        b = (b + (seed & _M32)) & _M32
        a, b, c = _mix(a, b, c)
    return a, b, c


def hash_bytes_extended(data: bytes, seed: int) -> int:
    """PostgreSQL's ``hash_bytes_extended(data, len, seed)`` (little-endian): an
    unsigned 64-bit hash of ``data``."""
    n = len(data)
    a, b, c = _seeded(n, seed)
    # Whole 12-byte blocks, three little-endian words each. PostgreSQL's loop runs while
    # 12 bytes or more remain (lookup3's own keeps a last full block for its tail), so
    # a key of 12 bytes has an empty tail.
    whole = n // 12 * 12
    for i in range(0, whole, 12):
        x, y, z = _WORDS3(data, i)
        a, b, c = _mix((a + x) & _M32, (b + y) & _M32, (c + z) & _M32)
    if whole < n:
        # Up to 11 bytes: the first 4 into a, the next 4 into b, the rest into c
        # shifted up one byte (c's lowest byte is lookup3's, for the length).
        tail = data[whole:]
        x, y, z = _WORDS3(tail[:8].ljust(8, b"\0") + b"\0" + tail[8:].ljust(3, b"\0"))
        a, b, c = (a + x) & _M32, (b + y) & _M32, (c + z) & _M32
    b, c = _final(a, b, c)
    return (b << 32) | c


def hash_uint32_extended(k: int, seed: int) -> int:
    """PostgreSQL's ``hash_bytes_uint32_extended(k, seed)``: a 32-bit word's 64-bit
    hash (what ``hash_bytes_extended`` gives for its four bytes, without the bytes)."""
    a, b, c = _seeded(4, seed)
    b, c = _final((a + (k & _M32)) & _M32, b, c)
    return (b << 32) | c


def hashint8extended(value: int, seed: int) -> int:
    """PostgreSQL's ``hashint8extended`` (also ``hashint4extended`` and
    ``hashint2extended`` for values in their ranges, which it agrees with)."""
    lo = value & _M32
    hi = (value >> 32) & _M32  # an arithmetic shift, as C's on a signed int64
    lo ^= hi if value >= 0 else (~hi & _M32)
    return hash_uint32_extended(lo, seed)


def hash_combine64(a: int, b: int) -> int:
    """PostgreSQL's ``hash_combine64(a, b)`` on unsigned 64-bit values."""
    return (a ^ ((b + _COMBINE + (a << 54) + (a >> 7)) & _M64)) & _M64


def key_bytes(key: Any) -> tuple[str, int | bytes]:
    """``("int", value)`` or ``("bytes", data)``: how a key is hashed, after checking it.

    Raises :class:`TypeError` for a key of another type (``bool`` included: PostgreSQL
    hashes booleans as one byte, and ``True == 1`` in Python would make the two
    ambiguous), :class:`ValueError` for an integer outside bigint's range, a string
    that has no UTF-8 form (lone surrogates) or that holds a NUL character (``"\\x00"``:
    PostgreSQL's text types cannot store it, "invalid byte sequence for encoding UTF8:
    0x00")."""
    if isinstance(key, bool):
        raise TypeError("a shard key may be an int, str, bytes or uuid.UUID, not a bool")
    if isinstance(key, int):
        if not _INT64_MIN <= key <= _INT64_MAX:
            raise ValueError(
                f"shard key {key} is outside PostgreSQL's bigint range "
                f"({_INT64_MIN} .. {_INT64_MAX})"
            )
        return "int", key
    if isinstance(key, str):
        try:
            data = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"shard key {key[:40]!r} cannot be encoded in UTF-8 (it holds a lone surrogate)"
            ) from None
        if b"\0" in data:
            raise ValueError(
                f"shard key {key[:40]!r} holds a NUL character (\\x00), which a PostgreSQL text "
                "or varchar column cannot store; use bytes for a bytea key"
            )
        return "bytes", data
    if isinstance(key, uuid.UUID):
        return "bytes", key.bytes
    if isinstance(key, (bytes, bytearray, memoryview)):
        return "bytes", bytes(key)
    raise TypeError(
        f"a shard key may be an int, str, bytes or uuid.UUID, not {type(key).__name__}"
    )


_INT_STATE = _seeded(4, HASH_PARTITION_SEED)


def partition_hash(key: Any) -> int:
    """The unsigned 64-bit hash PostgreSQL's ``PARTITION BY HASH`` computes for a
    one-column key holding ``key``:

    - ``int``: a ``smallint``, ``integer`` or ``bigint`` column (they agree);
    - ``str``: a ``text`` or ``varchar`` column with a deterministic collation, in a
      UTF8 database (no NUL character: such a column cannot store one);
    - ``uuid.UUID``: a ``uuid`` column;
    - ``bytes`` (``bytearray``, ``memoryview``): a ``bytea`` column.

    Raises :class:`TypeError` for other types and :class:`ValueError` for values the
    column could not hold (see :func:`key_bytes`)."""
    if type(key) is int and _INT64_MIN <= key <= _INT64_MAX:
        # The common key, inlined: hashint8extended's fold, the seeded state of a 4-byte
        # key (the same for every int), final(), and hash_combine64(0, h) = h + constant.
        lo = key & _M32
        hi = (key >> 32) & _M32
        lo ^= hi if key >= 0 else hi ^ _M32
        b, c = _final((_INT_STATE[0] + lo) & _M32, _INT_STATE[1], _INT_STATE[2])
        return (((b << 32) | c) + _COMBINE) & _M64
    kind, value = key_bytes(key)
    if kind == "int":
        assert isinstance(value, int)
        h = hashint8extended(value, HASH_PARTITION_SEED)
    else:
        assert isinstance(value, bytes)
        h = hash_bytes_extended(value, HASH_PARTITION_SEED)
    return hash_combine64(0, h)


def shard_for(key: Any, modulus: int) -> int:
    """The remainder, in ``range(modulus)``, of the hash partition PostgreSQL stores
    ``key`` in when a table is ``PARTITION BY HASH`` on a column of the key's type with
    partitions ``FOR VALUES WITH (MODULUS modulus, REMAINDER r)``; equivalently, the
    ``r`` for which the server's ``satisfies_hash_partition(parent, modulus, r, key)``
    is true.

    ``modulus``: a whole number from 1 to 2**31 - 1 (PostgreSQL's ``MODULUS`` is a
    positive ``integer``: see :data:`MAX_MODULUS`). Keys: see :func:`partition_hash`
    (an ``int`` in bigint's range, a ``str`` without NUL characters, a ``uuid.UUID``,
    ``bytes``). Raises :class:`ValueError` for a bad modulus or a key no column of its
    type can hold, :class:`TypeError` for a key of another type."""
    return partition_hash(key) % check_modulus(modulus)


# PostgreSQL's largest hash partition modulus: FOR VALUES WITH (MODULUS m, ...) takes an
# integer constant (gram.y's hash_partbound_elem: Iconst, a C int), partbounds.c
# requires it to be > 0, and satisfies_hash_partition(oid, int4, int4, "any") takes it
# as an int4.
MAX_MODULUS = (1 << 31) - 1


def check_modulus(modulus: Any) -> int:
    """``modulus`` if PostgreSQL's hash partitioning can use it (a whole number from 1
    to :data:`MAX_MODULUS`); else :class:`ValueError` saying so."""
    if isinstance(modulus, bool) or not isinstance(modulus, int) or not 1 <= modulus <= MAX_MODULUS:
        raise ValueError(
            f"modulus must be a whole number from 1 to {MAX_MODULUS} (2**31 - 1: PostgreSQL's "
            f"MODULUS is a positive integer), not {modulus!r}"
        )
    return modulus


# -- the same, computed by the server ------------------------------------------------------

# PostgreSQL's extended hash function of each key type shard_for() supports, by the
# type's name as format_type() gives it, and the type its argument is cast to (int2 and
# int4 hash as int8: see hashint8extended). bytea's own (hashvarlenaextended) takes an
# "internal" argument, which SQL cannot pass; hash_array_extended() calls it on each
# element of an array (src/backend/utils/adt/arrayfuncs.c: the hash starts at 1 and is
# multiplied by 31 and added each element's hash), so a one-element array hashes to 31
# plus the value's hash.
POSTGRESQL_HASH_FUNCTIONS = {
    "smallint": ("hashint8extended", "int8"),
    "integer": ("hashint8extended", "int8"),
    "bigint": ("hashint8extended", "int8"),
    "text": ("hashtextextended", "text"),
    "character varying": ("hashtextextended", "text"),
    "uuid": ("uuid_hash_extended", "uuid"),
    "bytea": ("hash_array_extended", "bytea"),
}
# The other names PostgreSQL accepts for them (the documentation's "Data Types" table).
_TYPE_ALIASES = {
    "int2": "smallint", "int": "integer", "int4": "integer", "int8": "bigint", "varchar": "character varying",
}


def postgresql_hash_type(column_type: str) -> str | None:
    """The name in :data:`POSTGRESQL_HASH_FUNCTIONS` of a column type written as
    PostgreSQL accepts it (``int4``, ``integer``, ``varchar(20)``, ``character
    varying``, ``pg_catalog.int8``..., any case, typmod ignored), or None for a type
    :func:`shard_for` does not place (arrays, ``character``, ``numeric``...)."""
    name = re.sub(r"\s*\([^)]*\)", "", column_type)
    name = " ".join(name.lower().split())
    if name.startswith("pg_catalog."):
        name = name[len("pg_catalog."):]
    name = _TYPE_ALIASES.get(name, name)
    return name if name in POSTGRESQL_HASH_FUNCTIONS else None


def postgresql_remainder_sql(column: str, column_type: str, modulus: int) -> str:
    """A PostgreSQL expression giving, for each row, the remainder ``shard_for(column,
    modulus)`` would give (NULL for a NULL key), computed by the server's own hash
    function of the column's type and ``HASH_PARTITION_SEED``, combined and reduced as
    partbounds.c does (in ``numeric``, since SQL has no unsigned 64-bit type).

    ``column``: an SQL expression, already quoted; ``column_type``: its type, by any of
    PostgreSQL's names for it (``smallint``/``int2``, ``integer``/``int``/``int4``,
    ``bigint``/``int8``, ``text``, ``character varying``/``varchar``, ``uuid``,
    ``bytea``; see :func:`postgresql_hash_type`); ``modulus``: as for
    :func:`shard_for`. ValueError for another type or a bad modulus."""
    base = postgresql_hash_type(column_type)
    if base is None:
        raise ValueError(
            f"no SQL-callable hash function for a {column_type!r} column: shard_for() places "
            "smallint (int2), integer (int, int4), bigint (int8), text, character varying "
            "(varchar), uuid and bytea keys"
        )
    check_modulus(modulus)
    function, cast = POSTGRESQL_HASH_FUNCTIONS[base]
    two64 = 1 << 64
    # The hash comes back as a signed bigint: its unsigned value is hash mod 2**64, and
    # hash_combine64(0, h) is (h + _COMBINE) mod 2**64.
    # mod() rather than %, so that the expression goes into parametrized queries as is.
    if base == "bytea":
        hashed = (
            f"(CASE WHEN ({column}) IS NOT NULL THEN "
            f"hash_array_extended(ARRAY[({column})::bytea], {HASH_PARTITION_SEED}) END)"
        )
        offset = two64 + _COMBINE - 31
    else:
        hashed = f"{function}(({column})::{cast}, {HASH_PARTITION_SEED})"
        offset = two64 + _COMBINE
    return f"mod(mod({hashed}::numeric + {offset}, {two64}), {modulus})::int"
