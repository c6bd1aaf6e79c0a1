"""The cluster: per-member pools, the monitor, and the checkout path that applies the
router's decisions. Decisions live in ``_routing`` and ``_session``; this module does the
I/O around them."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import psycopg_pool

from . import _observe, _session
from ._engine import Engine, MemberSpec, Pool, engine_for
from ._errors import ConfigurationError, Error, NoPrimaryAvailable, PoolTimeout, TokenError
from ._monitor import Monitor
from ._positions import Position
from ._routing import (
    SELECTIONS,
    WAITABLE,
    Decision,
    Reason,
    Role,
    Selector,
    decide_read,
    resolve_pending,
    route_read,
)
from ._session import SESSION, Consistency, Level, make_consistency
from ._status import ClusterStatus, MemberStatus, PoolStatus

logger = logging.getLogger("replpool")

_NAME_RE = re.compile(r"\A[A-Za-z0-9_.:-]{1,100}\Z")
# Dead idle connections skipped on one checkout before giving up on that member.
_MAX_DEAD_SKIPS = 3


def _number(name: str, value: Any, *, minimum: float, inclusive: bool = True, unit: str = "seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigurationError(f"{name} must be a number of {unit}, not {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        op = ">=" if inclusive else ">"
        raise ConfigurationError(f"{name} must be {op} {minimum:g} {unit}, not {value!r}")
    return float(value)


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    return value


# The decisions of a cluster of one database (nothing to route).
_PINNED = Decision(None, Reason.PINNED)
_NO_REPLICA = Decision(None, Reason.NO_REPLICA)


class _Member:
    """A member's pool and its checked-out connections."""

    __slots__ = ("index", "spec", "pool", "out")

    def __init__(self, index: int, spec: MemberSpec) -> None:
        self.index = index
        self.spec = spec
        self.pool: Pool | None = None
        # id(conn) -> conn checked out for reads, to cut them if the member hangs. One
        # dict operation at a time, each atomic under the GIL: no lock on the hot path.
        self.out: dict[int, Any] = {}

    def pool_stats(self) -> dict[str, int]:
        assert self.pool is not None
        return self.pool.get_stats()


class Cluster:
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
    :param monitor_idle_interval: seconds between two polls while it serves none (1).
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
        serves no reads until its position moves. None: wait as long as the server says.
    :param failover_wait: seconds a request that needs the primary waits for one to be
        found when none is reachable, before :class:`NoPrimaryAvailable` (5).
    :param probe_timeout: seconds a member may take to answer a poll before it is taken
        out of rotation (1).
    :param connect_timeout: seconds to open a connection (3; PostgreSQL's minimum is 2).
    :param driver: ``"postgresql"`` or ``"mysql"``, when the URL scheme does not say.
    """

    def __init__(
        self,
        primary: str,
        replicas: Sequence[str] = (),
        *,
        name: str = "default",
        min_size: int = 1,
        max_size: int = 10,
        pool_options: Mapping[str, Any] | None = None,
        max_replica_lag: float = 30.0,
        max_replica_lag_bytes: int | None = None,
        monitor_interval: float = 0.1,
        monitor_idle_interval: float = 1.0,
        monitor_demand_interval: float | None = 0.005,
        causal_wait: float = 0.0,
        replica_selection: str = "least_lag",
        replica_lock_timeout: float | None = 0.5,
        failover_wait: float = 5.0,
        probe_timeout: float = 1.0,
        connect_timeout: float = 3.0,
        driver: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigurationError(
                f"name must be 1-100 letters, digits or '_.:-' (it is a metric label), not {name!r}"
            )
        self.name = name
        if isinstance(replicas, (str, bytes)) or not isinstance(replicas, Sequence):
            raise ConfigurationError(
                f"cluster {name!r}: replicas must be a list of connection strings, not "
                f"{type(replicas).__name__}"
            )
        if not isinstance(primary, str):
            raise ConfigurationError(
                f"cluster {name!r}: primary must be a connection string, not {type(primary).__name__}"
            )
        self._engine: Engine = engine_for(primary, driver)
        specs = [self._engine.member_spec(primary, f"cluster {name!r}: primary")]
        for i, text in enumerate(replicas):
            if isinstance(text, str) and driver is None and "://" in text:
                other = engine_for(text, None)
                # Compare engines, not names: mysql:// and mariadb:// share one engine,
                # whose name is the server's kind, learnt on connecting.
                if type(other) is not type(self._engine):
                    raise ConfigurationError(
                        f"cluster {name!r}: replica #{i + 1} is a {other.name} URL, but the "
                        f"primary is {self.engine_name}"
                    )
            specs.append(self._engine.member_spec(text, f"cluster {name!r}: replica #{i + 1}"))
        seen: dict[str, int] = {}
        for i, spec in enumerate(specs):
            if spec.name in seen:
                raise ConfigurationError(
                    f"cluster {name!r}: {spec.name} is listed twice (members #{seen[spec.name]} "
                    f"and #{i}); list each server once"
                )
            seen[spec.name] = i
        self.min_size = _count("min_size", min_size, 0)
        self.max_size = _count("max_size", max_size, 1)
        if self.min_size > self.max_size:
            raise ConfigurationError(
                f"min_size ({min_size}) must not exceed max_size ({max_size})"
            )
        self.pool_options = dict(pool_options or {})
        self._engine.check_pool_options(self.pool_options)
        self.max_replica_lag = _number("max_replica_lag", max_replica_lag, minimum=0, inclusive=False)
        if max_replica_lag_bytes is not None:
            _count("max_replica_lag_bytes", max_replica_lag_bytes, 0)
        self.max_replica_lag_bytes = max_replica_lag_bytes
        self.monitor_interval = _number("monitor_interval", monitor_interval, minimum=0.005)
        self.monitor_idle_interval = _number("monitor_idle_interval", monitor_idle_interval, minimum=0.005)
        self.monitor_demand_interval = (
            None if monitor_demand_interval is None
            else _number("monitor_demand_interval", monitor_demand_interval, minimum=0.001)
        )
        if self.monitor_idle_interval < self.monitor_interval:
            raise ConfigurationError(
                f"monitor_idle_interval ({monitor_idle_interval:g} s) must not be shorter than "
                f"monitor_interval ({monitor_interval:g} s): it is the slower pace of an idle cluster"
            )
        self.causal_wait = _number("causal_wait", causal_wait, minimum=0)
        self.replica_lock_timeout = (
            None if replica_lock_timeout is None
            else _number("replica_lock_timeout", replica_lock_timeout, minimum=0.001)
        )
        self.failover_wait = _number("failover_wait", failover_wait, minimum=0)
        self.probe_timeout = _number("probe_timeout", probe_timeout, minimum=0.01)
        self.connect_timeout = _number("connect_timeout", connect_timeout, minimum=0.1)
        if replica_selection not in SELECTIONS:
            raise ConfigurationError(
                f"replica_selection must be one of {', '.join(SELECTIONS)}, not {replica_selection!r}"
            )
        self.replica_selection = replica_selection
        self.checkout_timeout = float(self.pool_options.get("timeout", 30.0))

        self._members = [_Member(i, s) for i, s in enumerate(specs)]
        # PostgreSQL standbys refuse writes themselves; MariaDB/MySQL replicas may not.
        self._guard_replicas = self._engine.name != "postgresql"
        self._selector = Selector(replica_selection)
        roles: list[Role] = ["primary"]
        roles += ["replica"] * (len(specs) - 1)
        self._monitor = Monitor(
            name, self._engine, specs, roles,
            interval=self.monitor_interval,
            probe_timeout=self.probe_timeout,
            max_lag=self.max_replica_lag,
            max_lag_bytes=max_replica_lag_bytes,
            idle_interval=self.monitor_idle_interval,
            demand_interval=self.monitor_demand_interval,
        )
        self._monitor.on_member_down = self._member_down
        self._monitor.on_member_up = self._member_up
        self._monitor.pool_stats = self._pool_snapshots
        self._stats_lock = threading.Lock()
        # Checkouts by (member index, "primary" or "replica", reason, level of a read).
        self._routes: Counter[tuple[int, str, Reason, Level | None]] = Counter()
        self._opened = False
        self._closed = False

    @property
    def engine_name(self) -> str:
        """``"postgresql"``, ``"mariadb"`` or ``"mysql"``: the kind of server, which also
        names the kind of positions in this cluster's tokens. (A ``mysql://`` cluster
        learns whether it talks to MariaDB or MySQL when it first connects.)"""
        return self._engine.name

    # -- life cycle -------------------------------------------------------------------------

    def open(self, wait: bool = True) -> Cluster:
        """Open the pools and start the monitor. With ``wait``, return after every member
        answered or failed its first poll, so the first requests already know the
        topology."""
        if self._closed:
            raise Error(
                f"cluster {self.name!r} is closed, and a closed cluster cannot be opened "
                "again: make a new Cluster",
                cluster=self.name,
            )
        if self._opened:
            return self
        other = _session.registered(self.name)
        if other is not None and other is not self and isinstance(other, Cluster) and (
            {m.spec.name for m in other._members} != {m.spec.name for m in self._members}
        ):
            raise ConfigurationError(
                f"another open cluster is named {self.name!r} with other servers; sessions and "
                "tokens know clusters by name: give each cluster its own name",
                cluster=self.name,
            )
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
        if self._closed:
            return
        self._closed = True
        _session.unregister(self.name, self)
        if not self._opened:
            return
        self._monitor.stop()
        for m in self._members:
            if m.pool is not None:
                m.pool.close(timeout=timeout)
        for o in _observe._observers:
            o.closed(self.name, [m.spec.name for m in self._members])

    def __enter__(self) -> Cluster:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

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
                failed = checkout.failed_member
                if not read_only or failed is None or not self._engine.is_retryable_read(
                    exc, checkout.failed_conn, checkout.failed_on_replica
                ):
                    raise
                lock = checkout.failed_on_replica and self._engine.is_lock_timeout(exc)
                if lock:
                    self.replica_stalled(failed)
                elif avoid:
                    raise  # one more try for a member that failed; any number past locks
                logger.info(
                    "cluster %r: read failed on %s (%s); running it once more elsewhere",
                    self.name, self._members[failed].spec.name, type(exc).__name__,
                )
                avoid = avoid | {failed}
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
        level = None if consistency is None else make_consistency(consistency, max_staleness)
        if consistency is None and max_staleness is not None:
            level = make_consistency(Level.BOUNDED, max_staleness)
        return _Checkout(self, read_only, self.checkout_timeout if timeout is None else timeout, level)

    def _busy(self, index: int) -> int:
        return len(self._members[index].out)

    def _wait_for_replica(
        self, level: Consistency, first: Decision, avoid: frozenset[int]
    ) -> Decision:
        """Wait up to ``causal_wait`` for a replica to become fresh enough, asking the
        monitor for a round each time (coalesced with every other waiting read)."""
        start = time.monotonic()
        deadline = start + self.causal_wait
        topo = self._monitor.topology
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                d = Decision(None, Reason.WAITED_PRIMARY, first.needed)
                break
            self._monitor.demand()
            topo = self._monitor.wait_for_change(topo.version, left)
            d = decide_read(
                topo, self._requirement(level), self._selector, self._resolve, level=level,
                now_ns=time.monotonic_ns() if level.level is Level.BOUNDED else 0,
                avoid=avoid, busy=self._busy,
            )
            if d.member is not None:
                d = Decision(d.member, Reason.WAITED_REPLICA, d.needed)
                break
            if not d.waitable:
                break
        waited = time.monotonic() - start
        for o in _observe._observers:
            o.causal_waited(self.name, waited, "replica" if d.member is not None else "primary")
        return d

    def _primary_index(self, deadline: float, waiting: bool = True) -> int:
        """The primary's index, waiting until ``deadline`` for one to be found, unless
        the primary refuses us for a reason waiting cannot fix."""
        topo = self._monitor.topology
        while True:
            view = topo.primary_view
            if view is not None:
                return view.index
            refusal = self._monitor.primary_refusal()
            if refusal is not None:
                # A refused login, a missing database, bad options: waiting cannot fix
                # them, and the server's own message says what to change.
                for o in _observe._observers:
                    o.checkout_failed(self.name, "", "no_primary")
                raise NoPrimaryAvailable(
                    f"cluster {self.name!r} has no primary: {refusal}", cluster=self.name,
                )
            left = deadline - time.monotonic()
            if left <= 0:
                downs = "; ".join(
                    f"{m.name}: {m.error or ('a replica' if m.role == 'replica' else 'not answering')}"
                    for m in topo.members
                )
                for o in _observe._observers:
                    o.checkout_failed(self.name, "", "no_primary")
                waited = (
                    f"after waiting {self.failover_wait:g} s (failover_wait)" if waiting
                    else "(this request waited for one already)"
                )
                raise NoPrimaryAvailable(
                    f"cluster {self.name!r} has no reachable primary {waited} ({downs})",
                    cluster=self.name,
                )
            topo = self._monitor.wait_for_change(topo.version, left)

    def _getconn(self, m: _Member, timeout: float) -> Any | None:
        """A live connection from a member's pool, or None when the member is gone: its
        idle connections were dead (reported at once), or it went down while we waited.

        A wait is cut in slices of ``probe_timeout`` so that a request waiting on the
        pool of a member that just died learns it from the monitor instead of waiting
        for the whole checkout timeout (the pool would keep trying to reconnect)."""
        assert m.pool is not None
        start = time.monotonic() if _observe._observers else 0.0
        try:
            conn = m.pool.getconn(timeout=max(0.001, min(timeout, self.probe_timeout)))
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

    def _getconn_slowly(self, m: _Member, timeout: float) -> Any | None:
        """The rest of a checkout's wait, after a first slice found no connection."""
        assert m.pool is not None
        deadline = time.monotonic() + timeout - min(timeout, self.probe_timeout)
        while True:
            if not self._monitor.topology.members[m.index].up:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                self._observe_failure(m, "timeout")
                raise PoolTimeout(
                    f"cluster {self.name!r}: no connection to {m.spec.name} became free "
                    f"within {timeout:g} s (max_size={self.max_size}); raise max_size, "
                    "or the checkout timeout",
                    cluster=self.name, member=m.spec.name,
                )
            try:
                return m.pool.getconn(timeout=max(0.001, min(left, self.probe_timeout)))
            except psycopg_pool.PoolTimeout:
                continue

    def _observe_failure(self, m: _Member, kind: str) -> None:
        for o in _observe._observers:
            o.checkout_failed(self.name, m.spec.name, kind)

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
    ) -> tuple[_Member, Any]:
        deadline = time.monotonic() + (self.failover_wait if wait else 0.0)
        while True:
            m = self._members[self._primary_index(deadline, wait)]
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

    def _checkin(self, m: _Member, conn: Any, on_replica: bool, read_only_primary: bool,
                 exc: BaseException | None) -> None:
        if on_replica:
            m.out.pop(id(conn), None)
        assert m.pool is not None
        try:
            if read_only_primary and not conn.autocommit and not conn.closed:
                self._engine.set_read_only(conn, False)
        finally:
            m.pool.putconn(conn)
        if exc is not None and self._engine.is_disconnect(exc, conn):
            self._monitor.report_failure(m.index, f"connection lost: {type(exc).__name__}")

    def _count(self, index: int, role: str, reason: Reason, level: Consistency | None = None) -> None:
        lvl = level.level if level is not None else None
        key = (index, role, reason, lvl)
        with self._stats_lock:
            self._routes[key] += 1
        for o in _observe._observers:
            o.routed(self.name, self._members[index].spec.name, role, reason, lvl)

    # -- leases: the checkout path shared by connection() and the Django engines ------------

    def _check_open(self) -> None:
        if self._closed:
            raise Error(
                f"cluster {self.name!r} is closed, and a closed cluster cannot be opened "
                "again: make a new Cluster (or keep this one open until the application stops)",
                cluster=self.name,
            )
        if not self._opened:
            raise Error(
                f"cluster {self.name!r} is not open: use 'with cluster:' or cluster.open()",
                cluster=self.name,
            )

    def _requirement(self, level: Consistency) -> _session.Requirement | None:
        """What a read at ``level`` must observe on this cluster: the session's floor
        and pending observation at the session level, nothing at the others."""
        if level.level is not Level.SESSION:
            return None
        current = _session._current.get() or _session._implicit.session
        if current is None:
            return None
        req = current._reqs.get(self.name)
        if req is not None and req.engine != self.engine_name:
            raise TokenError(
                f"this session must observe a {req.engine} position on cluster {self.name!r}, "
                f"which is {self.engine_name}: the token came from another cluster",
                cluster=self.name,
            )
        return req

    def _resolve(self, req: _session.Requirement) -> _session.Requirement | None:
        """``req`` with its pending observation resolved from what the monitor has
        sampled, pinned to the first sample after it and remembered in the session (a
        later sample would ask more of the replicas than it needs); None if nothing
        resolves it yet."""
        found = self.resolve_sampled(req)
        current = _session.current_session()
        if found is None or current is None:
            return None
        current.note_resolution(self.name, found[1], found[0], found[2], found[3])
        return current._reqs.get(self.name)

    def decide_read(self, avoid: frozenset[int] = frozenset(), level: Consistency | None = None) -> Decision:
        """Where a read of the current session should go now, at ``level`` (default:
        the scope's), waiting up to ``causal_wait`` for a replica if that could help.
        No connection is taken."""
        if level is None:
            level = _session._level.get() or SESSION
        if len(self._members) == 1:
            # No replica to choose (a cluster of one database): the primary, at no cost.
            return _PINNED if level.level is Level.STRONG else _NO_REPLICA
        req = self._requirement(level)
        if req is None and not avoid and level is SESSION:
            # The common read: no requirement, nothing to avoid, an eligible replica.
            topo = self._monitor.topology
            eligible = topo.eligible
            if eligible:
                chosen = eligible[0] if len(eligible) == 1 else self._selector.choose(eligible, self._busy)
                return topo.fresh[chosen.index]
            return route_read(topo, None, self._selector, busy=self._busy)
        decision = decide_read(
            self._monitor.topology, req, self._selector, self._resolve, level=level,
            now_ns=time.monotonic_ns() if level.level is Level.BOUNDED else 0,
            avoid=avoid, busy=self._busy,
        )
        if decision.member is None and decision.reason in WAITABLE and self.causal_wait > 0:
            decision = self._wait_for_replica(level, decision, avoid)
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
            decision = self.decide_read(avoid, level)
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
            self._count(m.index, "primary", Reason.WRITE)
        return Lease(self, m, conn, False, False, Reason.WRITE, SESSION)

    def release(self, lease: Lease, exc: BaseException | None = None, *, reset_session: bool = False) -> None:
        """Give a leased connection back to its pool (it must not be in a transaction;
        the pool rolls back one that is). A connection error takes the member out.
        ``reset_session``: the caller changed the session's state (settings, temporary
        objects, session locks, ...); it is reset first, so nobody else inherits it."""
        if reset_session:
            self._engine.reset_session(lease.conn, lease.member.pool)
        self._checkin(lease.member, lease.conn, lease.on_replica,
                      lease.read_only and not lease.on_replica, exc)

    def replica_stalled(self, index: int) -> None:
        """A read on replica ``index`` gave up waiting for a lock that replay holds: it
        serves no reads until the monitor sees its position move."""
        logger.info(
            "cluster %r: a read on %s waited %g s for a lock that replay holds; it serves no "
            "reads until replay moves on", self.name, self._members[index].spec.name,
            self.replica_lock_timeout or 0,
        )
        self._monitor.report_stalled(index)

    def note_write(self) -> None:
        """The current session completed a write on this cluster just now."""
        _session.writing_session().note_write(self.name, self.engine_name, time.monotonic_ns())

    def observed(self, member: int | None, level: Consistency, reason: Reason | None = None) -> None:
        """A read at ``level`` just ended on ``member`` (None: the primary, sent there
        for ``reason``). At the session and strong levels it binds the session: its later
        reads see at least as much. A read that went to the primary because no replica was
        known to be fresh enough asks the monitor for a round now, whose samples, sent
        after this read, can tell."""
        if reason in WAITABLE:
            self._monitor.demand()
        if level.level is Level.SESSION or level.level is Level.STRONG:
            session = _session._current.get() or _session._implicit.session or _session.writing_session()
            life = self._monitor.topology.members[member].life if member is not None else 0
            session.observe(self.name, self._engine.name, time.monotonic_ns(), member, life)

    # -- hooks from the monitor -------------------------------------------------------------

    def _member_down(self, index: int, hung: bool) -> None:
        """A member stopped answering. If it hangs (frozen, partitioned), readers
        waiting on it would wait forever: cut their connections so they fail now."""
        m = self._members[index]
        if not hung or self._monitor.members[index].role == "primary":
            return
        for conn in list(m.out.values()):
            self._engine.abort(conn)

    def _pool_snapshots(self) -> list[_observe.PoolSnapshot]:
        return [
            _observe.pool_snapshot(m.spec.name, m.pool_stats())
            for m in self._members if m.pool is not None
        ]

    def _open_pool(self, index: int) -> None:
        pool = self._members[index].pool
        if pool is not None and not self._closed:
            pool.open(wait=False)

    def _member_up(self, index: int) -> None:
        pool = self._members[index].pool
        if pool is not None and self._monitor._executor is not None:
            # Weed out connections that died while the member was away.
            self._monitor._executor.submit(pool.check)

    # -- sessions ---------------------------------------------------------------------------

    def resolve_sampled(
        self, requirement: _session.Requirement
    ) -> tuple[int, Position, int | None, int] | None:
        """A sample that covers ``requirement``'s pending observation, as ``(sent_ns,
        position, member, life)`` (see :func:`replpool._routing.resolve_pending`), or
        None. No I/O: a token made meanwhile names the observation by a nonce instead."""
        return resolve_pending(requirement, self._monitor.topology, self._monitor.primary_samples)

    def raise_floor(self, timeout: float | None = None) -> Position:
        """From now on, no read at any level goes to a replica that has not replayed
        what the primary has now: a fresh primary position is sampled (one round of the
        monitor, asked for now) and becomes the cluster's floor. The Django engines call
        it when ``migrate`` ends, so a process never reads a schema older than the one
        it migrated to; the floor is also the primary's position when the cluster opened.
        Returns the floor. Raises :class:`NoPrimaryAvailable` if no primary answers
        within ``timeout`` seconds (default: ``failover_wait``)."""
        self._check_open()
        asked = time.monotonic_ns()
        deadline = time.monotonic() + (self.failover_wait if timeout is None else timeout)
        topo = self._monitor.topology
        while topo.primary_sampled_ns <= asked or topo.primary_position is None or topo.primary_view is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoPrimaryAvailable(
                    f"cluster {self.name!r}: no primary answered within "
                    f"{self.failover_wait if timeout is None else timeout:g} s to take the floor from",
                    cluster=self.name,
                )
            self._monitor.demand()
            topo = self._monitor.wait_for_change(topo.version, min(left, self.probe_timeout))
        self._monitor.raise_floor(topo.primary_position)
        floor = self._monitor.floor
        assert floor is not None
        return floor

    @property
    def floor(self) -> Position | None:
        """The cluster's floor (see :meth:`raise_floor`), None before the first sample."""
        return self._monitor.floor

    # -- status -----------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """A snapshot of every member: role, health, positions, lag, pool, routing."""
        topo = self._monitor.topology
        with self._stats_lock:
            counted = dict(self._routes)
        routes: Counter[tuple[int, str, Reason]] = Counter()
        by_level: dict[str, dict[str, int]] = {}
        for (index, role, reason, lvl), n in counted.items():
            routes[(index, role, reason)] += n
            if lvl is not None:
                levels = by_level.setdefault(lvl.value, {})
                levels[role] = levels.get(role, 0) + n
        routing: dict[str, dict[str, int]] = {}
        reads: Counter[int] = Counter()
        writes: Counter[int] = Counter()
        for (index, role, reason), n in routes.items():
            target = "replica" if role == "replica" else "primary"
            routing.setdefault(target, {})
            routing[target][reason.value] = routing[target].get(reason.value, 0) + n
            (writes if reason is Reason.WRITE else reads)[index] += n
        members = []
        for view, m in zip(topo.members, self._members):
            pool = PoolStatus.from_stats(m.pool_stats()) if m.pool is not None else None
            members.append(
                MemberStatus(
                    name=view.name,
                    role="primary" if view.index == topo.primary else view.role,
                    up=view.up,
                    eligible=view.eligible,
                    position=str(view.position) if view.position is not None else None,
                    received=str(view.received) if view.received is not None else None,
                    lag_seconds=view.lag_seconds,
                    lag_bytes=view.lag_bytes,
                    error=view.error,
                    pool=pool,
                    reads=reads[view.index],
                    writes=writes[view.index],
                )
            )
        primary = topo.members[topo.primary].name if topo.primary is not None else None
        return ClusterStatus(
            name=self.name,
            engine=self.engine_name,
            primary=primary,
            members=tuple(members),
            routing=routing,
            reads_by_level=by_level,
            failovers=self._monitor.failovers,
            monitor_rounds=self._monitor.rounds,
            poll_errors=sum(s.poll_errors for s in self._monitor.members),
        )

    def __repr__(self) -> str:
        topo = self._monitor.topology
        state = "closed" if self._closed else "open" if self._opened else "not opened"
        members = ", ".join(
            f"{v.name} {'primary' if v.index == topo.primary else v.role}"
            f"{'' if v.up else ' down'}"
            for v in topo.members
        )
        return f"<replpool.Cluster {self.name!r} {self.engine_name} {state}: {members}>"


class Lease:
    """A connection checked out of one member's pool, why it went there, and at which
    consistency level."""

    __slots__ = ("cluster", "member", "conn", "on_replica", "read_only", "reason", "level")

    def __init__(
        self, cluster: Cluster, member: _Member, conn: Any, on_replica: bool, read_only: bool,
        reason: Reason, level: Consistency = SESSION,
    ) -> None:
        self.cluster = cluster
        self.member = member
        self.conn = conn
        self.on_replica = on_replica
        self.read_only = read_only
        self.reason = reason
        self.level = level

    @property
    def index(self) -> int:
        return self.member.index


class _Checkout:
    """One ``with cluster.connection(...)`` block."""

    __slots__ = (
        "cluster", "read_only", "timeout", "level", "avoid", "lease", "failed_member",
        "failed_conn", "failed_on_replica",
    )

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
        # Where the block failed, if it did: Cluster.query() decides on a retry.
        self.failed_member: int | None = None
        self.failed_conn: Any = None
        self.failed_on_replica = False

    @property
    def reason(self) -> Reason | None:
        return self.lease.reason if self.lease is not None else None

    def __enter__(self) -> Any:
        c = self.cluster
        if self.read_only:
            lease = c.lease_read(self.timeout, self.avoid, level=self.level)
        else:
            lease = c.lease_write(self.timeout)
            # No token may claim to cover what the block writes before it commits.
            _session.writing_session().write_began(c.name)
        self.lease = lease
        try:
            c._engine.enter(lease.conn)
        except BaseException:
            if not self.read_only:
                _session.writing_session().write_ended(c.name)
            c.release(lease)
            raise
        return lease.conn

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        c, lease = self.cluster, self.lease
        assert lease is not None
        self.lease = None
        if exc is not None:
            self.failed_member, self.failed_conn = lease.index, lease.conn
            self.failed_on_replica = lease.on_replica
        try:
            c._engine.exit(lease.conn, exc)
        finally:
            c.release(lease, exc)
            # What the block saw (an error included) binds the session.
            if not self.read_only:
                session = _session.writing_session()
                session.write_ended(c.name)
                session.note_write(c.name, c.engine_name, time.monotonic_ns())
            elif lease.on_replica:
                c.observed(lease.member.index, lease.level)
            else:
                c.observed(None, lease.level, lease.reason)
