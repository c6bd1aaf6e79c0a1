"""The cluster's front for threads: per-member pools, and the checkout path that applies
the decisions. What it shares with the asyncio front (configuration, members, the monitor,
the decisions applied, counting, status) is :class:`~replpool._clusterbase.ClusterBase`;
this module does the blocking I/O around them."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import psycopg_pool

from . import _observe, _session
from ._clusterbase import ClusterBase, Lease, _Member, checkout_level, run_waits
from ._engine import Pool
from ._positions import Position
from ._routing import WAITABLE, Decision, Reason
from ._session import SESSION, Consistency, Level

__all__ = ["Cluster", "Lease"]

# Named on every write: a module constant, not read off the enum class (see
# _session.LEVEL_SESSION).
_WRITE = Reason.WRITE


class Cluster(ClusterBase[Pool]):
    """A primary and its replicas, pooled, monitored, and routed with read-your-writes.

    :param primary: the primary's connection string: a URL (``postgresql://user:pw@host:
        5432/db``, ``mysql://...``) or libpq keywords (``host=... dbname=...``).
    :param replicas: the replicas' connection strings (none is fine).
    :param name: the cluster's name in sessions, tokens, logs and metric labels.
    :param min_size: connections each member's pool keeps open (default 1).
    :param max_size: connections each member's pool may open (default 10).
    :param pool_options: any other ``psycopg_pool.ConnectionPool`` argument (``timeout``,
        ``max_lifetime``, ``max_idle``, ``kwargs``, ``configure``, ...), for every member.
    :param max_replica_lag: seconds; a replica further behind serves no reads (30).
    :param max_replica_lag_bytes: bytes of log; the same, by size (None: no limit).
    :param monitor_interval: seconds between two polls of every member while the
        cluster serves traffic (0.1).
    :param monitor_idle_interval: seconds between two polls while it serves none (1), per
        statement the servers count (MariaDB: a round that also read the replication status
        waits twice as long).
    :param monitor_demand_interval: reads that need fresher positions than the monitor
        has ask for a poll at once; at most one such poll every this many seconds
        (0.005). None: never (reads then wait for the monitor's own pace).
    :param causal_wait: seconds a read may wait for a replica to apply the session's
        writes before it goes to the primary (0: never wait).
    :param replica_selection: among fresh replicas, ``"least_lag"`` (default),
        ``"round_robin"``, ``"random"`` or ``"least_busy"``.
    :param replica_lock_timeout: seconds a read on a replica may wait for a lock before
        it gives up and runs elsewhere (0.5; MariaDB/MySQL round it up to whole
        seconds): a replica that replayed a TRUNCATE or ALTER but not its commit holds
        the table's lock until it does, forever while replay is paused. The replica then
        serves no reads until it has replayed what the primary had when the read gave up.
        None: wait as long as the server says.
    :param failover_wait: seconds a request that needs the primary waits for one to be
        found when none is reachable, before :class:`NoPrimaryAvailable` (5).
    :param probe_timeout: seconds a member may take to answer a poll before it is taken
        out of rotation (1).
    :param connect_timeout: seconds to open a connection (3; PostgreSQL's minimum is 2).
    :param driver: ``"postgresql"`` or ``"mysql"``, when the URL scheme does not say.
    """

    # -- life cycle -------------------------------------------------------------------------

    def open(self, wait: bool = True) -> Cluster:
        """Open the pools and start the monitor. With ``wait``, return after every member
        answered or failed its first poll, so the first requests already know the
        topology."""
        if self._opened and not self._closed:
            return self
        self._claim_name()
        self._opened = True
        for m in self._members:
            m.pool = self._engine.make_pool(
                m.spec, cluster=self.name, min_size=self.min_size, max_size=self.max_size,
                options=self.pool_options, connect_timeout=self.connect_timeout,
            )
        # A member's pool opens once the monitor has seen it answer (nothing is routed
        # to it before): a member down at start-up, or a replica that has not replayed a
        # new database yet, is reported once, by the monitor, not again by its pool.
        self._monitor.on_first_answer = self._open_pool
        self._monitor.start()
        _session.register(self.name, self)
        if wait:
            self._monitor.wait_first_round(self.probe_timeout + self.connect_timeout + 1)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the monitor and close every pool (connections in use are closed when
        they come back)."""
        if not self._closing():
            return
        self._monitor.stop()
        for m in self._members:
            if m.pool is not None:
                m.pool.close(timeout=timeout)
        self._closed_pools()

    def __enter__(self) -> Cluster:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checkouts --------------------------------------------------------------------------

    def query(
        self, query: Any, params: Any = None, *, read_only: bool = False,
        timeout: float | None = None, consistency: str | Level | Consistency | None = None,
        max_staleness: float | None = None,
    ) -> list[Any]:
        """Run one statement on a connection of its own and return its rows (an empty
        list when it returns none).

        Routed like :meth:`connection`. A read (``read_only=True``) that fails because
        its replica died, hung, or cancelled it for a conflict with recovery is run once
        more elsewhere, which :meth:`connection` cannot do for statements inside its
        block; one that gave up waiting for a lock that replay holds (see
        ``replica_lock_timeout``) runs elsewhere again, past every replica holding one.
        Writes are never retried.
        """
        checkout = self.connection(read_only, timeout, consistency=consistency, max_staleness=max_staleness)
        avoid: frozenset[int] = frozenset()
        while True:
            try:
                with checkout as conn:
                    return self._engine.run(conn, query, params)
            except Exception as exc:
                if not read_only:
                    raise
                failed = checkout.failed  # None: it failed before reaching a member
                retry = None if failed is None else self._retry_avoiding(
                    exc, failed.index, failed.conn, failed.on_replica, avoid
                )
                if retry is None:
                    raise
                avoid = retry
            checkout = _Checkout(self, True, self.checkout_timeout if timeout is None else timeout,
                                 checkout.level, avoid=avoid)

    def connection(
        self, read_only: bool = False, timeout: float | None = None, *,
        consistency: str | Level | Consistency | None = None, max_staleness: float | None = None,
    ) -> _Checkout:
        """A pooled connection, as a context manager: committed on normal exit, rolled
        back on an exception, returned to its pool either way.

        ``read_only=False`` (default): the primary. What the block did becomes part of
        the session when the connection is returned.

        ``read_only=True``: a replica fresh enough for the consistency level, else the
        primary in read-only mode; a write attempted on it fails with the server's
        read-only error. ``consistency``: ``"strong"``, ``"session"``, ``"bounded"``
        (with ``max_staleness``, seconds) or ``"eventual"`` (see
        :func:`replpool.consistency`); default: the scope's, else ``"session"``.
        ``timeout``: seconds to wait for a free connection (default: the pool's
        ``timeout``, 30). A bad level raises :class:`ConfigurationError`.
        """
        level = None if consistency is None and max_staleness is None else checkout_level(
            consistency, max_staleness
        )
        return _Checkout(self, read_only, self.checkout_timeout if timeout is None else timeout, level)

    def _getconn(self, m: _Member[Pool], timeout: float) -> Any | None:
        """A live connection from a member's pool, or None when the member is gone: its
        idle connections were dead (reported at once), or it went down while we waited.

        A wait is cut in slices of ``probe_timeout`` so that a request waiting on the
        pool of a member that just died learns it from the monitor instead of waiting
        for the whole checkout timeout (the pool would keep trying to reconnect)."""
        assert m.pool is not None
        start = time.monotonic() if _observe._observers else 0.0
        try:
            # The first slice, max(0.001, min(timeout, probe_timeout)), worked out
            # without calls and passed by position: this runs on every checkout.
            first = timeout if timeout < self.probe_timeout else self.probe_timeout
            conn = m.pool.getconn(first if first > 0.001 else 0.001)
        except psycopg_pool.PoolTimeout:
            conn = self._getconn_slowly(m, timeout)
            if conn is None:
                return None
        # A server that restarted left every idle connection dead: discard them all
        # now (each costs no round trip to check), taking only idle ones (no waiting),
        # and give up on the member only if none was alive: this time, and for good
        # only if one of them was opened since the monitor saw the member come back.
        if self._engine.alive(conn):  # the common case, kept short
            if start:
                for o in _observe._observers:
                    o.checkout_waited(self.name, m.spec.name, time.monotonic() - start)
            return conn
        newest = 0.0
        for _ in range(self.max_size + 1):
            if self._engine.alive(conn):
                if start:
                    waited = time.monotonic() - start
                    for o in _observe._observers:
                        o.checkout_waited(self.name, m.spec.name, waited)
                return conn
            newest = max(newest, self._engine.opened_at(conn))
            m.pool.putconn(conn)  # broken: the pool discards and replaces it
            self._observe_failure(m, "dead")
            try:
                conn = m.pool.getconn(timeout=0.001)
            except psycopg_pool.PoolTimeout:
                break
        else:
            m.pool.putconn(conn)
        self._monitor.report_failure(m.index, "its pooled connections were found dead", newest)
        return None

    def _getconn_slowly(self, m: _Member[Pool], timeout: float) -> Any | None:
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
                return m.pool.getconn(timeout=max(0.001, min(left, self.probe_timeout)))
            except psycopg_pool.PoolTimeout:
                continue

    def _checkout_replica(self, index: int, timeout: float) -> Any | None:
        m = self._members[index]
        conn = self._getconn(m, timeout)
        if conn is None:
            return None
        m.out[id(conn)] = conn
        if not self._monitor.topology.members[index].up:
            # Went down while we were checking out: its readers may be cut any moment.
            m.out.pop(id(conn), None)
            assert m.pool is not None
            m.pool.putconn(conn)
            return None
        try:
            if self._guard_replicas:
                # A MariaDB/MySQL replica may run with read_only off: its read-only
                # checkouts refuse writes all the same (the session keeps the mode, so
                # this costs one statement per connection, not per checkout).
                self._engine.set_read_only(conn, True)
            # Reads give up waiting behind replay (kept by the session, as above).
            self._engine.set_lock_timeout(conn, self.replica_lock_timeout)
        except BaseException:
            m.out.pop(id(conn), None)
            assert m.pool is not None
            m.pool.putconn(conn)
            raise
        return conn

    def _checkout_primary(
        self, timeout: float, read_only: bool, wait: bool = True
    ) -> tuple[_Member[Pool], Any]:
        deadline = time.monotonic() + (self.failover_wait if wait else 0.0)
        while True:
            view = self._monitor.topology.primary_view
            index = view.index if view is not None else run_waits(
                self._waiting_for_primary(deadline, wait), self._monitor.wait_for_change
            )
            m = self._members[index]
            conn = self._getconn(m, timeout)
            if conn is not None:
                break
        try:
            self._engine.set_read_only(conn, read_only)
            self._engine.set_lock_timeout(conn, None)  # a replica's connection before a failover
        except BaseException:
            m.pool.putconn(conn)  # type: ignore[union-attr]
            raise
        return m, conn

    # -- leases: the checkout path shared by connection() and the Django engines ------------

    def decide_read(self, avoid: frozenset[int] = frozenset(), level: Consistency | None = None) -> Decision:
        """Where a read of the current session should go now, at ``level`` (default:
        the scope's), waiting up to ``causal_wait`` for a replica if that could help.
        No connection is taken."""
        if level is None:
            level = _session._level.get() or SESSION
        decision = self._decide(avoid, level)
        if decision.member is None and decision.reason in WAITABLE and self.causal_wait > 0:
            decision = run_waits(
                self._waiting_for_replica(level, decision, avoid), self._monitor.wait_for_change
            )
        return decision

    def lease_read(
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
            decision = self._decide(avoid, level)
            if decision.member is None and decision.reason in WAITABLE and self.causal_wait > 0:
                decision = run_waits(
                    self._waiting_for_replica(level, decision, avoid), self._monitor.wait_for_change
                )
        while decision.member is not None:
            conn = self._checkout_replica(decision.member, timeout)
            if conn is not None:
                self._count(decision.member, "replica", decision.reason, level)
                return Lease(self, self._members[decision.member], conn, True, True, decision.reason, level)
            # Nothing of the caller has run yet: try elsewhere, once per member.
            avoid = avoid | {decision.member}
            decision = self.decide_read(avoid, level)
        m, conn = self._checkout_primary(timeout, read_only=True)
        self._count(m.index, "primary", decision.reason, level)
        return Lease(self, m, conn, False, True, decision.reason, level)

    def lease_write(
        self, timeout: float | None = None, *, count: bool = True, wait_for_primary: bool = True
    ) -> Lease:
        """A connection to the primary, for reads and writes. ``count=False``: the
        caller counts its statements itself (the Django engines do).
        ``wait_for_primary=False``: while no primary is reachable, fail at once rather
        than wait ``failover_wait`` (for a request that waited once already)."""
        if not self._opened or self._closed:
            self._check_open()
        monitor = self._monitor
        monitor.traffic += 1
        if monitor.idle:
            monitor.demand()
        m, conn = self._checkout_primary(
            self.checkout_timeout if timeout is None else timeout, read_only=False,
            wait=wait_for_primary,
        )
        if count:
            self._count(m.index, "primary", _WRITE)
        return Lease(self, m, conn, False, False, _WRITE, SESSION)

    def release(self, lease: Lease, exc: BaseException | None = None, *, reset_session: bool = False) -> None:
        """Give a leased connection back to its pool (it must not be in a transaction;
        the pool rolls back one that is). A connection error takes the member out.
        ``reset_session``: the caller changed the session's state (settings, temporary
        objects, session locks, ...); it is reset first, so nobody else inherits it."""
        m, conn = lease.member, lease.conn
        assert m.pool is not None
        if reset_session:
            self._engine.reset_session(conn, m.pool)
        if lease.on_replica:
            m.out.pop(id(conn), None)
        try:
            if lease.read_only and not lease.on_replica and not conn.autocommit and not conn.closed:
                self._engine.set_read_only(conn, False)  # a read on the primary
        finally:
            m.pool.putconn(conn)
        if exc is not None and self._engine.is_disconnect(exc, conn):
            self._monitor.report_failure(m.index, f"connection lost: {type(exc).__name__}")

    # -- hooks from the monitor -------------------------------------------------------------

    def _open_pool(self, index: int) -> None:
        pool = self._members[index].pool
        if pool is not None and not self._closed:
            pool.open(wait=False)

    def _member_up(self, index: int) -> None:
        pool = self._members[index].pool
        if pool is not None and self._monitor._executor is not None:
            # Weed out connections that died while the member was away.
            self._monitor._executor.submit(pool.check)

    def raise_floor(self, timeout: float | None = None) -> Position:
        """From now on, no read at any level goes to a replica that has not replayed
        what the primary has now: a fresh primary position is sampled (one round of the
        monitor, asked for now) and becomes the cluster's floor. The Django engines call
        it when ``migrate`` ends, so a process never reads a schema older than the one
        it migrated to; the floor is also the primary's position when the cluster opened.
        Returns the floor. Raises :class:`NoPrimaryAvailable` if no primary answers
        within ``timeout`` seconds (default: ``failover_wait``)."""
        floor: Position = run_waits(self._floor_waits(timeout), self._monitor.wait_for_change)
        return floor


class _Checkout:
    """One ``with cluster.connection(...)`` block."""

    __slots__ = ("cluster", "read_only", "timeout", "level", "avoid", "lease", "failed")

    def __init__(
        self, cluster: Cluster, read_only: bool, timeout: float, level: Consistency | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> None:
        self.cluster = cluster
        self.read_only = read_only
        self.timeout = timeout
        self.level = level
        self.avoid = avoid
        self.lease: Lease | None = None
        # The lease of the block that failed, if it did: Cluster.query() decides on a
        # retry from where it ran (one slot rather than three: set on every checkout).
        self.failed: Lease | None = None

    @property
    def reason(self) -> Reason | None:
        return self.lease.reason if self.lease is not None else None

    def __enter__(self) -> Any:
        c = self.cluster
        if self.read_only:
            # Positional: a call with keywords costs noticeably more, on every read.
            lease = c.lease_read(self.timeout, self.avoid, None, self.level)
        else:
            lease = c.lease_write(self.timeout)
            # No token may claim to cover what the block writes before it commits.
            _session.writing_session().write_began(c.name)
        self.lease = lease
        return lease.conn

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        c, lease = self.cluster, self.lease
        assert lease is not None
        self.lease = None
        if exc is not None:
            self.failed = lease
        try:
            c._engine.exit(lease.conn, exc)
        finally:
            c.release(lease, exc)
            if lease.on_replica:  # the common case, one call shorter
                c.observed(lease.member.index, lease.level)
            else:
                c._ended(lease)
