"""The statement classifier (:mod:`replpool._sql`) as the Django engines call it: with
whatever Django hands a cursor, and the connection's vendor as the dialect."""

from __future__ import annotations

from .._sql import UNREADABLE, Kind, classify

__all__ = ["Kind", "statement_kind"]


def statement_kind(sql: object, dialect: str, replica_functions: frozenset[str] = frozenset()) -> Kind:
    """:func:`replpool._sql.classify` for ``sql`` as Django passes it to a cursor: text,
    bytes (decoded as UTF-8), or a composed object (psycopg ``sql.Composed``), which is not
    read and counts as a write. ``dialect`` is the connection's ``vendor``
    (``"postgresql"`` or ``"mysql"``); ``replica_functions``, the alias's
    ``OPTIONS["replica_functions"]`` (lower case)."""
    if isinstance(sql, str):
        return classify(sql, dialect, replica_functions)
    if isinstance(sql, bytes):
        return classify(sql.decode("utf-8", "replace"), dialect, replica_functions)
    return UNREADABLE
