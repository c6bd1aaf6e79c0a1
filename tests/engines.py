"""What the engine-parametrized integration tests need to know about each engine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import psycopg

_counter = itertools.count()


@dataclass(frozen=True)
class EngineOps:
    name: str
    read_only_error: type[BaseException]
    is_replica_sql: str  # a query returning one truthy column on a replica

    def table(self) -> str:
        return f"rp_t{next(_counter)}"

    def create_table_sql(self, table: str) -> str:
        return f"CREATE TABLE {table} (id integer PRIMARY KEY, note varchar(40))"


POSTGRESQL = EngineOps("postgresql", psycopg.errors.ReadOnlySqlTransaction, "SELECT pg_is_in_recovery()")

ENGINES: dict[str, EngineOps] = {"postgresql": POSTGRESQL}


def rows(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run a statement through the DB-API, whatever the driver."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()
