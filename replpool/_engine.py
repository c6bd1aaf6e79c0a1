"""What replpool needs from a database engine, in one small interface.

The cluster, monitor and router never touch a driver: they go through an :class:`Engine`
(one per server family: PostgreSQL through psycopg, MariaDB/MySQL through
mysql-connector-python) and a :class:`Pool` per member (psycopg_pool for PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._health import Failure
from ._positions import Position
from ._roles import Source


@dataclass(frozen=True)
class MemberSpec:
    """A member as configured: ``name`` is ``host:port`` (used in logs, errors and metric
    labels); ``conninfo`` holds the password and is never shown."""

    name: str
    conninfo: str = field(repr=False)
    host: str
    port: int
    database: str | None
    params: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True, slots=True)
class Replication:
    """What a MariaDB/MySQL member says of its replication, for the role decision
    (:mod:`replpool._roles`). ``sources``: its replication connections, None when the
    monitor's user may not read them. ``applied``: what replication applied
    (``gtid_slave_pos``); ``written``: what its binary log holds (``gtid_binlog_pos``;
    None without one). MySQL's ``gtid_executed`` is both."""

    read_only: bool
    sources: tuple[Source, ...] | None
    server_id: int | None
    applied: Position | None
    written: Position | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of one member. ``position``: replay position on a replica, current write
    position on a primary. ``sent_ns``: ``time.monotonic_ns()`` before the query was
    sent, so the position is at least what the server had at that moment."""

    in_recovery: bool
    position: Position | None
    received: Position | None
    sent_ns: int
    epoch: str | None = None  # changes when the server restarts
    # MariaDB/MySQL: the evidence ``in_recovery`` was guessed from (the monitor decides
    # the role from every member's, see replpool._roles); None for PostgreSQL.
    replication: Replication | None = None
    # Statements the poll ran, as the server counts them (MariaDB/MySQL: 2 when the
    # replication status came with it); the idle pace spaces rounds by it.
    statements: int = 1


class Pool(Protocol):
    """The per-member pool interface, psycopg_pool's ``ConnectionPool`` shape."""

    name: str

    def open(self, wait: bool = False, timeout: float = 30.0) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...

    def getconn(self, timeout: float | None = None) -> Any: ...

    def putconn(self, conn: Any) -> None: ...

    def get_stats(self) -> dict[str, int]: ...

    def check(self) -> None: ...


class AsyncPool(Protocol):
    """The per-member pool interface of the asyncio front, psycopg_pool's
    ``AsyncConnectionPool`` shape (``get_stats`` may be called from another thread)."""

    name: str

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None: ...

    async def close(self, timeout: float = 5.0) -> None: ...

    async def getconn(self, timeout: float | None = None) -> Any: ...

    async def putconn(self, conn: Any) -> None: ...

    def get_stats(self) -> dict[str, int]: ...

    async def check(self) -> None: ...


class Engine(Protocol):
    @property
    def name(self) -> str:
        """``"postgresql"``, ``"mariadb"`` or ``"mysql"`` (a MySQL-protocol engine may
        learn which from the server's greeting)."""
        ...

    def member_spec(self, text: str, what: str) -> MemberSpec: ...

    def make_pool(
        self, spec: MemberSpec, *, cluster: str, min_size: int, max_size: int,
        options: Mapping[str, Any], connect_timeout: float,
    ) -> Pool: ...

    def pool_option_names(self) -> frozenset[str]: ...

    def check_pool_options(self, options: Mapping[str, Any]) -> None: ...

    def monitor_connect(self, spec: MemberSpec, timeout: float) -> Any: ...

    def poll(self, conn: Any, thorough: bool = False) -> Sample:
        """One poll. ``thorough``: the monitor is looking for a primary (none is known,
        or the one it had is down): read everything that decides a role now, even what
        is otherwise read less often."""
        ...

    def close_quietly(self, conn: Any) -> None: ...

    def abort(self, conn: Any) -> None: ...

    def alive(self, conn: Any) -> bool: ...

    def opened_at(self, conn: Any) -> float: ...

    def exit(self, conn: Any, exc: BaseException | None) -> None:
        """End a ``connection()`` block: commit on success, roll back on an error, as
        psycopg's ``with conn`` does (nothing to do when the block opened no
        transaction). A block starts with nothing to send: a transaction starts with its
        first statement."""
        ...

    def set_read_only(self, conn: Any, read_only: bool) -> None: ...

    def reset_session(self, conn: Any, pool: Any) -> None:
        """Bring a connection's session back to what its pool set up (settings,
        temporary objects, prepared statements, session locks, ... all gone), before
        the pool hands it to anyone else; a connection that cannot be reset is closed
        (the pool replaces it)."""
        ...

    def set_lock_timeout(self, conn: Any, seconds: float | None) -> None:
        """Make the session's statements give up waiting for a lock after ``seconds``
        (None: the server's default). Remembered on the connection: a change costs a
        statement, a checkout that needs none costs nothing."""
        ...

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """The statement gave up waiting for a lock (see :meth:`set_lock_timeout`)."""
        ...

    def run(self, conn: Any, query: Any, params: Any) -> list[Any]: ...

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool: ...

    def is_retryable_read(self, exc: BaseException, conn: Any, on_replica: bool | None = None) -> bool:
        """Whether a read that failed with ``exc`` may run again elsewhere.
        ``on_replica``: whether replpool had sent it to a replica (None: unknown)."""
        ...

    def classify_failure(self, exc: BaseException) -> Failure:
        """What a failed connection or poll means for waiting (no I/O)."""
        ...


def driver_choice(spec_text: str, driver: str | None) -> str | None:
    """``"postgresql"`` or ``"mysql"``: the family a connection string (by URL scheme)
    or an explicit ``driver`` names, without importing its driver; None if neither."""
    scheme = spec_text.split("://", 1)[0].lower() if "://" in spec_text else None
    choice = driver or {
        "postgresql": "postgresql", "postgres": "postgresql",
        "mysql": "mysql", "mariadb": "mysql",
    }.get(scheme or "", None)
    if choice is None and scheme is None:
        choice = "postgresql"  # libpq keyword strings
    if choice in ("postgresql", "postgres", "psycopg"):
        return "postgresql"
    if choice in ("mysql", "mariadb"):
        return "mysql"
    return None


def engine_for(spec_text: str, driver: str | None) -> Engine:
    """The engine for a connection string (by URL scheme) or an explicit ``driver``."""
    from ._errors import ConfigurationError

    choice = driver_choice(spec_text, driver)
    if choice == "postgresql":
        from ._pg import PostgresEngine

        return PostgresEngine()
    if choice == "mysql":
        try:
            from ._mysql import MySQLEngine
        except ImportError as exc:
            raise ConfigurationError(
                "MariaDB/MySQL support needs mysql-connector-python: pip install "
                f"'replpool[mysql]' ({exc})"
            ) from None
        return MySQLEngine()
    scheme = spec_text.split("://", 1)[0].lower() if "://" in spec_text else None
    raise ConfigurationError(
        f"unknown driver {driver or scheme!r}: use a postgresql:// or mysql:// URL, libpq "
        "keywords, or driver='postgresql' / driver='mysql'"
    )
