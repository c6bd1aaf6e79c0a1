"""What kind of statement a piece of SQL is, told from its text alone (pure).

The router needs one answer: may this statement run on a replica? Only a plain read may:
``SELECT``, ``VALUES``, ``TABLE``, or a ``WITH`` query, without a locking clause (``FOR
UPDATE``/``SHARE``, ``LOCK IN SHARE MODE``), without ``INTO``, and, for ``WITH``, without
a data-modifying part. Anything else, or anything unclear, is treated as a write and goes
to the primary: a false "write" costs a little offload, a false "read" would fail. A read
that writes through a function (``SELECT setval(...)``) is caught by the replica itself
(it refuses with a read-only error) and rerun on the primary.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache


class Kind(enum.Enum):
    READ = "read"          # may run on a replica
    LOCKING = "locking"    # a read that locks rows: the primary, but writes nothing
    CONTROL = "control"    # transaction and session control: the primary, writes nothing
    WRITE = "write"        # anything else


_SKIP = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_LOCKING = re.compile(
    r"\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b|\bFOR\s+(?:KEY\s+)?SHARE\b|\bLOCK\s+IN\s+SHARE\s+MODE\b",
    re.I,
)
_INTO = re.compile(r"\bINTO\b", re.I)
_MODIFYING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.I)
_READ_WORDS = frozenset({"SELECT", "VALUES", "TABLE", "WITH"})
_CONTROL_WORDS = frozenset({
    "SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "START", "COMMIT", "END", "SET", "RESET",
    "SHOW", "DISCARD", "DEALLOCATE",
})


@lru_cache(maxsize=4096)
def classify(sql: str) -> Kind:
    """The kind of ``sql`` (see the module doc). Cached: Django repeats its statements."""
    head = _SKIP.match(sql)
    rest = sql[head.end() if head else 0 :]
    word = _FIRST_WORD.match(rest)
    first = word.group(0).upper() if word else ""
    if first in _CONTROL_WORDS:
        return Kind.CONTROL
    if first not in _READ_WORDS:
        return Kind.WRITE
    if _INTO.search(sql) or (first == "WITH" and _MODIFYING.search(sql)):
        return Kind.WRITE
    if _LOCKING.search(sql):
        return Kind.LOCKING
    return Kind.READ


def statement_kind(sql: object) -> Kind:
    """:func:`classify` for whatever Django hands a cursor (text, or a composed object
    that is treated as a write)."""
    if isinstance(sql, str):
        return classify(sql)
    if isinstance(sql, bytes):
        return classify(sql.decode("utf-8", "replace"))
    return Kind.WRITE
