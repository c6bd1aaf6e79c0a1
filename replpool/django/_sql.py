"""The statement classifier (:mod:`replpool._sql`) as the Django engines call it: with
whatever Django hands a cursor, and the connection's vendor as the dialect."""

from __future__ import annotations

from .._sql import UNKNOWN, Kind, classify

__all__ = ["Kind", "statement_kind"]


def statement_kind(sql: object, dialect: str, replica_functions: frozenset[str] = frozenset()) -> Kind:
    """:func:`replpool._sql.classify` for ``sql`` as Django passes it to a cursor: text,
    bytes (decoded as UTF-8), or a composed object (psycopg's ``sql.Composed``, read as
    the text its ``as_string()`` gives). Anything else, or a composed object that cannot
    be rendered without a connection, is :data:`~replpool._sql.UNKNOWN`: the primary, and
    taken to change the session. ``dialect`` is the connection's ``vendor``
    (``"postgresql"`` or ``"mysql"``); ``replica_functions``, the alias's
    ``OPTIONS["replica_functions"]`` (lower case)."""
    if isinstance(sql, str):
        return classify(sql, dialect, replica_functions)
    if isinstance(sql, bytes):
        return classify(sql.decode("utf-8", "replace"), dialect, replica_functions)
    as_string = getattr(sql, "as_string", None)
    if as_string is not None:
        try:
            text = as_string(None)
        except Exception:
            return UNKNOWN
        if isinstance(text, str):
            return classify(text, dialect, replica_functions)
    return UNKNOWN
