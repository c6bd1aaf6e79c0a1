"""Where a connection request goes: pure decisions over a snapshot of the cluster.

The lag monitor publishes a :class:`Topology` (an immutable snapshot of every member's
role, health and replication position) after each poll; a request reads the current
snapshot and calls :func:`route_read`, which does no I/O and takes no lock. The I/O
shell then checks the connection out, or waits for the next snapshot when the decision
says waiting could help.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ._positions import Position
from ._session import LEVEL_BOUNDED, LEVEL_SESSION, LEVEL_STRONG, SESSION, Consistency, Requirement


class Reason(str, enum.Enum):
    """Why a request went where it went (a bounded set: these are metric labels)."""

    WRITE = "write"                        # not read-only: the primary
    PINNED = "pinned"                      # inside pinned_to_master()
    IN_TRANSACTION = "in_transaction"      # a read inside the caller's transaction
    LOCKING_READ = "locking_read"          # SELECT ... FOR UPDATE/SHARE outside one
    SESSION_STATE = "session_state"        # reads or changes session state, or its connection holds some
    FRESH_REPLICA = "fresh_replica"        # a replica fresh enough for the read's level
    POSITION_PENDING = "position_pending"  # the session's last write is not sampled yet
    NO_FRESH_REPLICA = "no_fresh_replica"  # every usable replica is behind what the read needs
    REPLICA_LAGGING = "replica_lagging"    # replicas up, but all over the lag limits
    NO_REPLICA = "no_replica"              # no replica configured, up, or known
    WAITED_REPLICA = "waited_replica"      # waited (causal_wait), then a replica caught up
    WAITED_PRIMARY = "waited_primary"      # waited (causal_wait) in vain: the primary
    MEMBER_DOWN = "member_down"            # the chosen replica failed; went elsewhere

    def __str__(self) -> str:
        return self.value


# Reasons every routed read names, as module constants (see LEVEL_SESSION).
_FRESH_REPLICA, _MEMBER_DOWN = Reason.FRESH_REPLICA, Reason.MEMBER_DOWN

# Reasons after which waiting for the monitor's next snapshot may find a replica.
WAITABLE = frozenset({Reason.POSITION_PENDING, Reason.NO_FRESH_REPLICA})

# What a member is, as the monitor last saw it: exactly one member (the one serving
# writes) is the primary; "fenced": answers, refuses writes, replicates from no one
# (MariaDB/MySQL); "down": does not answer; "unknown": not polled yet, or claims to be
# primary beside the primary (not used).
Role = Literal["primary", "replica", "unknown", "fenced", "down"]
SELECTIONS = ("least_lag", "round_robin", "random", "least_busy")


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as the monitor last saw it.

    ``position``: for a replica, how far it has applied (replayed) the log; for the
    primary, its current write position. ``eligible``: a replica that is up, sampled,
    within the lag limits and past the cluster's floor, so it may serve reads that need
    no particular position. ``life``: grows each time the member restarted or came back
    (what it had replayed may be lost then). ``fresh_as_of_ns``: the send time
    (``time.monotonic_ns()``) of the newest primary sample the replica covers: it had
    everything the primary had then, so it is at most ``now - fresh_as_of_ns`` behind.
    """

    index: int
    name: str
    role: Role
    up: bool
    position: Position | None = None
    received: Position | None = None
    sampled_ns: int = 0
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    eligible: bool = False
    error: str | None = None
    life: int = 0
    fresh_as_of_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    """A snapshot of the whole cluster, published by the monitor."""

    members: tuple[MemberView, ...]
    primary: int | None = None          # index of the member serving writes
    primary_position: Position | None = None
    primary_sampled_ns: int = 0         # when the query that read primary_position was sent
    version: int = 0
    # The replicas that may serve reads, worked out once per snapshot, not per read, and
    # the decision sending a read to each.
    eligible: tuple[MemberView, ...] = field(init=False, default=())
    fresh: dict[int, Decision] = field(init=False, default_factory=dict)
    # The primary's view if it is up, else None (every write asks).
    primary_view: MemberView | None = field(init=False, default=None)
    # The eligible replicas least behind (ties share the load): the "least_lag" policy's
    # choice among all of them, the usual read's.
    least_lagged: tuple[MemberView, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        eligible = tuple(
            m for m in self.members
            if m.role == "replica" and m.eligible and m.up and m.position is not None
        )
        object.__setattr__(self, "eligible", eligible)
        object.__setattr__(self, "fresh", {m.index: Decision(m.index, Reason.FRESH_REPLICA) for m in eligible})
        view = self.members[self.primary] if self.primary is not None else None
        object.__setattr__(self, "primary_view", view if view is not None and view.up else None)
        object.__setattr__(self, "least_lagged", least_lagged(eligible))

    def replicas(self) -> list[MemberView]:
        return [m for m in self.members if m.role == "replica"]


class Decision(NamedTuple):
    """Route to ``member`` (an index), or to the primary when ``member`` is None."""

    member: int | None
    reason: Reason
    # The position the chosen replica had to reach (None: no requirement, or unknown).
    needed: Position | None = None

    @property
    def waitable(self) -> bool:
        return self.reason in WAITABLE


@dataclass(slots=True)
class Selector:
    """The replica selection policy, with the little state it needs."""

    policy: str = "least_lag"
    rng: random.Random = field(default_factory=random.Random)
    _turn: int = 0

    def choose(
        self, fresh: Sequence[MemberView], busy: Callable[[int], int],
        least: Sequence[MemberView] | None = None,
    ) -> MemberView:
        """One of ``fresh`` (not empty) by the policy. ``least``: ``least_lagged(fresh)``
        if the caller has it already (a topology keeps it for all its eligible replicas)."""
        if len(fresh) == 1:
            return fresh[0]
        if self.policy == "random":
            return self.rng.choice(fresh)
        if self.policy == "least_lag":
            fresh = least_lagged(fresh) if least is None else least
        elif self.policy == "least_busy":
            loads = [busy(m.index) for m in fresh]
            fresh = [m for m, load in zip(fresh, loads) if load == min(loads)]
        # round_robin, and the tie-break of the others, so equals share the load. The
        # counter may race between threads; an occasional repeat is harmless.
        self._turn += 1
        return fresh[self._turn % len(fresh)]


def _lag_key(m: MemberView) -> tuple[int, float]:
    return (m.lag_bytes or 0, m.lag_seconds or 0.0)


def least_lagged(members: Sequence[MemberView]) -> tuple[MemberView, ...]:
    """The members least behind (by bytes, then seconds; unknown lag counts as none),
    in their order; all of them if they are level."""
    if len(members) < 2:
        return tuple(members)
    best = min(_lag_key(m) for m in members)
    return tuple(m for m in members if _lag_key(m) == best)


def route_read(
    topology: Topology,
    requirement: Requirement | None,
    selector: Selector,
    *,
    level: Consistency = SESSION,
    now_ns: int = 0,
    pinned: bool = False,
    avoid: frozenset[int] = frozenset(),
    busy: Callable[[int], int] = lambda i: 0,
) -> Decision:
    """Choose where a read-only request goes, at consistency ``level``.

    ``strong`` (or ``pinned``): the primary. ``eventual``: any eligible replica.
    ``bounded``: an eligible replica known to be at most ``level.max_staleness`` behind
    at ``now_ns`` (see :attr:`MemberView.fresh_as_of_ns`). ``session``: an eligible
    replica covering the session's floor; while an observation is pending, only the
    replica it was made on (same life), else the primary. Anything else goes to the
    primary, with the reason. ``avoid``: members that just failed for this request.
    """
    if pinned or level.level is LEVEL_STRONG:
        return Decision(None, Reason.PINNED)
    eligible: Sequence[MemberView] = topology.eligible
    if avoid:
        eligible = [m for m in eligible if m.index not in avoid]
    if not eligible:
        replicas = [m for m in topology.members if m.role == "replica" and m.index not in avoid]
        if any(m.up and m.position is not None for m in replicas):
            return Decision(None, Reason.REPLICA_LAGGING)
        return Decision(None, Reason.MEMBER_DOWN if avoid else Reason.NO_REPLICA)
    found = _MEMBER_DOWN if avoid else _FRESH_REPLICA
    needed: Position | None = None
    if level.level is LEVEL_BOUNDED:
        oldest = now_ns - level.max_staleness_ns
        eligible = [m for m in eligible if m.fresh_as_of_ns is not None and m.fresh_as_of_ns >= oldest]
        if not eligible:
            return Decision(None, Reason.NO_FRESH_REPLICA)
    elif level.level is LEVEL_SESSION and requirement is not None:
        needed = requirement.floor
        if requirement.pending_since is not None:
            # Pending on a replica: that replica may serve again, as it is (it only
            # moves forward within a life). Else resolve, or go to the primary.
            on = requirement.pending_on
            if on is not None:
                for m in eligible:
                    if m.index == on and m.life == requirement.pending_life and (
                        needed is None or (m.position is not None and m.position.covers(needed))
                    ):
                        return Decision(on, found, needed)
            requirement = resolve_from(topology, requirement)
            needed = requirement.floor
            if requirement.pending_since is not None:
                return Decision(None, Reason.POSITION_PENDING)
        if needed is not None:
            eligible = [m for m in eligible if m.position is not None and m.position.covers(needed)]
            if not eligible:
                return Decision(None, Reason.NO_FRESH_REPLICA, needed)
    chosen = selector.choose(eligible, busy)
    return Decision(chosen.index, found, needed)


Sampled = tuple[int, Position, "int | None", int]  # (sent_ns, position, member or None, life)


def first_sent_after(
    samples: Sequence[tuple[int, Position]], t_ns: int
) -> tuple[int, Position] | None:
    """The first of ``samples`` (``(sent_ns, position)``, oldest first) sent after
    ``t_ns``, or None: the tightest sample known to cover what happened before ``t_ns``."""
    if not samples or samples[-1][0] <= t_ns:
        return None
    return samples[bisect.bisect_right(samples, t_ns, key=lambda s: s[0])]


def resolve_pending(
    requirement: Requirement, topology: Topology, primary_samples: Sequence[tuple[int, Position]]
) -> Sampled | None:
    """A sample that covers ``requirement``'s pending observation: the first of the
    primary's ``primary_samples`` (``(sent_ns, position)``, oldest first) sent after it
    (the tightest safe bound; ``member`` None), else the latest sample of the replica the
    pending reads were made on, if sent after them in the same life. None if neither."""
    since = requirement.pending_since
    if since is None:
        return None
    first = first_sent_after(primary_samples, since)
    if first is not None:
        return first[0], first[1], None, 0
    on = requirement.pending_on
    if on is not None and 0 <= on < len(topology.members):
        m = topology.members[on]
        if m.position is not None and m.sampled_ns > since and m.life == requirement.pending_life:
            return m.sampled_ns, m.position, on, m.life
    return None


def usual_read(
    topology: Topology,
    requirement: Requirement | None,
    selector: Selector,
    busy: Callable[[int], int],
) -> Decision | None:
    """:func:`decide_read`'s decision, worked out at little cost, for the two reads most
    requests make (at the session level, avoiding no member): a session that must
    observe nothing on the cluster goes to an eligible replica, and one whose
    observations there are all pending on one eligible replica, in its current life,
    with no floor, goes back to it (monotonic reads). None for any other read: ask
    :func:`decide_read`. The decisions are the topology's own (:attr:`Topology.fresh`),
    made once per snapshot."""
    if requirement is None:
        eligible = topology.eligible
        if not eligible:
            return None
        chosen = eligible[0] if len(eligible) == 1 else selector.choose(eligible, busy, topology.least_lagged)
        return topology.fresh[chosen.index]
    on = requirement.pending_on
    if on is None or requirement.floor is not None or requirement.pending_since is None:
        return None
    d = topology.fresh.get(on)
    if d is None or topology.members[on].life != requirement.pending_life:
        return None
    return d


def decide_read(
    topology: Topology,
    requirement: Requirement | None,
    selector: Selector,
    resolve: Callable[[Requirement], Requirement | None],
    *,
    level: Consistency = SESSION,
    now_ns: int = 0,
    avoid: frozenset[int] = frozenset(),
    busy: Callable[[int], int] = lambda i: 0,
) -> Decision:
    """Where a read goes, as the cluster decides it: :func:`route_read`, with a pending
    observation first served by the replica it was made on (the common case, at no
    cost), else resolved by ``resolve`` (which records the resolution in the session,
    from :func:`resolve_pending`, and returns the new requirement, or None)."""
    if requirement is not None and requirement.pending_since is not None and level.level is LEVEL_SESSION:
        if requirement.pending_on is not None:
            d = route_read(topology, requirement, selector, level=level, now_ns=now_ns, avoid=avoid, busy=busy)
            if d.member == requirement.pending_on:
                return d
        requirement = resolve(requirement) or requirement
    return route_read(topology, requirement, selector, level=level, now_ns=now_ns, avoid=avoid, busy=busy)


def resolve_from(topology: Topology, requirement: Requirement) -> Requirement:
    """``requirement`` resolved with what ``topology`` shows: the primary's latest
    sample, or the latest sample of the replica its pending reads were made on."""
    r = requirement.resolved_with(topology.primary_position, topology.primary_sampled_ns)
    on = r.pending_on
    if r.pending_since is not None and on is not None and 0 <= on < len(topology.members):
        m = topology.members[on]
        if m.position is not None:
            r = r.resolved_with(m.position, m.sampled_ns, on, m.life)
    return r
