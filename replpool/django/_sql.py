"""The statement classifier (:mod:`replpool._sql`) as the Django engines call it: with
whatever Django hands a cursor, and the connection's vendor as the dialect."""

from __future__ import annotations

from .._sql import UNREADABLE, Kind, classify

__all__ = ["Kind", "statement_kind"]


def statement_kind(sql: object, dialect: str) -> Kind:
    """:func:`replpool._sql.classify` for ``sql`` as Django passes it to a cursor: text,
    bytes (decoded as UTF-8), or a composed object (psycopg ``sql.Composed``), which is not
    read and counts as a write. ``dialect`` is the connection's ``vendor``
    (``"postgresql"`` or ``"mysql"``)."""
    if isinstance(sql, str):
        return classify(sql, dialect)
    if isinstance(sql, bytes):
        return classify(sql.decode("utf-8", "replace"), dialect)
    return UNREADABLE
