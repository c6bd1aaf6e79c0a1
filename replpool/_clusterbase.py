"""What both fronts of a cluster share, :class:`~replpool.Cluster` (threads) and
:class:`~replpool.AsyncCluster` (asyncio): the configuration and its validation, the
members, the monitor and its hooks, where a read goes now (the routing and session
decisions of ``_routing`` and ``_session``, applied), what a checkout records in the
session, the counting, and the status. No I/O here; where a front must wait for the
monitor (a read waiting for a replica, a request waiting for a primary, the floor), the
waiting loop is written once, as a generator of waits, and each front runs it with its own
kind of waiting (:func:`run_waits`, :func:`arun_waits`)."""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from . import _observe, _session
from ._engine import AsyncPool, Engine, MemberSpec, Pool, engine_for
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
    Topology,
    decide_read,
    resolve_pending,
    usual_read,
)
from ._session import LEVEL_BOUNDED, LEVEL_SESSION, LEVEL_STRONG, SESSION, Consistency, Level, make_consistency
from ._status import ClusterStatus, MemberStatus, PoolStatus

logger = logging.getLogger("replpool")

_NAME_RE = re.compile(r"\A[A-Za-z0-9_.:-]{1,100}\Z")
# Dead idle connections skipped on one checkout before giving up on that member.
_MAX_DEAD_SKIPS = 3
# How a checkout is counted: member index, "primary" or "replica", reason, level of a
# read (None: a write). Counted keys are folded into the totals once this many gathered.
RouteKey = tuple[int, str, Reason, Level | None]
_FOLD_AT = 4096


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


# The kind of pool of a front's members: Pool (threads) or AsyncPool (asyncio).
P = TypeVar("P", Pool, AsyncPool)


class _Member(Generic[P]):
    """A member's pool and its checked-out connections."""

    __slots__ = ("index", "spec", "pool", "out")

    def __init__(self, index: int, spec: MemberSpec) -> None:
        self.index = index
        self.spec = spec
        self.pool: P | None = None
        # id(conn) -> conn checked out for reads, to cut them if the member hangs. One
        # dict operation at a time, each atomic under the GIL: no lock on the hot path.
        self.out: dict[int, Any] = {}

    def pool_stats(self) -> dict[str, int]:
        assert self.pool is not None
        return self.pool.get_stats()



def checkout_level(
    consistency: str | Level | Consistency | None, max_staleness: float | None
) -> Consistency | None:
    """The level of one checkout from ``connection()``'s or ``query()``'s arguments
    (None: the scope's). A bad level raises ConfigurationError."""
    if consistency is None:
        return None if max_staleness is None else make_consistency(Level.BOUNDED, max_staleness)
    return make_consistency(consistency, max_staleness)


# A wait a front must do for the monitor: until the topology is newer than this version,
# at most this many seconds. The waiting loops yield these and are sent the topology.
Wait = tuple[int, float]
Waits = Generator[Wait, Topology, Any]


def run_waits(waits: Generator[Wait, Topology, Any], wait: Callable[[int, float], Topology]) -> Any:
    """Run a waiting loop of :class:`ClusterBase` with a blocking ``wait``; its result."""
    try:
        request = next(waits)
        while True:
            request = waits.send(wait(*request))
    except StopIteration as stop:
        return stop.value


async def arun_waits(
    waits: Generator[Wait, Topology, Any], wait: Callable[[int, float], Awaitable[Topology]]
) -> Any:
    """Run a waiting loop of :class:`ClusterBase` with an asyncio ``wait``; its result."""
    try:
        request = next(waits)
        while True:
            request = waits.send(await wait(*request))
    except StopIteration as stop:
        return stop.value


class ClusterBase(Generic[P]):
    """A primary and its replicas, pooled, monitored, and routed with read-your-writes:
    what :class:`~replpool.Cluster` and :class:`~replpool.AsyncCluster` share (see the
    module doc). The arguments are both fronts', described on :class:`~replpool.Cluster`."""

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
        self._accept_driver(primary, driver)
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

        self._members: list[_Member[P]] = [_Member(i, s) for i, s in enumerate(specs)]
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
        # Checkouts by (member index, "primary" or "replica", reason, level of a read).
        # A checkout appends its key to _tally (a deque's append is atomic: no lock on
        # the hot path, and no count lost between threads); the keys are folded into
        # _routes, under _stats_lock, when status() reads them or when many gathered.
        self._tally: deque[RouteKey] = deque()
        self._stats_lock = threading.Lock()
        self._routes: Counter[RouteKey] = Counter()
        self._opened = False
        self._closed = False
        self._pid = 0  # the process that opened it (see _closing)

    @property
    def engine_name(self) -> str:
        """``"postgresql"``, ``"mariadb"`` or ``"mysql"``: the kind of server, which also
        names the kind of positions in this cluster's tokens. (A ``mysql://`` cluster
        learns whether it talks to MariaDB or MySQL when it first connects.)"""
        return self._engine.name

    def _accept_driver(self, primary: str, driver: str | None) -> None:
        """Refuse a kind of server this front does not support (ConfigurationError)."""

    @property
    def closed(self) -> bool:
        return self._closed

    # -- life cycle (the bookkeeping; each front opens and closes its pools) ---------------

    def _claim_name(self) -> None:
        """Before opening: sessions and tokens know clusters by name, so another open
        cluster of this name must have the same servers. Refuses a closed cluster."""
        self._pid = os.getpid()
        if self._closed:
            raise Error(
                f"cluster {self.name!r} is closed, and a closed cluster cannot be opened "
                f"again: make a new {type(self).__name__}",
                cluster=self.name,
            )
        other = _session.registered(self.name)
        if other is not None and other is not self and isinstance(other, ClusterBase) and (
            {m.spec.name for m in other._members} != {m.spec.name for m in self._members}
        ):
            raise ConfigurationError(
                f"another open cluster is named {self.name!r} with other servers; sessions and "
                "tokens know clusters by name: give each cluster its own name",
                cluster=self.name,
            )

    def _closing(self) -> bool:
        """Mark the cluster closed; whether it had pools and a monitor to stop.

        Not in a process forked after it opened (Django's parallel test runner forks its
        workers with the parent's clusters): the connections there share their sockets
        with the parent's, and closing them would end the parent's sessions (libpq and
        MariaDB say goodbye to the server), and the monitor's locks may have been held
        by a thread that does not exist in the child. The copy is abandoned: its
        connections are dropped without a word when the process ends."""
        if self._closed:
            return False
        self._closed = True
        _session.unregister(self.name, self)
        if self._pid != os.getpid():
            logger.debug("cluster %r: closed in a process forked after it opened: abandoned", self.name)
            return False
        return self._opened

    def _closed_pools(self) -> None:
        for o in _observe._observers:
            o.closed(self.name, [m.spec.name for m in self._members])

    def _check_open(self) -> None:
        if self._closed:
            raise Error(
                f"cluster {self.name!r} is closed, and a closed cluster cannot be opened "
                f"again: make a new {type(self).__name__} (or keep this one open until the "
                "application stops)",
                cluster=self.name,
            )
        if not self._opened:
            how = "'async with cluster:' or await cluster.open()" if self._is_async else (
                "'with cluster:' or cluster.open()"
            )
            raise Error(f"cluster {self.name!r} is not open: use {how}", cluster=self.name)

    _is_async = False

    # -- where a read goes ---------------------------------------------------------------------

    def _busy(self, index: int) -> int:
        return len(self._members[index].out)

    def _requirement(self, level: Consistency) -> _session.Requirement | None:
        """What a read at ``level`` must observe on this cluster: the session's floor
        and pending observation at the session level, nothing at the others."""
        if level.level is not LEVEL_SESSION:
            return None
        current = _session._current.get() or _session._implicit.session
        if current is None:
            return None
        req = current._reqs.get(self.name)
        if req is not None and req.engine != self._engine.name:
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

    def _decide(self, avoid: frozenset[int], level: Consistency) -> Decision:
        """Where a read of the current session at ``level`` should go now, without
        waiting. No connection is taken."""
        if len(self._members) == 1:
            # No replica to choose (a cluster of one database): the primary, at no cost.
            return _PINNED if level.level is LEVEL_STRONG else _NO_REPLICA
        req = self._requirement(level)
        if not avoid and level is SESSION:
            usual = usual_read(self._monitor.topology, req, self._selector, self._busy)
            if usual is not None:
                return usual
        return decide_read(
            self._monitor.topology, req, self._selector, self._resolve, level=level,
            now_ns=time.monotonic_ns() if level.level is LEVEL_BOUNDED else 0,
            avoid=avoid, busy=self._busy,
        )

    def _waiting_for_replica(self, level: Consistency, first: Decision, avoid: frozenset[int]) -> Waits:
        """Wait up to ``causal_wait`` for a replica to become fresh enough, asking the
        monitor for a round each time (coalesced with every other waiting read); returns
        the decision."""
        start = time.monotonic()
        deadline = start + self.causal_wait
        topo = self._monitor.topology
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                d = Decision(None, Reason.WAITED_PRIMARY, first.needed)
                break
            self._monitor.demand()
            topo = yield (topo.version, left)
            d = decide_read(
                topo, self._requirement(level), self._selector, self._resolve, level=level,
                now_ns=time.monotonic_ns() if level.level is LEVEL_BOUNDED else 0,
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

    def _waiting_for_primary(self, deadline: float, waiting: bool = True) -> Waits:
        """The primary's index, waiting until ``deadline`` (``time.monotonic()``) for one
        to be found, unless the primary refuses us for a reason waiting cannot fix;
        :class:`NoPrimaryAvailable` then. ``waiting``: whether the caller waits (a
        request that waited once already does not)."""
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
            topo = yield (topo.version, left)

    # -- checkouts: what both fronts record ----------------------------------------------------

    def _pool_timeout(self, m: _Member[P], timeout: float) -> PoolTimeout:
        self._observe_failure(m, "timeout")
        return PoolTimeout(
            f"cluster {self.name!r}: no connection to {m.spec.name} became free "
            f"within {timeout:g} s (max_size={self.max_size}); raise max_size, "
            "or the checkout timeout",
            cluster=self.name, member=m.spec.name,
        )

    def _observe_failure(self, m: _Member[P], kind: str) -> None:
        for o in _observe._observers:
            o.checkout_failed(self.name, m.spec.name, kind)

    def _count(self, index: int, role: str, reason: Reason, level: Consistency | None = None) -> None:
        lvl = level.level if level is not None else None
        tally = self._tally
        tally.append((index, role, reason, lvl))
        if len(tally) >= _FOLD_AT:
            self._counted()
        for o in _observe._observers:
            o.routed(self.name, self._members[index].spec.name, role, reason, lvl)

    def _counted(self) -> dict[RouteKey, int]:
        """Every checkout counted so far, by key (see ``_tally``)."""
        with self._stats_lock:
            tally = self._tally
            # Only this folds (under the lock), and others only append: the first
            # len(tally) keys are there to take.
            self._routes.update([tally.popleft() for _ in range(len(tally))])
            return dict(self._routes)

    def _retry_avoiding(
        self, exc: Exception, failed: int | None, conn: Any, on_replica: bool, avoid: frozenset[int]
    ) -> frozenset[int] | None:
        """After a read of ``query()`` failed with ``exc`` on member ``failed`` (None: it
        failed before reaching one): the members to avoid in running it once more, or
        None if it must not run again (the caller raises ``exc``). A read whose replica
        died, hung, or cancelled it for a conflict with recovery runs once more; one that
        gave up waiting for a lock replay holds runs again past every such replica."""
        if failed is None or not self._engine.is_retryable_read(exc, conn, on_replica):
            return None
        if on_replica and self._engine.is_lock_timeout(exc):
            self.replica_stalled(failed)
        elif avoid:
            return None  # one more try for a member that failed; any number past locks
        logger.info(
            "cluster %r: read failed on %s (%s); running it once more elsewhere",
            self.name, self._members[failed].spec.name, type(exc).__name__,
        )
        return avoid | {failed}

    def _ended(self, lease: Lease) -> None:
        """A checkout ended: what its block saw (an error included) binds the session."""
        if not lease.read_only:
            session = _session.writing_session()
            session.write_ended(self.name)
            session.note_write(self.name, self._engine.name, time.monotonic_ns())
        elif lease.on_replica:
            self.observed(lease.member.index, lease.level)
        else:
            self.observed(None, lease.level, lease.reason)

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
        _session.writing_session().note_write(self.name, self._engine.name, time.monotonic_ns())

    def observed(self, member: int | None, level: Consistency, reason: Reason | None = None) -> None:
        """A read at ``level`` just ended on ``member`` (None: the primary, sent there
        for ``reason``). At the session and strong levels it binds the session: its later
        reads see at least as much. A read that went to the primary because no replica was
        known to be fresh enough asks the monitor for a round now, whose samples, sent
        after this read, can tell."""
        if reason is not None and reason in WAITABLE:
            self._monitor.demand()
        lvl = level.level
        if lvl is LEVEL_SESSION or lvl is LEVEL_STRONG:
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

    def _member_up(self, index: int) -> None:
        """A member answers again (each front checks its pool then)."""

    # -- sessions ---------------------------------------------------------------------------

    def resolve_sampled(
        self, requirement: _session.Requirement
    ) -> tuple[int, Position, int | None, int] | None:
        """A sample that covers ``requirement``'s pending observation, as ``(sent_ns,
        position, member, life)`` (see :func:`replpool._routing.resolve_pending`), or
        None. No I/O: a token made meanwhile names the observation by a nonce instead."""
        return resolve_pending(requirement, self._monitor.topology, self._monitor.primary_samples)

    def _floor_waits(self, timeout: float | None) -> Waits:
        """Raise the floor to a primary position sampled after now (see
        ``raise_floor``), asking the monitor for rounds until one is; returns the floor."""
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
            topo = yield (topo.version, min(left, self.probe_timeout))
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
        counted = self._counted()
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
        refused = self._monitor.refusals()
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
                    refused=refused[view.index] and not view.up,
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
        return f"<replpool.{type(self).__name__} {self.name!r} {self.engine_name} {state}: {members}>"


class Lease:
    """A connection checked out of one member's pool, why it went there, and at which
    consistency level."""

    __slots__ = ("cluster", "member", "conn", "on_replica", "read_only", "reason", "level")

    def __init__(
        self, cluster: Any, member: _Member[Any], conn: Any, on_replica: bool, read_only: bool,
        reason: Reason, level: Consistency = SESSION,
    ) -> None:
        self.cluster = cluster  # the Cluster or AsyncCluster it came from
        self.member = member
        self.conn = conn
        self.on_replica = on_replica
        self.read_only = read_only
        self.reason = reason
        self.level = level

    @property
    def index(self) -> int:
        return self.member.index


