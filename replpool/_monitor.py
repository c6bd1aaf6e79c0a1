"""The lag monitor: one background thread per cluster that polls every member's role and
replication position, keeps each member's health, and publishes an immutable
:class:`~replpool._routing.Topology` for the router.

It polls every ``interval`` while the cluster serves traffic, every ``idle_interval``
when it does not (spaced by the statements a round ran, so that an idle process costs
each server one statement per ``idle_interval``: MariaDB's replication status, read
every few seconds, is a second statement), and at once when a read asks for it (:meth:`Monitor.demand`: a read
needed a position no replica was known to have). Demanded rounds are coalesced: one in
flight per cluster, at most one every ``demand_interval`` seconds, shared by every
waiting session. Each round is one small query per member. Polls run on a small executor (one
thread per member at most), so a member that hangs delays nobody: a poll still
unanswered after ``probe_timeout`` marks its member down, and the poll's socket is shut
so the thread comes back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import _observe
from ._engine import Engine, MemberSpec, Sample
from ._episodes import Episodes
from ._health import Failure, Health, waiting_can_fix
from ._lag import PrimaryHistory
from ._positions import Position
from ._roles import Claim, Verdict, decide_roles
from ._routing import MemberView, Role, Topology, first_sent_after

logger = logging.getLogger("replpool.monitor")

_MAX_PRIMARY_SAMPLES = 512  # ~50 s at the default interval, when the primary is busy


@dataclass(eq=False)
class MemberState:
    """What the monitor knows of one member (guarded by the monitor's lock)."""

    index: int
    spec: MemberSpec
    configured_role: Role
    health: Health
    conn: Any = None
    inflight: Future[Sample] | None = None
    inflight_since: float = 0.0
    timed_out: bool = False
    sample: Sample | None = None
    sampled_at: float = 0.0
    epoch: str | None = None
    # The role it had when last seen answering (the view says "down" while it is not).
    role: Role = "unknown"
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    failed_ns: int = 0
    polls: int = 0
    poll_errors: int = 0
    server_id: int | None = None  # MariaDB/MySQL: as last seen, to match replicas' sources
    # When the member last came back or was seen restarted (time.monotonic()): pooled
    # connections opened before then may have died with its earlier life.
    back_at: float = 0.0
    # Grows each time that happens: what a replica had replayed before may be lost.
    life: int = 0
    # A read gave up waiting for a lock replay holds there (at stall_ns): no reads until
    # it has replayed what the primary had then (the commit that ends the lock).
    stall_ns: int | None = None
    stalled_at: Position | None = None
    # What its last failure means for waiting (None while it answers).
    failure: Failure | None = None


class Monitor:
    def __init__(
        self,
        cluster: str,
        engine: Engine,
        specs: Sequence[MemberSpec],
        roles: Sequence[Role],
        *,
        interval: float,
        probe_timeout: float,
        max_lag: float,
        max_lag_bytes: int | None,
        max_backoff: float = 2.0,
        idle_interval: float | None = None,
        demand_interval: float | None = 0.005,
    ) -> None:
        self.cluster = cluster
        self.engine = engine
        self.interval = interval
        self.idle_interval = max(interval, idle_interval if idle_interval is not None else interval)
        self.demand_interval = demand_interval  # None: rounds are never demanded
        # Checkouts since the cluster opened (the cluster counts them, without a lock: a
        # lost increment only delays the switch to the busy interval by a round).
        self.traffic = 0
        # Set while the monitor keeps the idle pace: the next checkout wakes it.
        self.idle = False
        self._demanded = threading.Event()
        # The cluster's floor: replicas that have not replayed this far serve no reads
        # (the primary's position when the cluster opened, raised by raise_floor()).
        self.floor: Position | None = None
        self.probe_timeout = probe_timeout
        self.max_lag = max_lag
        self.max_lag_bytes = max_lag_bytes
        self.members = [
            MemberState(i, spec, role, Health(base_delay=interval, max_delay=max_backoff))
            for i, (spec, role) in enumerate(zip(specs, roles))
        ]
        self.history = PrimaryHistory(horizon=max(60.0, 2 * max_lag))
        # Recent primary samples as (sent_ns, position), oldest first: a write that
        # finished at t is resolved by the first sample sent after t, the tightest
        # safe stand-in for its commit position. Replaced (never trimmed in place), so
        # readers may bisect a reference without the lock.
        self._primary_samples: list[tuple[int, Position]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # asyncio waiters for the next topology (see wait_for_change_async): woken through
        # their loops, never blocked on the lock's condition.
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.topology = Topology(
            tuple(MemberView(m.index, m.spec.name, "unknown", True) for m in self.members)
        )
        self.rounds = 0
        self.round_statements = 1  # the most statements a member's poll ran last round
        self.failovers = 0
        self._primary: int | None = None
        self._last_primary: int | None = None
        self._no_primary_round = -1  # the last round counted in the no-primary episode
        # Lasting conditions, logged when they start and when they end (never per poll).
        self.episodes: Episodes[tuple[Any, ...]] = Episodes()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Hooks the cluster sets: a member went down (abort its readers), came back
        # (check its pool), the primary moved.
        self.on_member_down: Callable[[int, bool], None] = lambda index, hung: None
        self.on_member_up: Callable[[int], None] = lambda index: None
        # A member answered for the first time (its pool may open: before, it could only
        # fail, and say so again in the pool's own log).
        self.on_first_answer: Callable[[int], None] = lambda index: None
        self.pool_stats: Callable[[], Sequence[_observe.PoolSnapshot]] = lambda: ()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.members) + 1, thread_name_prefix=f"replpool-{self.cluster}-poll"
        )
        demanded = self._demanded
        # Dropped without stop(): wake the thread, which then finds the monitor gone.
        ref = weakref.ref(self, lambda _: demanded.set())
        self._thread = threading.Thread(
            target=_run, args=(ref, self._stop, demanded),
            name=f"replpool-{self.cluster}-monitor", daemon=True,
        )
        self._thread.start()

    def first_round_done(self) -> bool:
        """Whether every member has answered or failed once."""
        return all(m.polls or m.poll_errors for m in self.members)

    def wait_first_round(self, timeout: float) -> None:
        """Wait until every member has answered or failed once (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.first_round_done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.changed.wait(left)

    async def wait_first_round_async(self, timeout: float) -> None:
        """:meth:`wait_first_round`, without blocking the event loop."""
        deadline = time.monotonic() + timeout
        topo = self.topology
        while not self.first_round_done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            topo = await self.wait_for_change_async(topo.version, left)

    def hang_deadline(self) -> float | None:
        """When the oldest poll still unanswered will have taken ``probe_timeout``
        (``time.monotonic()``): a round then finds its member hung, whatever the pace."""
        with self.lock:
            starts = [
                m.inflight_since for m in self.members
                if m.inflight is not None and not m.timed_out and not m.inflight.done()
            ]
        return min(starts) + self.probe_timeout + 0.001 if starts else None

    def demand(self) -> None:
        """Ask for a round now (a read needs fresher positions than the monitor has, or
        traffic resumed after a pause). Cheap and coalesced: calls while a round is due
        or running add nothing."""
        self.idle = False
        if self.demand_interval is not None and not self._demanded.is_set():
            self._demanded.set()

    def stop(self) -> None:
        self._stop.set()
        self._demanded.set()
        with self.lock:
            for m in self.members:
                if m.inflight is not None and m.conn is not None:
                    self.engine.abort(m.conn)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.probe_timeout + 5)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        for m in self.members:
            if m.conn is not None:
                self.engine.close_quietly(m.conn)
                m.conn = None

    # -- one round ---------------------------------------------------------------------------

    def run_round(self) -> None:
        assert self._executor is not None
        now = time.monotonic()
        submitted: list[Future[Sample]] = []
        statements = 1
        with self.lock:
            # Looking for a primary: polls read all that decides a role, at once.
            thorough = self._primary is None or not self.members[self._primary].health.up
            for m in self.members:
                if m.inflight is not None:
                    if not m.inflight.done() and not m.timed_out and now - m.inflight_since > self.probe_timeout:
                        self._member_hung(m, now)
                    continue
                if m.health.probe_due(now):
                    try:
                        m.inflight = self._executor.submit(self._poll, m, thorough)
                    except RuntimeError:
                        # The executor takes no more work: the cluster is closing, or the
                        # interpreter exiting (it stops executors before atexit handlers
                        # run). Nothing to poll for any more.
                        self._stop.set()
                        return
                    m.inflight_since = now
                    m.timed_out = False
                    submitted.append(m.inflight)
        # Wait for this round's polls only: one hung since an earlier round delays nobody.
        concurrent.futures.wait(submitted, timeout=min(self.interval, self.probe_timeout))
        with self.lock:
            if self._stop.is_set():
                # Closing: stop() cut the polls in flight; they are no members' failures.
                return
            for m in self.members:
                if m.inflight is not None and m.inflight.done():
                    if m.inflight in submitted and not m.inflight.cancelled() and m.inflight.exception() is None:
                        statements = max(statements, m.inflight.result().statements)
                    self._collect(m, time.monotonic())
            self.round_statements = statements
            self.rounds += 1
            self._publish()
            topology = self.topology
        if _observe._observers:
            pools = self.pool_stats()
            for o in _observe._observers:
                o.round(self.cluster, self.engine.name, topology, pools)

    def _poll(self, m: MemberState, thorough: bool = False) -> Sample:
        # Runs on the executor. m.conn is only touched here, and by abort() (which
        # shuts the socket without closing the connection object).
        if m.conn is None:
            m.conn = self.engine.monitor_connect(m.spec, self.probe_timeout)
        try:
            return self.engine.poll(m.conn, thorough)
        except BaseException:
            conn, m.conn = m.conn, None
            self.engine.close_quietly(conn)
            raise

    def _collect(self, m: MemberState, now: float) -> None:
        fut, m.inflight = m.inflight, None
        assert fut is not None
        try:
            sample = fut.result()
        except Exception as exc:
            m.poll_errors += 1
            for o in _observe._observers:
                o.poll_failed(self.cluster, m.spec.name)
            self._member_failed(m, now, _describe(exc), failure=self.engine.classify_failure(exc))
            return
        if m.timed_out:
            # It answered after all, but too late to trust its timing: poll again.
            m.timed_out = False
        if sample.sent_ns < m.failed_ns:
            # Sent before someone saw the member fail: says nothing about it now.
            return
        m.polls += 1
        m.failure = None
        if m.polls == 1:
            self.on_first_answer(m.index)
        if m.epoch is not None and sample.epoch != m.epoch:
            # Part of its return when it was seen down (said then, at WARNING); else the
            # only sign of a restart that nobody was told about.
            logger.log(
                logging.WARNING if m.health.up else logging.INFO,
                "cluster %r: %s restarted; forgetting what it had replayed",
                self.cluster, m.spec.name,
            )
            m.back_at = now
            m.life += 1
        m.epoch = sample.epoch
        m.sample = sample
        m.sampled_at = now
        if sample.replication is not None and sample.replication.server_id is not None:
            m.server_id = sample.replication.server_id
        down_since, failures = m.health.down_since, m.health.failures
        if m.health.succeeded(now):
            # A recovery: INFO (its going down was the WARNING, unless it was expected).
            logger.info(
                "cluster %r: %s is answering again after %.1f s down (%d failed polls)",
                self.cluster, m.spec.name, now - (down_since or now), failures,
            )
            m.back_at = now
            m.life += 1
            self.on_member_up(m.index)

    def _member_hung(self, m: MemberState, now: float) -> None:
        m.timed_out = True
        m.poll_errors += 1
        for o in _observe._observers:
            o.poll_failed(self.cluster, m.spec.name)
        if m.conn is not None:
            self.engine.abort(m.conn)
        self._member_failed(m, now, f"no answer within {self.probe_timeout:g} s", hung=True)

    def _member_failed(
        self, m: MemberState, now: float, error: str, hung: bool = False,
        failure: Failure = Failure.UNREACHABLE,
    ) -> None:
        m.sample = None  # a member that failed may come back with an older state
        m.stall_ns = m.stalled_at = None
        m.lag_seconds = m.lag_bytes = None
        m.failed_ns = time.monotonic_ns()
        m.failure = failure
        if m.health.failed(now, error):
            if failure is Failure.NO_DATABASE and self._expected_role(m) == "replica":
                # Expected after the database was made (Django's test runner does it):
                # the replica joins once it has replayed that.
                logger.info(
                    "cluster %r: %s does not have the database yet; it serves nothing until "
                    "it has replayed its creation (%s)", self.cluster, m.spec.name, error,
                )
            elif not waiting_can_fix(failure, self._expected_role(m)):
                logger.warning(
                    "cluster %r: %s is down: it refuses us (check the settings): %s",
                    self.cluster, m.spec.name, error,
                )
            else:
                logger.warning("cluster %r: %s is down: %s", self.cluster, m.spec.name, error)
            # Publish before the hook runs: a request that checks out after the hook
            # looked at the member's connections then sees it down (see _Checkout).
            self._publish()
            self.on_member_down(m.index, hung)

    def report_stalled(self, index: int) -> None:
        """A read on member ``index`` gave up waiting for a lock that replay holds: it
        serves no reads until a sample shows its position past the one it has now."""
        with self.lock:
            m = self.members[index]
            m.stall_ns, m.stalled_at = time.monotonic_ns(), None
            self._publish()

    def report_failure(self, index: int, error: str, opened_at: float | None = None) -> None:
        """A request found a member broken: take it out of rotation now.

        ``opened_at``: when the newest of the broken connections it found was opened.
        Connections all older than the member's return (it restarted, and the monitor
        has seen it answer since) died with its earlier life and say nothing of it now."""
        with self.lock:
            m = self.members[index]
            if opened_at is not None and opened_at < m.back_at:
                return
            if m.health.up:
                self._member_failed(m, time.monotonic(), error)

    def _expected_role(self, m: MemberState) -> str:
        """The role a member is expected to have: the last one seen, else the
        configured one."""
        if self._last_primary is not None:
            return "primary" if m.index == self._last_primary else "replica"
        return m.configured_role

    def refusals(self) -> list[bool]:
        """For each member, whether it is down for a reason waiting cannot fix (see
        :func:`~replpool._health.waiting_can_fix`), for the role it is expected to have."""
        with self.lock:
            return [
                not m.health.up and not waiting_can_fix(m.failure, self._expected_role(m))
                for m in self.members
            ]

    def primary_refusal(self) -> str | None:
        """Why no primary can be had until the configuration changes: the error of the
        member expected to be the primary (the last seen, else the configured one) when
        it is down for a reason waiting cannot fix (a refused login, a missing database,
        bad options). None when no primary is known to be refusing: waiting may help."""
        with self.lock:
            for m in self.members:
                if self._expected_role(m) != "primary":
                    continue
                if m.health.up or waiting_can_fix(m.failure, "primary"):
                    return None
                return f"{m.spec.name} refuses: {m.health.last_error}"
        return None

    # -- the snapshot ------------------------------------------------------------------------

    def _decide(self) -> list[tuple[Sample | None, Verdict | None]]:
        """Each member's sample as its role makes it (see :mod:`replpool._roles`), and
        its verdict; (None, None) for a member that is down or not sampled yet."""
        claims: list[Claim] = []
        for m in self.members:
            s = m.sample
            if s is None or not m.health.up:
                claims.append(Claim(m.spec.host, m.spec.port, server_id=m.server_id, up=False))
            elif s.replication is None:
                claims.append(Claim(m.spec.host, m.spec.port, in_recovery=s.in_recovery))
            else:
                r = s.replication
                claims.append(Claim(m.spec.host, m.spec.port, None, r.read_only, r.sources, r.server_id))
        out: list[tuple[Sample | None, Verdict | None]] = []
        for m, verdict in zip(self.members, decide_roles(claims)):
            s = m.sample if verdict is not None else None
            if s is not None and verdict is not None and s.replication is not None:
                if verdict.kind == "candidate" and s.in_recovery and s.replication.written is not None:
                    # Writable, in a replication cycle (or fed from outside the
                    # cluster only): a primary, whose position is what it wrote.
                    s = dataclasses.replace(s, in_recovery=False, position=s.replication.written, received=None)
            out.append((s, verdict))
        return out

    def _choose_primary(self, decided: list[tuple[Sample | None, Verdict | None]], now: float) -> int | None:
        candidates = [
            m for m, (s, v) in zip(self.members, decided)
            if s is not None and v is not None and v.kind == "candidate" and not s.in_recovery
        ]
        names = tuple(m.spec.name for m in candidates)
        for key in self.episodes:
            if key[0] == "claimants" and key[1] != names:
                ended = self.episodes.end(key, now)
                if ended is not None:
                    logger.info(
                        "cluster %r: %s no longer all claim to be primary, %s",
                        self.cluster, ", ".join(key[1]), ended.summary(now, "rounds"),
                    )
        if self._primary is not None and any(m.index == self._primary for m in candidates):
            if len(candidates) > 1 and self.episodes.begin(("claimants", names), now):
                logger.warning(
                    "cluster %r: several members accept writes and replicate from no other "
                    "member (%s); keeping %s as the primary and using none of the others. "
                    "If some are replicas, check their replication (SHOW ALL SLAVES STATUS / "
                    "SHOW REPLICA STATUS); set read_only = ON on those that must not take writes",
                    self.cluster, ", ".join(names), self.members[self._primary].spec.name,
                )
            return self._primary
        if not candidates:
            return None

        def rank(m: MemberState) -> tuple[int, int]:
            s = decided[m.index][0]
            assert s is not None
            ahead = sum(
                1 for o in candidates
                if o is not m and (os := decided[o.index][0]) is not None and s.position is not None
                and os.position is not None and s.position.covers(os.position)
            )
            return (-ahead, 0 if m.configured_role == "primary" else 1)

        return min(candidates, key=rank).index

    def _no_primary_seen(self, now: float) -> None:
        """No member is the primary after this round: say so when it starts (once every
        member has answered or failed once, so that a round half collected says nothing),
        and count the rounds it lasts, once each (a round may publish several times)."""
        if not self.first_round_done():
            return
        key = ("no primary",)
        if self.episodes.active(key) and self._no_primary_round == self.rounds:
            return
        self._no_primary_round = self.rounds
        if not self.episodes.begin(key, now):
            return  # a round more without one
        if self._last_primary is not None:
            why = f"was {self.members[self._last_primary].spec.name}"
        else:
            expected = [m for m in self.members if m.configured_role == "primary"]
            down = [m for m in expected if not m.health.up]
            why = (
                f"{down[0].spec.name}, configured as the primary, is down" if down
                else "no member answers as one"
            )
        logger.warning("cluster %r: no primary is reachable (%s)", self.cluster, why)

    def _log_verdicts(self, decided: list[tuple[Sample | None, Verdict | None]], now: float) -> None:
        """Say once when a member starts (and stops) replicating while it accepts
        writes, or replicates only from outside the cluster."""
        for m, (_s, v) in zip(self.members, decided):
            if v is None:
                continue  # down: whatever it was, it is not now
            started, ended = self.episodes.observe(("writable", m.index), v.writable, now)
            if started:
                source = self.members[v.source].spec.name if v.source is not None else "another member"
                logger.warning(
                    "cluster %r: %s replicates from %s but accepts writes (read_only is "
                    "off): a write made there is not on the primary and breaks replication "
                    "when it conflicts. replpool sends it reads only; set read_only = ON on "
                    "it (SET GLOBAL read_only = ON, and read_only in its option file)",
                    self.cluster, m.spec.name, source,
                )
            elif ended is not None:
                logger.info(
                    "cluster %r: %s is no longer a replica that accepts writes (%s), %s",
                    self.cluster, m.spec.name,
                    "read_only is on" if v.kind == "replica" else f"now {v.kind}",
                    ended.summary(now, "rounds"),
                )
            started, ended = self.episodes.observe(("external", m.index), v.external, now)
            if started:
                logger.warning(
                    "cluster %r: %s replicates only from servers that are not members of "
                    "this cluster; its read_only (%s) makes it a %s",
                    self.cluster, m.spec.name, "on" if v.kind == "replica" else "off",
                    "replica" if v.kind == "replica" else "candidate for primary",
                )

    def _publish(self) -> None:
        now = time.monotonic()
        decided = self._decide()
        self._log_verdicts(decided, now)
        new_primary = self._choose_primary(decided, now)
        ended = None
        if new_primary is None:
            self._no_primary_seen(now)
        else:
            ended = self.episodes.end(("no primary",), now)
            if ended is not None and new_primary == self._last_primary:
                logger.info(
                    "cluster %r: the primary %s is reachable again %s",
                    self.cluster, self.members[new_primary].spec.name, ended.summary(now, "rounds"),
                )
            elif ended is not None and self._last_primary is None:
                logger.info(
                    "cluster %r: %s is the primary; none was reachable %s",
                    self.cluster, self.members[new_primary].spec.name, ended.summary(now, "rounds"),
                )
        if new_primary is not None and new_primary != self._last_primary:
            if self._last_primary is not None:
                old = self.members[self._last_primary].spec.name
                self.failovers += 1
                logger.warning(
                    "cluster %r: the primary is now %s (was %s)%s",
                    self.cluster, self.members[new_primary].spec.name, old,
                    f"; none was reachable {ended.summary(now, 'rounds')}" if ended is not None else "",
                )
                for o in _observe._observers:
                    o.failover(self.cluster, old, self.members[new_primary].spec.name)
            self._last_primary = new_primary
        self._primary = new_primary
        # The last primary sample stays true after the primary goes away ("at that
        # moment it had this position"), so writes finished before it can still be
        # resolved and served by replicas while no primary is reachable.
        primary_position = self.topology.primary_position
        primary_sent = self.topology.primary_sampled_ns
        if new_primary is not None:
            ps = decided[new_primary][0]
            assert ps is not None
            if ps.position is not None:
                primary_position, primary_sent = ps.position, ps.sent_ns
                self.history.add(self.members[new_primary].sampled_at, ps.position)
                samples = self._primary_samples
                if not samples or samples[-1][0] < ps.sent_ns:
                    if len(samples) >= _MAX_PRIMARY_SAMPLES:
                        samples = self._primary_samples = samples[_MAX_PRIMARY_SAMPLES // 2 :]
                    samples.append((ps.sent_ns, ps.position))
        if self.floor is None and primary_position is not None:
            # What the process started with: no read may see an older state (schema).
            self.floor = primary_position
        floor = self.floor
        samples = self._primary_samples
        views = []
        for m, (s, verdict) in zip(self.members, decided):
            role = _view_role(m, verdict, new_primary)
            if s is not None:
                m.role = role  # what it was when last seen answering
            eligible = False
            fresh_as_of: int | None = None
            if s is not None and role == "replica" and s.position is not None:
                m.lag_seconds = self.history.lag_seconds(s.position, m.sampled_at)
                if primary_position is not None:
                    gap = primary_position.bytes_ahead_of(s.position)
                    m.lag_bytes = max(0, gap) if gap is not None else None
                fresh_as_of = newest_covered(samples, s.position)
                eligible = m.health.up and (
                    m.lag_seconds is None or m.lag_seconds <= self.max_lag
                ) and (
                    self.max_lag_bytes is None or m.lag_bytes is None
                    or m.lag_bytes <= self.max_lag_bytes
                ) and (floor is None or s.position.covers(floor)) and not self._stalled(m, s)
            views.append(
                MemberView(
                    index=m.index,
                    name=m.spec.name,
                    role=role,
                    up=m.health.up and m.sample is not None,
                    position=s.position if s is not None else None,
                    received=s.received if s is not None else None,
                    sampled_ns=s.sent_ns if s is not None else 0,
                    lag_seconds=m.lag_seconds,
                    lag_bytes=m.lag_bytes,
                    eligible=eligible,
                    error=m.health.last_error,
                    life=m.life,
                    fresh_as_of_ns=fresh_as_of,
                )
            )
        self.topology = Topology(
            tuple(views),
            primary=new_primary,
            primary_position=primary_position,
            primary_sampled_ns=primary_sent,
            version=self.topology.version + 1,
        )
        self.changed.notify_all()
        if self._async_waiters:
            waiters, self._async_waiters = self._async_waiters, []
            for loop, future in waiters:
                try:
                    loop.call_soon_threadsafe(_wake, future)
                except RuntimeError:
                    pass  # its loop is closed: nobody waits there any more

    @property
    def primary_samples(self) -> list[tuple[int, Position]]:
        """Recent primary samples as ``(sent_ns, position)``, oldest first (a list that
        is replaced, never changed in place: safe to read without the lock)."""
        return self._primary_samples

    def _stalled(self, m: MemberState, sample: Sample) -> bool:
        """Whether ``m`` is still held behind replay (see :meth:`report_stalled`): until
        it has replayed the primary's position sampled first after the stall, which has
        the commit that ends the lock (on the primary the statement that took it had
        committed: otherwise its readers there would wait too)."""
        if m.stall_ns is None or sample.position is None:
            return False
        if m.stalled_at is None:
            first = first_sent_after(self._primary_samples, m.stall_ns)
            if first is None:
                return True
            m.stalled_at = first[1]
        if not sample.position.covers(m.stalled_at):
            return True
        m.stall_ns = m.stalled_at = None  # replay moved past it
        return False

    def raise_floor(self, position: Position) -> None:
        """From now on, replicas that have not replayed ``position`` serve no reads."""
        with self.lock:
            self.floor = position if self.floor is None else self.floor.join(position)
            self._publish()

    def wait_for_change(self, version: int, timeout: float) -> Topology:
        """The next topology after ``version``, or the current one after ``timeout``."""
        with self.changed:
            if self.topology.version == version and timeout > 0:
                self.changed.wait(timeout)
            return self.topology

    async def wait_for_change_async(self, version: int, timeout: float) -> Topology:
        """:meth:`wait_for_change` for asyncio code: the event loop runs on while it
        waits (the monitor's thread wakes the waiter through the loop,
        ``call_soon_threadsafe``)."""
        if self.topology.version != version or timeout <= 0:
            return self.topology
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self.lock:
            if self.topology.version != version:
                return self.topology
            self._async_waiters.append((loop, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            pass
        finally:
            with self.lock:
                try:
                    self._async_waiters.remove((loop, future))
                except ValueError:
                    pass  # taken by a publication meanwhile
        return self.topology


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _view_role(m: MemberState, verdict: Verdict | None, primary: int | None) -> Role:
    """What a member is now, for the snapshot, status() and the metrics: exactly one
    member (the chosen one) is the primary; a member that does not answer is down
    (whatever it was); one that claims to be primary beside it is unknown (not used)."""
    if m.index == primary:
        return "primary"
    if not m.health.up:
        return "down"
    if verdict is None:
        return "unknown"  # not sampled yet
    if verdict.kind == "candidate":
        return "unknown"  # a second member that claims to be primary: not used
    return verdict.kind


def newest_covered(samples: list[tuple[int, Position]], position: Position) -> int | None:
    """The send time of the newest of ``samples`` (``(sent_ns, position)``, oldest
    first, each covering the one before) that ``position`` covers, or None. A binary
    search: the samples ``position`` covers come first. Should the primary's positions
    have gone back (a failover), the answer is still a sample ``position`` covers."""
    lo, hi = 0, len(samples)
    while lo < hi:
        mid = (lo + hi) // 2
        if position.covers(samples[mid][1]):
            lo = mid + 1
        else:
            hi = mid
    return samples[lo - 1][0] if lo else None


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if not text or text.endswith(":"):  # the driver said nothing (a connect timeout's "3024:")
        text = f"{text} (no message from the driver)".strip()
    return f"{type(exc).__name__}: {text}"


def _run(ref: weakref.ref[Monitor], stop: threading.Event, demanded: threading.Event) -> None:
    """The monitor thread. It holds the monitor only through a weak reference between
    rounds, so a cluster that was never closed can still be collected."""
    traffic = -1
    next_round = time.monotonic()
    while not stop.is_set():
        monitor = ref()
        if monitor is None:
            return
        started = time.monotonic()
        demanded.clear()  # a demand from now on asks for a round after this one
        try:
            monitor.run_round()
        except Exception as exc:  # never let the monitor die
            if stop.is_set():
                # Stopped during the round (the cluster closed while a hung member kept
                # the round waiting): its failure says nothing.
                logger.debug("cluster %r: round cut short by close: %r", monitor.cluster, exc)
                return
            if monitor.episodes.begin(("round failed",), time.monotonic()):
                logger.exception(
                    "cluster %r: monitor round failed (said once until rounds succeed again)",
                    monitor.cluster,
                )
            else:
                logger.debug("cluster %r: monitor round failed again: %r", monitor.cluster, exc)
        else:
            ended = monitor.episodes.end(("round failed",), time.monotonic())
            if ended is not None:
                logger.info(
                    "cluster %r: monitor rounds succeed again, %s",
                    monitor.cluster, ended.summary(time.monotonic(), "failed rounds"),
                )
        busy = monitor.traffic != traffic
        traffic = monitor.traffic
        interval = monitor.interval if busy else monitor.idle_interval * monitor.round_statements
        monitor.idle = not busy
        hang = monitor.hang_deadline()
        gap = monitor.demand_interval or 0.0
        del monitor
        if next_round <= started:  # the round was the scheduled one
            next_round = max(next_round + interval, time.monotonic())
        else:  # demanded before the schedule, which may have been the idle pace's
            next_round = min(next_round, started + interval)
        if hang is not None:
            next_round = min(next_round, hang)
        while not stop.is_set():
            left = next_round - time.monotonic()
            if left <= 0:
                break
            if demanded.wait(left):
                # Demanded: go now, but not sooner than the gap after the last start.
                stop.wait(max(0.0, started + gap - time.monotonic()))
                break
