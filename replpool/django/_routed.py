"""How one Django alias spreads its statements over a cluster.

Django's ``DatabaseWrapper`` holds one DB-API connection in ``self.connection``. A
replpool engine puts a :class:`RoutedConnection` there instead: it leases a primary
connection from the cluster only when something needs the primary, and a replica
connection for reads, and keeps both until Django closes the connection (the end of a
request), like Django's own pool does. Every cursor is a :class:`RoutingCursor`, which
decides per statement:

- in autocommit, a plain read (see :mod:`replpool._sql`) goes where ``Cluster.decide_read``
  says: a replica that has applied the session's writes, else the primary;
- everything else goes to the primary: writes, locking reads, anything inside a
  transaction (``atomic()``), and everything while ``pinned_to_master()`` is active.

A write in autocommit advances the session's required position at once; inside a
transaction it does so when the transaction commits. No statement is added for it: the
position is the first one the lag monitor samples afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .. import _session
from .._cluster import Cluster, Lease
from .._errors import NoPrimaryAvailable
from .._routing import Reason
from ._sql import Kind, statement_kind

if TYPE_CHECKING:  # pragma: no cover
    from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")


def shared_session(wrapper: Any) -> _session.Session | None:
    """The session to run in when ``wrapper`` is used from a thread other than the one
    that shared it (Django's ``inc_thread_sharing()``): that thread's session, so that
    the connection reads its own writes, and what it wrote binds that session too.
    None in the sharing thread, and for a wrapper that is not shared."""
    shared = wrapper._replpool_shared
    if shared is None or shared[0] == threading.get_ident():
        return None
    return shared[1]  # type: ignore[no-any-return]


def in_session(session: _session.Session, func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` with ``session`` as the calling thread's session."""
    prev = _session._current.get()
    _session._current.set(session)
    try:
        return func(*args)
    finally:
        _session._current.set(prev)


class RoutedConnection:
    """Stands in ``DatabaseWrapper.connection`` for a replpool alias."""

    def __init__(
        self,
        wrapper: BaseDatabaseWrapper,
        get_cluster: Callable[[], Cluster],
        on_primary: Callable[[Any], None] = lambda conn: None,
    ) -> None:
        self.wrapper = wrapper
        self.get_cluster = get_cluster
        self.cluster = get_cluster()
        self._on_primary = on_primary  # engine setup for a freshly leased primary connection
        self._primary: Lease | None = None
        self._replica: Lease | None = None
        self._autocommit = True
        self.dirty = False  # the current transaction wrote
        self.touched = False  # the current transaction ran something on the primary
        # The primary connection holds session state (a setting, a temporary table, a
        # session lock, ...): every statement runs there until Django closes the
        # connection, and the session is reset before the pool hands it to anyone else.
        self.stateful = False
        # The last statement ran on the replica connection held (not the primary): what
        # reads its outcome (Kind.DIAGNOSTICS: FOUND_ROWS(), SHOW WARNINGS...) runs there.
        self.last_on_replica = False
        # The session told that the current transaction wrote (no token until it ends).
        self._writer: _session.Session | None = None
        self.closed = False
        # A wait for a primary failed on this connection: do not wait again. Django
        # closes it at the end of the request (CONN_MAX_AGE is 0), so a request waits
        # for a missing primary once at most.
        self.primary_missed = False

    # -- leases ----------------------------------------------------------------------------

    def _current_cluster(self) -> Cluster:
        # The engine replaces its cluster when settings change (a test database, a new
        # time zone); leases already held go back to the cluster they came from.
        if self.cluster.closed:
            self.cluster = self.get_cluster()
        return self.cluster

    def primary(self) -> Any:
        """The primary connection, leased on first use."""
        if self._primary is None:
            try:
                lease = self._current_cluster().lease_write(
                    count=False, wait_for_primary=not self.primary_missed
                )
            except NoPrimaryAvailable:
                self.primary_missed = True
                raise
            try:
                if lease.conn.autocommit != self._autocommit:
                    lease.conn.autocommit = self._autocommit
                self._on_primary(lease.conn)
            except BaseException as exc:
                lease.cluster.release(lease, exc)
                raise
            self._primary = lease
        return self._primary.conn

    @property
    def held_primary(self) -> Any:
        """The primary connection if one is leased now, else None."""
        return self._primary.conn if self._primary is not None else None

    @property
    def primary_index(self) -> int:
        self.primary()
        assert self._primary is not None
        return self._primary.index

    def replica(self, index: int) -> Lease | None:
        """A connection to replica ``index``: the one held if it is there, else a new
        lease (None if that replica turned out dead)."""
        if self._replica is not None:
            if self._replica.index == index:
                return self._replica
            self.drop_replica()
        cluster = self._current_cluster()
        conn = cluster._checkout_replica(index, cluster.checkout_timeout)
        if conn is None:
            return None
        self._replica = Lease(cluster, cluster._members[index], conn, True, True, Reason.FRESH_REPLICA)
        return self._replica

    def drop_replica(self, exc: BaseException | None = None) -> None:
        lease, self._replica = self._replica, None
        self.last_on_replica = False
        if lease is not None:
            lease.cluster.release(lease, exc)

    # -- the DB-API connection surface Django uses -------------------------------------------

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        conn = self.held_primary
        if conn is not None:
            conn.autocommit = value
        self._autocommit = value

    def commit(self) -> None:
        shared = shared_session(self.wrapper)
        if shared is not None:
            return in_session(shared, self._commit)
        return self._commit()

    def _commit(self) -> None:
        conn = self.held_primary
        if conn is not None:
            conn.commit()
        self._transaction_ended()

    def rollback(self) -> None:
        shared = shared_session(self.wrapper)
        if shared is not None:
            return in_session(shared, self._rollback)
        return self._rollback()

    def _rollback(self) -> None:
        conn = self.held_primary
        try:
            if conn is not None:
                conn.rollback()
        finally:
            self.dirty = False  # its writes are undone; what it read still binds
            self._transaction_ended()

    def _transaction_ended(self) -> None:
        """What the transaction wrote (committed) or saw binds the session now."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.write_ended(self.cluster.name)
        if self.dirty:
            self.dirty = self.touched = False
            self.cluster.note_write()
        elif self.touched:
            self.touched = False
            self.cluster.observed(None, _session.current_consistency())

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self.primary().cursor(*args, **kwargs)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:  # closed inside a transaction that wrote: it is over
            writer.write_ended(self.cluster.name)
        if self._replica is not None:
            self.drop_replica()
        lease, self._primary = self._primary, None
        if lease is not None:
            if not self._autocommit:
                # Closed inside a transaction (Django does that to a broken one): the
                # transaction is over either way; end it here rather than in the pool.
                try:
                    lease.conn.rollback()
                except Exception:
                    pass  # a broken connection: the pool discards it
            lease.cluster.release(lease, reset_session=self.stateful)
        self.stateful = False

    def __getattr__(self, name: str) -> Any:
        # Anything else Django or psycopg asks of the connection (info, adapters,
        # pgconn, isolation_level, ...) is the primary's.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.primary(), name)

    def __repr__(self) -> str:
        held = [f"primary {self._primary.member.spec.name}"] if self._primary else []
        if self._replica:
            held.append(f"replica {self._replica.member.spec.name}")
        return f"<RoutedConnection {self.cluster.name!r} {', '.join(held) or 'idle'}>"


class CursorKit(NamedTuple):
    """What a :class:`RoutingCursor` needs of its engine, made once per wrapper (Django
    makes a cursor per query). The functions are the engine's methods, unbound (called
    with the wrapper first): bound ones kept on the wrapper would make it a cycle."""

    dialect: str  # "postgresql" or "mysql": how to read SQL
    replica_functions: frozenset[str]  # functions of the user's that only read
    make_cursor: Callable[[Any, Any], Any]  # (wrapper, driver connection): a driver cursor
    is_read_only_error: Callable[[Any, BaseException], bool]
    is_retryable_read: Callable[[Any, BaseException, Any], bool]
    closed_error: Callable[[Any, bool], BaseException]  # what the driver raises for a closed cursor


class RoutingCursor:
    """The cursor a replpool alias hands Django: each ``execute`` runs where it may, and
    the results are read from wherever it ran."""

    def __init__(self, wrapper: BaseDatabaseWrapper, kit: CursorKit) -> None:
        self._wrapper = wrapper
        (
            self._dialect,  # "postgresql" or "mysql": how to read SQL
            self._replica_functions,  # functions of the user's that only read
            self._make_cursor,
            self._is_read_only_error,
            self._is_retryable_read,
            self._closed_error,  # what the driver raises for a closed cursor (or connection)
        ) = kit
        self._cur: Any = None
        self._conn: Any = None
        self.closed = False  # as a DB-API cursor: close() makes it refuse to execute

    @property
    def _rc(self) -> RoutedConnection:
        return self._wrapper.connection  # type: ignore[no-any-return]

    def _cursor_on(self, conn: Any) -> Any:
        if self._cur is not None:
            if self._conn is conn:
                return self._cur
            self._close_current()
        self._cur, self._conn = self._make_cursor(self._wrapper, conn), conn
        return self._cur

    def _close_current(self) -> None:
        if self._cur is not None:
            try:
                self._cur.close()
            except Exception:
                pass
        self._cur = self._conn = None

    def _in_transaction(self) -> bool:
        # The wrapper is connected when its cursor runs a statement, so its own
        # autocommit flag is current (get_autocommit() would check the connection again).
        w = self._wrapper
        return w.in_atomic_block or not w.autocommit

    # -- execution ----------------------------------------------------------------------------

    def execute(self, sql: Any, params: Any = None) -> Any:
        wrapper = self._wrapper
        rc = wrapper.connection
        if self.closed or rc is None:
            # Closed, or its connection is (it takes no other one).
            raise self._closed_error(self._wrapper, not self.closed)
        if wrapper._replpool_shared is not None:  # type: ignore[attr-defined]
            shared = shared_session(wrapper)
            if shared is not None and _session._current.get() is not shared:
                return in_session(shared, self.execute, sql, params)
        kind = statement_kind(sql, self._dialect, self._replica_functions)
        in_transaction = self._in_transaction()
        if kind is Kind.READ and not in_transaction and not rc.stateful:
            return self._read(sql, params)
        if kind is Kind.DIAGNOSTICS and rc.last_on_replica:
            return self._on_held_replica(sql, params)
        if kind.sets_session_state:
            rc.stateful = True  # before it runs: a failed SET may still have done something
        if kind is Kind.CONTROL:
            return self._on_primary("execute", sql, params, None, False)
        if kind.writes:
            return self._on_primary("execute", sql, params, Reason.WRITE, True)
        if kind is Kind.SESSION:  # changes the session, reads nothing
            return self._on_primary("execute", sql, params, Reason.SESSION_STATE, False, read=False)
        if in_transaction:
            reason = Reason.IN_TRANSACTION
        elif kind is Kind.LOCKING:
            reason = Reason.LOCKING_READ
        else:  # reads the session's state, or a read of a connection that holds some
            reason = Reason.SESSION_STATE
        return self._on_primary("execute", sql, params, reason, False)

    def executemany(self, sql: Any, param_list: Sequence[Any]) -> Any:
        if self.closed or self._wrapper.connection is None:
            raise self._closed_error(self._wrapper, not self.closed)
        if statement_kind(sql, self._dialect, self._replica_functions).sets_session_state:
            self._rc.stateful = True
        return self._write("executemany", sql, param_list)

    def callproc(self, procname: str, params: Any = None) -> Any:
        if self.closed or self._wrapper.connection is None:
            raise self._closed_error(self._wrapper, not self.closed)
        self._rc.stateful = True  # a procedure may change anything, the session included
        return self._write("callproc", procname, params)

    def _write(self, method: str, sql: Any, params: Any) -> Any:
        shared = shared_session(self._wrapper)
        if shared is not None:
            return in_session(shared, self._on_primary, method, sql, params, Reason.WRITE, True)
        return self._on_primary(method, sql, params, Reason.WRITE, True)

    def _on_primary(
        self, method: str, sql: Any, params: Any, reason: Reason | None, writes: bool, read: bool = True
    ) -> Any:
        rc = self._wrapper.connection
        cur = self._cursor_on(rc.primary())
        rc.last_on_replica = False
        ok = False
        try:
            if method == "execute":  # the common case, without getattr
                result = cur.execute(sql, params) if params is not None else cur.execute(sql)
            else:
                result = getattr(cur, method)(sql, params) if params is not None else getattr(cur, method)(sql)
            ok = True
        finally:
            if reason is not None:
                lease = rc._primary
                assert lease is not None
                cluster = rc.cluster
                # What the statement saw, or wrote, binds the session: an error too (a
                # unique violation says the row exists).
                if self._in_transaction():
                    level = _session.current_consistency()
                    cluster._count(lease.member.index, "primary", reason, level if read and not writes else None)
                    rc.touched = True
                    if writes and ok and not rc.dirty:
                        rc.dirty = True
                        rc._writer = _session.writing_session()
                        rc._writer.write_began(cluster.name)
                elif writes:  # a write in autocommit: counted without a level
                    cluster._count(lease.member.index, "primary", reason, None)
                    if ok:
                        cluster.note_write()
                    else:  # it failed, having seen something (a unique violation...)
                        cluster.observed(None, _session.current_consistency(), reason)
                else:
                    level = _session.current_consistency()
                    cluster._count(lease.member.index, "primary", reason, level if read else None)
                    if read:
                        cluster.observed(None, level, reason)
        return result

    def _read(self, sql: Any, params: Any) -> Any:
        rc = self._rc
        avoid: frozenset[int] = frozenset()
        while True:
            decision = rc._current_cluster().decide_read(avoid)
            lease = rc.replica(decision.member) if decision.member is not None else None
            if lease is None:
                if decision.member is not None:  # dead at checkout: route again without it
                    avoid = avoid | {decision.member}
                    continue
                return self._on_primary("execute", sql, params, decision.reason, False)
            cur = self._cursor_on(lease.conn)
            rc.last_on_replica = True
            try:
                result = cur.execute(sql, params) if params is not None else cur.execute(sql)
            except Exception as exc:
                if self._is_read_only_error(self._wrapper, exc):
                    # A read that writes (SELECT setval(...)): the replica refused it
                    # before doing anything; run it where it can write.
                    return self._on_primary("execute", sql, params, Reason.WRITE, True)
                lock = rc.cluster._engine.is_lock_timeout(exc)
                if (lock or not avoid) and self._is_retryable_read(self._wrapper, exc, lease.conn):
                    # The replica died, cancelled the read (conflict with recovery), or
                    # it gave up waiting behind replay; nothing of a transaction is
                    # involved: run it once more elsewhere (past every locked replica).
                    if lock:
                        rc.cluster.replica_stalled(lease.index)
                    self._close_current()
                    rc.drop_replica(exc)
                    avoid = avoid | {lease.index}
                    continue
                raise
            level = _session.current_consistency()
            rc.cluster._count(lease.index, "replica", decision.reason, level)
            rc.cluster.observed(lease.index, level)
            return result

    def _on_held_replica(self, sql: Any, params: Any) -> Any:
        """A statement that reads the outcome of the previous one (found rows, warnings),
        which ran on the replica connection held: there, as on one server."""
        rc = self._rc
        lease = rc._replica
        assert lease is not None
        cur = self._cursor_on(lease.conn)
        result = cur.execute(sql, params) if params is not None else cur.execute(sql)
        level = _session.current_consistency()
        rc.cluster._count(lease.index, "replica", Reason.SESSION_STATE, level)
        rc.cluster.observed(lease.index, level)
        return result

    # -- results: from wherever the last statement ran -----------------------------------------

    def _target(self) -> Any:
        if self._cur is None:
            if self.closed or self._wrapper.connection is None:
                raise self._closed_error(self._wrapper, not self.closed)
            self._cursor_on(self._rc.primary())
        return self._cur

    def fetchone(self) -> Any:
        return self._target().fetchone()

    def fetchmany(self, size: int | None = None) -> Any:
        return self._target().fetchmany(size) if size is not None else self._target().fetchmany()

    def fetchall(self) -> Any:
        return self._target().fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._target())

    @property
    def description(self) -> Any:
        return self._cur.description if self._cur is not None else None

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount if self._cur is not None else -1

    def close(self) -> None:
        self.closed = True
        self._close_current()

    def __enter__(self) -> RoutingCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._target(), name)
