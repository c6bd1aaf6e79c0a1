"""A history checker for the session guarantees, on the pure core.

Hypothesis drives random interleavings of the true world (commits on the primary,
replicas applying, pausing, failing, restarting and losing what they had not made
durable), of what a lag monitor could know of it (polls sent at one instant, answered
then or later, published later, per member in order), and of sessions that write, read
at every consistency level, and hand tokens to new sessions. Each read is routed exactly
as ``Cluster.decide_read`` routes it (``replpool._routing.decide_read``, with the
pending observation resolved by ``resolve_pending`` and recorded in the
``replpool.Session``), then served by the true state of the member chosen, and checked
against the guarantees of its level:

- ``session``: it sees everything the session wrote, everything it saw before at the
  session and strong levels, and everything the token it started from carried (read
  your writes, monotonic reads, primary answers bind);
- ``bounded``: it sees everything the primary had ``max_staleness`` before;
- every level: it sees the cluster's floor (the primary's first sampled position).

No anomaly is allowed. A restarted replica is modelled the way replpool meets one: its
pooled connections are dead, so the first read sent there finds it down (and goes
elsewhere), and the monitor counts a new life when it next answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from replpool import _tokens
from replpool._monitor import newest_covered
from replpool._positions import LSN, Position
from replpool._routing import MemberView, Selector, Topology, decide_read, resolve_pending
from replpool._session import Consistency, Requirement, Session, make_consistency

CLUSTER = "c"
PG = "postgresql"
START = 0x1000
STALENESS_NS = 40
LEVELS = ["session", "session", "session", "strong", "bounded", "eventual"]


@dataclass
class Replica:
    pos: int = START
    durable: int = START
    epoch: int = 0
    reachable: bool = True
    paused: bool = False
    dead_connections: bool = False  # restarted since the pool last saw it


@dataclass
class View:
    """What the monitor published of a member."""

    position: int | None = START
    sent: int = 0
    up: bool = True
    life: int = 0
    epoch: int = 0
    failed_at: int = 0  # answers to polls sent before then say nothing of it now


@dataclass
class Poll:
    member: int
    sent: int
    position: int | None  # None: the query runs late, its answer is read at publication
    epoch: int


@dataclass
class Reader:
    session: Session
    must_see: int = START  # everything it must observe, in true positions


class World(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock, self.primary = 1_000, START
        self.history: list[tuple[int, int]] = [(self.clock, START)]  # (clock, primary position)
        self.replicas: dict[int, Replica] = {}
        self.views: dict[int, View] = {}
        self.polls: list[Poll] = []
        self.samples: list[tuple[int, Position]] = []
        self.floor: int | None = None
        self.readers: list[Reader] = []
        self.selector = Selector("random", random.Random(0))

    @initialize(n=st.integers(1, 3), seed=st.integers(0, 2**16))
    def start(self, n: int, seed: int) -> None:
        self.selector = Selector("random", random.Random(seed))
        self.replicas = {i: Replica() for i in range(1, n + 1)}
        self.views = {i: View(START, self.clock) for i in range(0, n + 1)}
        self.samples = [(self.clock, LSN(START))]
        self.floor = START
        self.readers = [Reader(Session()) for _ in range(2)]

    # -- the true world --------------------------------------------------------------------

    def tick(self, n: int = 1) -> int:
        self.clock += n
        return self.clock

    @rule(amount=st.integers(1, 50), mine=st.integers(-1, 1))
    def commit(self, amount: int, mine: int) -> None:
        """A transaction commits on the primary: one of the readers' (it notes the write
        once the commit returned), or another client's."""
        self.primary += amount
        self.history.append((self.tick(), self.primary))
        if mine >= 0:
            r = self.readers[mine]
            r.must_see = max(r.must_see, self.primary)
            r.session.note_write(CLUSTER, PG, self.tick())

    @rule(ticks=st.integers(1, 30))
    def wait(self, ticks: int) -> None:
        self.tick(ticks)

    @rule(member=st.integers(1, 3), amount=st.integers(1, 80))
    def apply(self, member: int, amount: int) -> None:
        r = self.replicas.get(member)
        if r is not None and r.reachable and not r.paused:
            r.pos = min(self.primary, r.pos + amount)
            self.tick()

    @rule(member=st.integers(1, 3))
    def flush(self, member: int) -> None:
        r = self.replicas.get(member)
        if r is not None:
            r.durable = r.pos

    @rule(member=st.integers(1, 3), paused=st.booleans())
    def pause(self, member: int, paused: bool) -> None:
        r = self.replicas.get(member)
        if r is not None:
            r.paused = paused

    @rule(member=st.integers(1, 3), reachable=st.booleans())
    def partition(self, member: int, reachable: bool) -> None:
        r = self.replicas.get(member)
        if r is not None:
            r.reachable = reachable

    @rule(member=st.integers(1, 3), keep=st.sampled_from([0.0, 0.5, 1.0]))
    def restart(self, member: int, keep: float) -> None:
        """A crash and restart: what was not durable may be lost, every pooled
        connection is dead, and the server answers as a new life of itself."""
        r = self.replicas.get(member)
        if r is not None:
            r.pos = r.durable + int((r.pos - r.durable) * keep)
            r.epoch += 1
            r.dead_connections = True
            self.tick()

    # -- the monitor -----------------------------------------------------------------------

    @rule(member=st.integers(0, 3), late=st.booleans())
    def poll(self, member: int, late: bool) -> None:
        if member not in self.views:
            return
        sent = self.tick()
        if member == 0:
            self.polls.append(Poll(0, sent, None if late else self.primary, 0))
            return
        r = self.replicas[member]
        if not r.reachable:
            self.polls.append(Poll(member, sent, -1, r.epoch))  # will fail
        else:
            self.polls.append(Poll(member, sent, None if late else r.pos, r.epoch))

    @rule()
    def monitor_round(self) -> None:
        """A whole round: every member polled at once, every answer published."""
        for member in sorted(self.views):
            self.poll(member, False)
        while self.polls:
            self.publish(0)

    @precondition(lambda self: bool(self.polls))
    @rule(pick=st.integers(0, 10))
    def publish(self, pick: int) -> None:
        """The answer of a poll reaches the monitor: the oldest of some member's."""
        members = sorted({p.member for p in self.polls})
        member = members[pick % len(members)]
        poll = next(p for p in self.polls if p.member == member)
        self.polls.remove(poll)
        view = self.views[member]
        self.tick()
        if member == 0:
            position = self.primary if poll.position is None else poll.position
            view.position, view.sent = position, poll.sent
            if not self.samples or self.samples[-1][0] < poll.sent:
                self.samples.append((poll.sent, LSN(position)))
            return
        r = self.replicas[member]
        if poll.sent < view.failed_at:
            return
        late_and_lost = poll.position is None and (not r.reachable or poll.epoch != r.epoch)
        if poll.position == -1 or late_and_lost:
            self.fail(member)
            return
        position = r.pos if poll.position is None else poll.position
        if poll.epoch != view.epoch:
            view.life += 1  # the monitor saw it restarted
            view.epoch = poll.epoch
        if not view.up:
            view.life += 1  # it came back
            view.up = True
        if poll.epoch == r.epoch:
            r.dead_connections = False  # the pool checked it after it came back
        view.position, view.sent = position, poll.sent

    def fail(self, member: int) -> None:
        view = self.views[member]
        view.up = False
        view.position = None
        view.failed_at = self.tick()

    def topology(self) -> Topology:
        members = [MemberView(0, "p", "primary", True, LSN(self.views[0].position or START),
                              sampled_ns=self.views[0].sent)]
        floor = LSN(self.floor) if self.floor is not None else None
        for i, view in sorted(self.views.items()):
            if i == 0:
                continue
            position = LSN(view.position) if view.position is not None else None
            eligible = view.up and position is not None and (floor is None or position.covers(floor))
            members.append(MemberView(
                i, f"r{i}", "replica", view.up and position is not None, position,
                sampled_ns=view.sent, lag_seconds=0.0, lag_bytes=0, eligible=eligible,
                life=view.life,
                fresh_as_of_ns=newest_covered(self.samples, position) if position is not None else None,
            ))
        last_sent, last = self.samples[-1]
        return Topology(tuple(members), primary=0, primary_position=last, primary_sampled_ns=last_sent)

    # -- sessions --------------------------------------------------------------------------

    @rule(who=st.integers(0, 1), levels=st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4))
    def reads(self, who: int, levels: list[str]) -> None:
        for level in levels:
            self.read(who, level)

    def read(self, who: int, level: str) -> None:
        reader = self.readers[who]
        consistency = make_consistency(level, STALENESS_NS / 1e9 if level == "bounded" else None)
        avoid: frozenset[int] = frozenset()
        while True:
            topo = self.topology()
            decision = decide_read(
                topo, reader.session.requirement(CLUSTER), self.selector, self.resolver(reader.session),
                level=consistency, now_ns=self.clock, avoid=avoid,
            )
            member = decision.member
            if member is None:
                seen = self.primary
                break
            r = self.replicas[member]
            if not r.reachable or r.dead_connections:
                # The checkout finds its connections dead: the member is out, try again.
                self.fail(member)
                avoid = avoid | {member}
                continue
            seen = r.pos
            break
        self.check(reader, consistency, seen, member)
        life = self.views[member].life if member is not None else 0
        ended = self.tick()
        if consistency.level.value in ("session", "strong"):
            reader.session.observe(CLUSTER, PG, ended, member, life)
            reader.must_see = max(reader.must_see, seen)

    def resolver(self, session: Session):  # type: ignore[no-untyped-def]
        def resolve(req: Requirement) -> Requirement | None:
            found = resolve_pending(req, self.topology(), self.samples)
            if found is None:
                return None
            session.note_resolution(CLUSTER, found[1], found[0], found[2], found[3])
            return session.requirement(CLUSTER)

        return resolve

    def check(self, reader: Reader, level: Consistency, seen: int, member: int | None) -> None:
        where = "the primary" if member is None else f"replica {member}"
        assert self.floor is not None and seen >= self.floor, f"read below the floor on {where}"
        if level.level.value == "session":
            assert seen >= reader.must_see, (
                f"session read on {where} saw {seen:#x}, older than {reader.must_see:#x} "
                f"it had written or seen ({reader.session!r})"
            )
        if level.level.value == "bounded":
            oldest = max(p for t, p in self.history if t <= self.clock - STALENESS_NS) if any(
                t <= self.clock - STALENESS_NS for t, _ in self.history
            ) else START
            assert seen >= oldest, f"bounded read on {where} saw {seen:#x}, older than {oldest:#x}"

    @rule(src=st.integers(0, 1), dst=st.integers(0, 1))
    def hand_token(self, src: int, dst: int) -> None:
        """A token of one reader starts a new session for another (a later request, a
        task), which must then observe everything the first had."""
        giver = self.readers[src]
        token = self.token(giver.session)
        s = Session()
        if token is not None:
            now = self.tick()
            for name, entry in _tokens.decode(token).items():
                s.adopt(name, entry, now)
        self.readers[dst] = Reader(s, max(giver.must_see, START))

    def token(self, session: Session) -> str | None:
        entries: dict[str, _tokens.Entry] = {}
        for name, req in session.snapshot().items():
            if req.pending_since is not None:
                found = resolve_pending(req, self.topology(), self.samples)
                if found is not None:
                    session.note_resolution(name, found[1], found[0], found[2], found[3])
                    req = session.snapshot()[name]
            nonce = session._nonce_for(name, req.pending_since) if req.pending_since is not None else None
            if req.floor is not None or nonce is not None:
                entries[name] = _tokens.Entry(req.engine, req.floor, nonce)
        return _tokens.encode(entries) if entries else None

    @rule(who=st.integers(0, 1))
    def new_session(self, who: int) -> None:
        """A session that starts clean: it must observe nothing in particular."""
        self.readers[who] = Reader(Session())


World.TestCase.settings = settings(max_examples=400, stateful_step_count=80, deadline=None)
TestSessionHistory = World.TestCase
