"""The cluster's front for asyncio: :class:`AsyncCluster`, on psycopg's
``AsyncConnection`` and psycopg_pool's ``AsyncConnectionPool``.

Everything but the checkout path is :class:`~replpool._clusterbase.ClusterBase`'s, shared
with :class:`~replpool.Cluster`: the configuration, the monitor (a thread, polling on
connections of its own), where a read goes, what a checkout records in the session, the
counting, the status. This module does the I/O of a checkout without blocking the event
loop: getting a connection from a member's pool, the liveness check of an idle one, the
waits for the monitor (a read waiting for a replica, a request waiting for a primary),
which the monitor's thread ends through the loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import psycopg_pool

from . import _observe, _session
from ._clusterbase import ClusterBase, Lease, _Member, arun_waits, checkout_level
from ._engine import AsyncPool, driver_choice
from ._errors import ConfigurationError
from ._pg import PostgresEngine
from ._pgaio import AsyncPostgres
from ._positions import Position
from ._routing import WAITABLE, Decision, Reason
from ._session import SESSION, Consistency, Level

__all__ = ["AsyncCluster"]


class AsyncCluster(ClusterBase[AsyncPool]):
    """:class:`~replpool.Cluster` for asyncio code: the same arguments, routing,
    sessions, tokens, consistency levels, monitor, metrics and status, with connections
    that are psycopg ``AsyncConnection`` objects from psycopg_pool's
    ``AsyncConnectionPool``::

        async with replpool.AsyncCluster(primary_url, [replica_url]) as cluster:
            async with cluster.connection(read_only=True) as conn:
                cur = await conn.execute("SELECT ...")
            rows = await cluster.query("SELECT ...", read_only=True)

    Sessions and scopes are the same objects (``replpool.session()``, ...), kept in
    context variables, so a task sees the session of the code that created it. Without
    an explicit session the thread's implicit one is shared by the tasks it runs: code
    observes what the tasks it awaited observed.

    PostgreSQL only: a ``mysql://`` or ``mariadb://`` URL raises
    :class:`ConfigurationError` (see the README, "asyncio"). ``pool_options`` are
    ``AsyncConnectionPool`` arguments: its ``configure``, ``check`` and ``reset``
    callbacks are ``async`` functions. The cluster belongs to the event loop that
    opened it.
    """

    _is_async = True

    def _accept_driver(self, primary: str, driver: str | None) -> None:
        if isinstance(primary, str) and driver_choice(primary, driver) == "mysql":
            raise ConfigurationError(
                f"cluster {self.name!r}: AsyncCluster supports PostgreSQL only; for MariaDB "
                "or MySQL use replpool.Cluster (from asyncio code, run its calls in threads: "
                "await asyncio.to_thread(cluster.query, ...)). See the README, \"asyncio\"",
                cluster=self.name,
            )

    # Set when the cluster opens (the constructor is ClusterBase's, shared with Cluster).
    _aio: AsyncPostgres
    _pg: PostgresEngine  # the engine, as what it is (AsyncCluster is PostgreSQL only)
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[None]]
    _unopened: set[int]  # members whose pools are not open yet

    # -- life cycle -------------------------------------------------------------------------

    async def open(self, wait: bool = True) -> AsyncCluster:
        """Open the pools and start the monitor (a thread). With ``wait``, return after
        every member answered or failed its first poll, so the first requests already
        know the topology."""
        if self._opened and not self._closed:
            return self
        self._claim_name()
        assert isinstance(self._engine, PostgresEngine)
        self._pg = self._engine
        self._aio = AsyncPostgres(self._engine)
        self._loop = asyncio.get_running_loop()
        self._tasks = set()
        self._opened = True
        for m in self._members:
            m.pool = self._aio.make_pool(
                m.spec, cluster=self.name, min_size=self.min_size, max_size=self.max_size,
                options=self.pool_options, connect_timeout=self.connect_timeout,
            )
        # A member's pool opens once the monitor has seen it answer, as Cluster's do
        # (then on this loop; a checkout that comes first opens it itself).
        self._unopened = set(range(len(self._members)))
        self._monitor.on_first_answer = self._open_pool
        self._monitor.start()
        _session.register(self.name, self)
        if wait:
            await self._monitor.wait_first_round_async(self.probe_timeout + self.connect_timeout + 1)
        return self

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor and close every pool (connections in use are closed when
        they come back)."""
        if not self._closing():
            return
        # Stopping the monitor joins its threads: not on the event loop.
        await asyncio.to_thread(self._monitor.stop)
        for m in self._members:
            if m.pool is not None:
                await m.pool.close(timeout=timeout)
        self._closed_pools()

    async def __aenter__(self) -> AsyncCluster:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- checkouts --------------------------------------------------------------------------

    async def query(
        self, query: Any, params: Any = None, *, read_only: bool = False,
        timeout: float | None = None, consistency: str | Level | Consistency | None = None,
        max_staleness: float | None = None,
    ) -> list[Any]:
        """Run one statement on a connection of its own and return its rows (an empty
        list when it returns none). Routed, and run again elsewhere when its replica
        failed, as :meth:`replpool.Cluster.query` does."""
        checkout = self.connection(read_only, timeout, consistency=consistency, max_staleness=max_staleness)
        avoid: frozenset[int] = frozenset()
        while True:
            try:
                async with checkout as conn:
                    return await self._aio.run(conn, query, params)
            except Exception as exc:
                if not read_only:
                    raise
                retry = self._retry_avoiding(
                    exc, checkout.failed_member, checkout.failed_conn, checkout.failed_on_replica, avoid
                )
                if retry is None:
                    raise
                avoid = retry
            checkout = _AsyncCheckout(self, True, self.checkout_timeout if timeout is None else timeout,
                                      checkout.level, avoid=avoid)

    def connection(
        self, read_only: bool = False, timeout: float | None = None, *,
        consistency: str | Level | Consistency | None = None, max_staleness: float | None = None,
    ) -> _AsyncCheckout:
        """A pooled ``AsyncConnection``, as an async context manager (``async with``):
        committed on normal exit, rolled back on an exception, returned to its pool
        either way. The arguments are :meth:`replpool.Cluster.connection`'s."""
        level = None if consistency is None and max_staleness is None else checkout_level(
            consistency, max_staleness
        )
        return _AsyncCheckout(self, read_only, self.checkout_timeout if timeout is None else timeout, level)

    def _take_idle(self, m: _Member[AsyncPool]) -> Any:
        """An idle connection of a member's pool, taken without awaiting (not checked
        yet: see ``_getconn``), or None."""
        if self._unopened and m.index in self._unopened:
            return None
        return m.pool.take_idle()  # type: ignore[union-attr]  # an AsyncLifoConnectionPool

    async def _getconn(
        self, m: _Member[AsyncPool], timeout: float, taken: Any = None, start: float = 0.0
    ) -> Any | None:
        """A live connection from a member's pool, or None when the member is gone (see
        ``Cluster._getconn``); ``taken``: one already taken by ``_take_idle`` (at
        ``start``, if observed), to check first."""
        assert m.pool is not None
        if taken is not None:
            conn = taken
        else:
            if self._unopened and m.index in self._unopened:
                await self._open_member(m.index)
            start = time.monotonic() if _observe._observers else 0.0
            try:
                conn = await m.pool.getconn(timeout=max(0.001, min(timeout, self.probe_timeout)))
            except psycopg_pool.PoolTimeout:
                conn = await self._getconn_slowly(m, timeout)
                if conn is None:
                    return None
        if self._engine.alive(conn):  # the common case, kept short
            if start:
                self._waited(m, start)
            return conn
        newest = 0.0
        for _ in range(self.max_size + 1):
            if self._engine.alive(conn):
                if start:
                    self._waited(m, start)
                return conn
            newest = max(newest, self._engine.opened_at(conn))
            await m.pool.putconn(conn)  # broken: the pool discards and replaces it
            self._observe_failure(m, "dead")
            try:
                conn = await m.pool.getconn(timeout=0.001)
            except psycopg_pool.PoolTimeout:
                break
        else:
            await m.pool.putconn(conn)
        self._monitor.report_failure(m.index, "its pooled connections were found dead", newest)
        return None

    async def _getconn_slowly(self, m: _Member[AsyncPool], timeout: float) -> Any | None:
        """The rest of a checkout's wait, after a first slice found no connection."""
        assert m.pool is not None
        deadline = time.monotonic() + timeout - min(timeout, self.probe_timeout)
        while True:
            if not self._monitor.topology.members[m.index].up:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._pool_timeout(m, timeout)
            try:
                return await m.pool.getconn(timeout=max(0.001, min(left, self.probe_timeout)))
            except psycopg_pool.PoolTimeout:
                continue

    def _replica_now(self, m: _Member[AsyncPool], conn: Any, start: float) -> bool:
        """Whether ``conn``, taken idle from replica ``m``'s pool (at ``start``, if
        observed), serves a read as it is (live, the replica up, its lock timeout set):
        then it is checked out, else ``_checkout_replica`` does the rest."""
        if (
            self._engine.alive(conn) and self._monitor.topology.members[m.index].up
            and not self._pg.needs_lock_timeout(conn, self.replica_lock_timeout)
        ):
            m.out[id(conn)] = conn
            if start:
                self._waited(m, start)
            return True
        return False

    def _waited(self, m: _Member[AsyncPool], start: float) -> None:
        waited = time.monotonic() - start
        for o in _observe._observers:
            o.checkout_waited(self.name, m.spec.name, waited)

    async def _checkout_replica(
        self, index: int, timeout: float, taken: Any = None, start: float = 0.0
    ) -> Any | None:
        m = self._members[index]
        conn = await self._getconn(m, timeout, taken, start)
        if conn is None:
            return None
        assert m.pool is not None
        m.out[id(conn)] = conn
        if not self._monitor.topology.members[index].up:
            # Went down while we were checking out: its readers may be cut any moment.
            m.out.pop(id(conn), None)
            await m.pool.putconn(conn)
            return None
        try:
            # Reads give up waiting behind replay (kept by the session: one statement
            # per connection, not per checkout).
            if self._pg.needs_lock_timeout(conn, self.replica_lock_timeout):
                await self._aio.set_lock_timeout(conn, self.replica_lock_timeout)
        except BaseException:
            m.out.pop(id(conn), None)
            await m.pool.putconn(conn)
            raise
        return conn

    async def _checkout_primary(
        self, timeout: float, read_only: bool, wait: bool = True
    ) -> tuple[_Member[AsyncPool], Any]:
        deadline = time.monotonic() + (self.failover_wait if wait else 0.0)
        while True:
            view = self._monitor.topology.primary_view
            index = view.index if view is not None else await arun_waits(
                self._waiting_for_primary(deadline, wait), self._monitor.wait_for_change_async
            )
            m = self._members[index]
            start = time.monotonic() if _observe._observers else 0.0
            conn = self._take_idle(m)
            if conn is not None and self._engine.alive(conn):  # the common case: no coroutine
                if start:
                    self._waited(m, start)
                break
            conn = await self._getconn(m, timeout, conn, start)
            if conn is not None:
                break
        assert m.pool is not None
        engine = self._pg
        try:
            if engine.needs_read_only(conn, read_only):
                await self._aio.set_read_only(conn, read_only)
            if engine.needs_lock_timeout(conn, None):  # a replica's connection before a failover
                await self._aio.set_lock_timeout(conn, None)
        except BaseException:
            await m.pool.putconn(conn)
            raise
        return m, conn

    # -- leases -----------------------------------------------------------------------------

    async def decide_read(self, avoid: frozenset[int] = frozenset(), level: Consistency | None = None) -> Decision:
        """Where a read of the current session should go now, at ``level`` (default:
        the scope's), waiting up to ``causal_wait`` for a replica if that could help
        (without blocking the loop). No connection is taken."""
        if level is None:
            level = _session._level.get() or SESSION
        decision = self._decide(avoid, level)
        if decision.member is None and decision.reason in WAITABLE and self.causal_wait > 0:
            decision = await arun_waits(
                self._waiting_for_replica(level, decision, avoid), self._monitor.wait_for_change_async
            )
        return decision

    async def lease_read(
        self, timeout: float | None = None, avoid: frozenset[int] = frozenset(),
        decision: Decision | None = None, level: Consistency | None = None,
    ) -> Lease:
        """A read-only connection, routed by :meth:`decide_read` (or ``decision``). A
        replica found dead at checkout is avoided and the read routed again."""
        if not self._opened or self._closed:
            self._check_open()
        if level is None:
            level = _session._level.get() or SESSION
        monitor = self._monitor
        monitor.traffic += 1
        if monitor.idle:
            monitor.demand()
        timeout = self.checkout_timeout if timeout is None else timeout
        if decision is None:
            # decide_read(), without a coroutine unless it waits (the common case).
            decision = self._decide(avoid, level)
            if decision.member is None and decision.reason in WAITABLE and self.causal_wait > 0:
                decision = await arun_waits(
                    self._waiting_for_replica(level, decision, avoid), self._monitor.wait_for_change_async
                )
        while decision.member is not None:
            # The common case without a coroutine: an idle connection, ready as it is.
            m = self._members[decision.member]
            start = time.monotonic() if _observe._observers else 0.0
            conn = self._take_idle(m)
            if conn is None or not self._replica_now(m, conn, start):
                conn = await self._checkout_replica(decision.member, timeout, conn, start)
            if conn is not None:
                self._count(decision.member, "replica", decision.reason, level)
                return Lease(self, self._members[decision.member], conn, True, True, decision.reason, level)
            # Nothing of the caller has run yet: try elsewhere, once per member.
            avoid = avoid | {decision.member}
            decision = await self.decide_read(avoid, level)
        m, conn = await self._checkout_primary(timeout, read_only=True)
        self._count(m.index, "primary", decision.reason, level)
        return Lease(self, m, conn, False, True, decision.reason, level)

    async def lease_write(
        self, timeout: float | None = None, *, count: bool = True, wait_for_primary: bool = True
    ) -> Lease:
        """A connection to the primary, for reads and writes. ``wait_for_primary=False``:
        while no primary is reachable, fail at once rather than wait ``failover_wait``."""
        if not self._opened or self._closed:
            self._check_open()
        monitor = self._monitor
        monitor.traffic += 1
        if monitor.idle:
            monitor.demand()
        m, conn = await self._checkout_primary(
            self.checkout_timeout if timeout is None else timeout, read_only=False,
            wait=wait_for_primary,
        )
        if count:
            self._count(m.index, "primary", Reason.WRITE)
        return Lease(self, m, conn, False, False, Reason.WRITE, SESSION)

    async def release(self, lease: Lease, exc: BaseException | None = None) -> None:
        """Give a leased connection back to its pool (the pool rolls back a transaction
        left open). A connection error takes the member out."""
        if not self._release_now(lease, exc):
            await self._release_slowly(lease, exc)

    async def _release_slowly(self, lease: Lease, exc: BaseException | None) -> None:
        """:meth:`release` where :meth:`_release_now` could not."""
        m, conn = lease.member, lease.conn
        assert m.pool is not None
        if lease.on_replica:
            m.out.pop(id(conn), None)
        try:
            if (
                lease.read_only and not lease.on_replica and not conn.autocommit and not conn.closed
                and self._pg.needs_read_only(conn, False)
            ):
                await self._aio.set_read_only(conn, False)  # a read on the primary
        finally:
            await m.pool.putconn(conn)
        if exc is not None and self._engine.is_disconnect(exc, conn):
            self._monitor.report_failure(m.index, f"connection lost: {type(exc).__name__}")

    def _release_now(self, lease: Lease, exc: BaseException | None) -> bool:
        """:meth:`release` without awaiting, in the common case (nothing to set on the
        connection, and the pool's short path takes it back); False: not released, the
        caller awaits ``_release_slowly``."""
        if lease.read_only and not lease.on_replica:
            return False  # a read on the primary: its read-only setting may need undoing
        m, conn = lease.member, lease.conn
        if lease.on_replica:
            m.out.pop(id(conn), None)
        if not m.pool.put_idle(conn):  # type: ignore[union-attr]  # an AsyncLifoConnectionPool
            return False
        if exc is not None and self._engine.is_disconnect(exc, conn):
            self._monitor.report_failure(m.index, f"connection lost: {type(exc).__name__}")
        return True

    # -- hooks from the monitor -------------------------------------------------------------

    def _on_loop(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as a task of the cluster's loop (called in another thread)."""
        loop = self._loop
        if loop is None:
            return

        def start() -> None:
            task = loop.create_task(work())
            self._tasks.add(task)
            task.add_done_callback(_forget(self._tasks))

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:
            pass  # the loop is closed

    def _open_pool(self, index: int) -> None:
        # Called in the monitor's thread, when the member first answers.
        self._on_loop(lambda: self._open_member(index))

    async def _open_member(self, index: int) -> None:
        pool = self._members[index].pool
        if pool is not None and index in self._unopened and not self._closed:
            await pool.open(wait=False)
            self._unopened.discard(index)

    def _member_up(self, index: int) -> None:
        # Called in the monitor's thread: check the pool on the cluster's loop.
        pool = self._members[index].pool
        if pool is not None and index not in self._unopened:
            self._on_loop(pool.check)

    async def raise_floor(self, timeout: float | None = None) -> Position:
        """:meth:`replpool.Cluster.raise_floor`, without blocking the loop."""
        floor: Position = await arun_waits(self._floor_waits(timeout), self._monitor.wait_for_change_async)
        return floor


def _forget(tasks: set[asyncio.Task[None]]) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed check is the pool's to log

    return done


class _AsyncCheckout:
    """One ``async with cluster.connection(...)`` block."""

    __slots__ = (
        "cluster", "read_only", "timeout", "level", "avoid", "lease", "failed_member",
        "failed_conn", "failed_on_replica",
    )

    def __init__(
        self, cluster: AsyncCluster, read_only: bool, timeout: float, level: Consistency | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> None:
        self.cluster = cluster
        self.read_only = read_only
        self.timeout = timeout
        self.level = level
        self.avoid = avoid
        self.lease: Lease | None = None
        # Where the block failed, if it did: AsyncCluster.query() decides on a retry.
        self.failed_member: int | None = None
        self.failed_conn: Any = None
        self.failed_on_replica = False

    @property
    def reason(self) -> Reason | None:
        return self.lease.reason if self.lease is not None else None

    async def __aenter__(self) -> Any:
        c = self.cluster
        if self.read_only:
            lease = await c.lease_read(self.timeout, self.avoid, level=self.level)
        else:
            lease = await c.lease_write(self.timeout)
            # No token may claim to cover what the block writes before it commits.
            _session.writing_session().write_began(c.name)
        self.lease = lease
        # psycopg's AsyncConnection.__aenter__ only returns the connection: nothing to do.
        return lease.conn

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        c, lease = self.cluster, self.lease
        assert lease is not None
        self.lease = None
        if exc is not None:
            self.failed_member, self.failed_conn = lease.index, lease.conn
            self.failed_on_replica = lease.on_replica
        try:
            if c._pg.in_transaction(lease.conn):
                await c._aio.exit(lease.conn, exc)
        finally:
            if not c._release_now(lease, exc):  # the common case, without a coroutine
                await c._release_slowly(lease, exc)
            c._ended(lease)
