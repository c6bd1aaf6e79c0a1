"""Read-your-writes as a state machine: the true world against what replpool knows of it.

The machine keeps the truth (each member's real WAL position, who really is primary) and,
beside it, only what a lag monitor could know: samples taken at some instant of a fake
monotonic clock and published some time later, possibly out of order between members.
It routes reads exactly as the cluster does, from a Topology built the monitor's way, and
checks that a replica chosen for a read really has applied the session's last write, and
that reads are not sent to the primary when the published samples prove a replica has
everything the session needs.

What is modelled:

* writes on the primary (the session's own, and other clients'), each finishing at the
  clock's current reading, optionally with ``synchronous_commit = remote_apply`` (the
  reachable replicas apply it before the commit returns); the clock moves only when a
  write or a poll round says so, so a write and a sample may carry the same reading in
  either real order;
* replication, never past the primary, optionally flushed (made durable);
* polls: a sample records the position when its query is sent or, for a query that runs
  late, when its answer comes back; answers wait in a queue and are published later, per
  member in order, across members in any order;
* failures (a member stops answering: the monitor marks it down and its in-flight poll
  fails), recoveries (up again only once a new sample is published), restarts (a
  replica may come back at any position between its durable one and where it was);
* switchover: a replica that has replayed everything is promoted, and the old primary
  carries on as a replica (the monitor keeps it as primary while its last published
  sample still says so, as the real one does). A lossy failover (promoting a replica
  that lacks committed writes) is not modelled: those writes are then lost, and no
  router can show them.

Two variants run. ``ReadYourWrites`` reads the way Cluster does today: the session's
pending write is resolved afresh, at every read, against the latest primary sample.
``RememberingResolutions`` also records each primary sample in the session
(``Session.note_resolution``) before routing, so a resolved write keeps the position it
was resolved to; it checks that this is as safe, and that reads then go to any replica
that has that position.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from replpool._positions import LSN
from replpool._routing import MemberView, Reason, Selector, Topology, route_read
from replpool._session import Session

CLUSTER = "c"
PG = "postgresql"
START = 0x3000000

member_numbers = st.integers(0, 3)
amounts = st.integers(1, 3) | st.integers(1, 5000)


@dataclass(frozen=True)
class Taken:
    """A poll whose answer the monitor has not collected yet."""

    member: int
    in_recovery: bool
    position: int | None  # None: the query runs late, its answer is read at publication
    sent: int
    generation: int


class ReadYourWrites(RuleBasedStateMachine):
    # True: the read path also records each primary sample in the session
    # (Session.note_resolution), so a resolved write keeps its position.
    remember_resolutions = False

    def __init__(self) -> None:
        super().__init__()
        self.n = 2
        self.clock = 1_000
        self.true_primary = 0
        self.pos = [START] * self.n
        self.durable = [START] * self.n
        self.reachable = [True] * self.n
        self.generation = [0] * self.n
        self.queue: list[Taken] = []
        self.published: dict[int, tuple[bool, int, int]] = {}  # member: (in_recovery, position, sent)
        self.monitor_primary: int | None = None
        self.session = Session()
        self.selector = Selector()
        self.last_commit: int | None = None
        self.last_finish: int | None = None
        # The session as the design says it should be once resolutions are remembered.
        self.model_floor: int | None = None
        self.model_pending = False

    @initialize(replicas=st.integers(1, 3))
    def start(self, replicas: int) -> None:
        self.n = replicas + 1
        self.pos = [START] * self.n
        self.durable = [START] * self.n
        self.reachable = [True] * self.n
        self.generation = [0] * self.n
        # The cluster opens once the monitor's first round is in; its queries were sent
        # at the clock's current reading (a coarse clock does not move between them and
        # the first write).
        self.published = {i: (i != 0, START, self.clock) for i in range(self.n)}
        self._choose_primary()

    # -- the true world ----------------------------------------------------------------------

    @precondition(lambda self: self.reachable[self.true_primary])
    @rule(advance=st.integers(0, 2), amount=amounts, mine=st.booleans(), remote_apply=st.booleans())
    def write(self, advance: int, amount: int, mine: bool, remote_apply: bool) -> None:
        """A transaction commits on the primary; if it is the session's, the session
        notes it at the clock's reading once the commit returned."""
        self.clock += advance
        p = self.true_primary
        self.pos[p] += amount
        self.durable[p] = self.pos[p]
        if remote_apply:  # synchronous_commit = remote_apply: the replicas have it too
            for r in range(self.n):
                if self.reachable[r]:
                    self.pos[r] = self.pos[p]
        if mine:
            self.last_commit = self.pos[p]
            self.last_finish = self.clock
            self.session.note_write(CLUSTER, PG, self.clock)
            self.model_pending = True

    @rule(member=member_numbers, amount=amounts, flush=st.booleans())
    def replicate(self, member: int, amount: int, flush: bool) -> None:
        """A replica replays some more; with ``flush`` what it replayed is durable."""
        r = member % self.n
        self.pos[r] = min(self.pos[self.true_primary], self.pos[r] + amount)
        if flush:
            self.durable[r] = self.pos[r]

    @rule(short_by=st.integers(0, 2))
    def catch_up_all(self, short_by: int) -> None:
        for r in range(self.n):
            self.pos[r] = max(self.pos[r], self.pos[self.true_primary] - short_by)

    @rule(member=member_numbers)
    def fail(self, member: int) -> None:
        i = member % self.n
        if self.reachable[i]:
            self.reachable[i] = False
            self._lose_contact(i)

    @rule(member=member_numbers)
    def recover(self, member: int) -> None:
        self.reachable[member % self.n] = True

    @rule(member=member_numbers, data=st.data())
    def restart(self, member: int, data: st.DataObject) -> None:
        i = member % self.n
        if i != self.true_primary:  # a primary keeps what it committed
            self.pos[i] = data.draw(st.integers(self.durable[i], self.pos[i]), label="back to")
        self.reachable[i] = True
        self._lose_contact(i)

    @rule(member=member_numbers, bump=st.integers(0, 200))
    def switchover(self, member: int, bump: int) -> None:
        new, old = member % self.n, self.true_primary
        if new == old or self.pos[new] != self.pos[old] or not self.reachable[new]:
            return  # only a replica that has replayed everything is promoted
        self.true_primary = new
        self.pos[new] += bump  # the promotion writes a record of its own
        self.durable[new] = self.pos[new]

    def _lose_contact(self, i: int) -> None:
        # The monitor marks the member down at once; a poll in flight fails.
        self.generation[i] += 1
        self.published.pop(i, None)
        self._choose_primary()

    # -- what the monitor learns -------------------------------------------------------------

    @rule(member=member_numbers, late=st.booleans())
    def sample(self, member: int, late: bool) -> None:
        i = member % self.n
        if not self.reachable[i]:
            return  # the poll fails; the member is already down
        position = None if late else self.pos[i]
        self.queue.append(Taken(i, i != self.true_primary, position, self.clock, self.generation[i]))

    @rule(advance=st.integers(0, 2), late=st.booleans(), collect=st.booleans())
    def poll_round(self, advance: int, late: bool, collect: bool) -> None:
        """A monitor round: every member polled at one clock reading, and (unless the
        answers are slow) collected and published."""
        self.clock += advance
        for i in range(self.n):
            self.sample(i, late)
        if collect:
            self.publish_all()

    @rule(short_by=st.integers(0, 2), advance=st.integers(0, 2), collect=st.booleans())
    def quiet_moment(self, short_by: int, advance: int, collect: bool) -> None:
        """The replicas catch up (to within a few bytes), then the monitor polls."""
        self.catch_up_all(short_by)
        self.poll_round(advance, False, collect)

    @precondition(lambda self: self.queue)
    @rule(pick=st.integers(0, 9))
    def publish(self, pick: int) -> None:
        member = self.queue[pick % len(self.queue)].member
        self._publish(self.queue.pop(next(k for k, t in enumerate(self.queue) if t.member == member)))

    @precondition(lambda self: self.queue)
    @rule()
    def publish_all(self) -> None:
        while self.queue:
            self._publish(self.queue.pop(0))

    def _publish(self, taken: Taken) -> None:
        member = taken.member
        if taken.generation != self.generation[member]:
            return  # the member failed or restarted since: this poll failed
        if taken.position is None:
            in_recovery, position = member != self.true_primary, self.pos[member]
        else:
            in_recovery, position = taken.in_recovery, taken.position
        self.published[member] = (in_recovery, position, taken.sent)
        self._choose_primary()

    def _choose_primary(self) -> None:
        """The monitor's rule: keep the primary while it still claims to be one, else
        take the claimant that covers most others (the configured primary on a tie)."""
        claimants = [i for i, (rec, _, _) in self.published.items() if not rec]
        if self.monitor_primary in claimants:
            return
        if not claimants:
            self.monitor_primary = None
            return

        def rank(i: int) -> tuple[int, int]:
            ahead = sum(1 for o in claimants if o != i and self.published[i][1] >= self.published[o][1])
            return (-ahead, 0 if i == 0 else 1)

        self.monitor_primary = min(claimants, key=rank)

    def topology(self) -> Topology:
        p = self.monitor_primary
        primary_sample = self.published[p] if p is not None else None
        views = []
        for i in range(self.n):
            s = self.published.get(i)
            if s is None:
                views.append(MemberView(i, f"m{i}", "unknown", False))
                continue
            in_recovery, position, sent = s
            role = "replica" if in_recovery else "primary" if i == p else "unknown"
            lag_bytes = max(0, primary_sample[1] - position) if in_recovery and primary_sample else None
            views.append(
                MemberView(
                    i, f"m{i}", role, True, LSN(position),
                    sampled_ns=sent, lag_bytes=lag_bytes, eligible=in_recovery,
                )
            )
        return Topology(
            tuple(views),
            primary=p,
            primary_position=LSN(primary_sample[1]) if primary_sample else None,
            primary_sampled_ns=primary_sample[2] if primary_sample else 0,
        )

    # -- reads ---------------------------------------------------------------------------------

    def _needed(self, topo: Topology) -> tuple[bool, int | None]:
        """What a read must observe according to the design: the position of a primary
        sample sent strictly after the session's last write finished."""
        pp, sent = topo.primary_position, topo.primary_sampled_ns
        resolves = self.last_finish is not None and pp is not None and sent > self.last_finish
        if self.remember_resolutions:
            if self.model_pending and resolves:
                assert pp is not None
                self.model_floor = max(self.model_floor or 0, pp.value)
                self.model_pending = False
            return not self.model_pending, self.model_floor
        if self.last_finish is None:
            return True, None
        return (True, pp.value) if resolves and pp is not None else (False, None)

    def _check_safe(self, member: int | None) -> None:
        if member is not None and self.last_commit is not None:
            assert self.pos[member] >= self.last_commit, (
                f"read sent to member {member} at {LSN(self.pos[member])}, which lacks the "
                f"session's write at {LSN(self.last_commit)}"
            )

    @rule()
    def read(self) -> None:
        self._read()

    @invariant()
    def a_read_between_any_two_events_is_safe_and_not_needlessly_sent_to_the_primary(self) -> None:
        self._read()

    def _read(self) -> None:
        topo = self.topology()
        if self.remember_resolutions and topo.primary_position is not None:
            self.session.note_resolution(CLUSTER, topo.primary_position, topo.primary_sampled_ns)
        decision = route_read(topo, self.session.requirement(CLUSTER), self.selector)
        self._check_safe(decision.member)

        known, needed = self._needed(topo)
        proven = [
            v.index for v in topo.members
            if v.role == "replica" and v.up and v.eligible and v.position is not None
            and (needed is None or v.position.value >= needed)
        ]
        if known and proven:
            assert decision.member in proven and decision.reason is Reason.FRESH_REPLICA, (
                f"{decision} although replicas {proven} are known to have {needed}"
            )

    @invariant()
    def no_replica_is_ahead_of_the_primary(self) -> None:
        assert all(p <= self.pos[self.true_primary] for p in self.pos)


MACHINE_SETTINGS = settings(max_examples=200, stateful_step_count=40, deadline=None)


class RememberingResolutions(ReadYourWrites):
    remember_resolutions = True


TestReadYourWrites = ReadYourWrites.TestCase
TestReadYourWrites.settings = MACHINE_SETTINGS

TestReadYourWritesRememberingResolutions = RememberingResolutions.TestCase
TestReadYourWritesRememberingResolutions.settings = MACHINE_SETTINGS
