"""What the engine-parametrized integration tests need to know about each engine."""

from __future__ import annotations

import dataclasses
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
    lab_fixture: str = ""  # the shared lab's fixture
    lab_options: dict[str, Any] = field(default_factory=dict)  # the lab class's options
    replica_read_only: bool = True  # whether the lab's replicas run with read_only on

    def table(self) -> str:
        return f"rp_t{next(_counter)}"

    def create_table_sql(self, table: str) -> str:
        return f"CREATE TABLE {table} (id integer PRIMARY KEY, note varchar(40))"

    def check_read_only_error(self, exc: BaseException) -> None:
        """``exc`` (caught as ``read_only_error``) is the server refusing a write."""
        assert isinstance(exc, self.read_only_error), exc
        if self.read_only_errnos:
            assert getattr(exc, "errno", None) in self.read_only_errnos, exc


POSTGRESQL = EngineOps(
    "postgresql", psycopg.errors.ReadOnlySqlTransaction, "SELECT pg_is_in_recovery()",
    lab_fixture="postgres_lab",
)

MARIADB = EngineOps(
    "mariadb",
    mysql.connector.errors.DatabaseError,
    # The lab's replicas have applied replicated transactions from the start (its users
    # and database come by replication) and its primary never has; read_only may be off
    # on replicas.
    "SELECT @@GLOBAL.gtid_slave_pos <> ''",
    # 1290: the server runs with --read-only (a replica); 1792: a read-only transaction
    # (a primary connection handed out for a read).
    read_only_errnos=frozenset({1290, 1792}),
    lag_in_bytes=False,
    lab_fixture="mariadb_lab",
)
# Replicas with read_only off (MariaDB's default): replpool must know them for replicas
# from their replication, and its read-only connections there still refuse writes (1792).
MARIADB_WRITABLE_REPLICAS = dataclasses.replace(
    MARIADB, lab_fixture="mariadb_lab_writable_replicas",
    lab_options={"replica_read_only": False}, replica_read_only=False,
)

ENGINES: dict[str, EngineOps] = {"postgresql": POSTGRESQL, "mariadb": MARIADB}
# The engine-parametrized cluster tests run on each of these labs.
CLUSTER_LABS: dict[str, EngineOps] = {
    **ENGINES, "mariadb-writable-replicas": MARIADB_WRITABLE_REPLICAS,
}


def rows(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run a statement through the DB-API, whatever the driver."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()
