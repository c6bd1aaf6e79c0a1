"""What the engine-parametrized integration tests need to know about each engine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import mysql.connector
import psycopg

_counter = itertools.count()


@dataclass(frozen=True)
class EngineOps:
    name: str
    # The driver's class of the server's "read-only" error, for pytest.raises; where it
    # is a broad class (mysql.connector), read_only_errnos narrows it down.
    read_only_error: type[BaseException]
    is_replica_sql: str  # a query returning one truthy column on a replica
    read_only_errnos: frozenset[int] = field(default_factory=frozenset)
    lag_in_bytes: bool = True  # whether the engine can tell replica lag in bytes

    def table(self) -> str:
        return f"rp_t{next(_counter)}"

    def create_table_sql(self, table: str) -> str:
        return f"CREATE TABLE {table} (id integer PRIMARY KEY, note varchar(40))"

    def check_read_only_error(self, exc: BaseException) -> None:
        """``exc`` (caught as ``read_only_error``) is the server refusing a write."""
        assert isinstance(exc, self.read_only_error), exc
        if self.read_only_errnos:
            assert getattr(exc, "errno", None) in self.read_only_errnos, exc


POSTGRESQL = EngineOps("postgresql", psycopg.errors.ReadOnlySqlTransaction, "SELECT pg_is_in_recovery()")

MARIADB = EngineOps(
    "mariadb",
    mysql.connector.errors.DatabaseError,
    "SELECT @@read_only",
    # 1290: the server runs with --read-only (a replica); 1792: a read-only transaction
    # (a primary connection handed out for a read).
    read_only_errnos=frozenset({1290, 1792}),
    lag_in_bytes=False,
)

ENGINES: dict[str, EngineOps] = {"postgresql": POSTGRESQL, "mariadb": MARIADB}


def rows(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run a statement through the DB-API, whatever the driver."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()
