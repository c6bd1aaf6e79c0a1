"""route_read: where a read goes, and why, for every reason it can give."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replpool._positions import LSN, MariaDBGTID
from replpool._routing import (
    SELECTIONS,
    WAITABLE,
    MemberView,
    Reason,
    Selector,
    Topology,
    decide_read,
    route_read,
    usual_read,
)
from replpool._session import Requirement

PG = "postgresql"


def primary(index: int = 0, position: LSN | None = LSN(1000)) -> MemberView:
    return MemberView(index, f"db{index}:5432", "primary", True, position)


def replica(
    index: int,
    position: LSN | None = LSN(1000),
    *,
    up: bool = True,
    eligible: bool = True,
    lag_bytes: int | None = 0,
    lag_seconds: float | None = 0.0,
) -> MemberView:
    return MemberView(
        index, f"db{index}:5432", "replica", up, position,
        lag_bytes=lag_bytes, lag_seconds=lag_seconds, eligible=eligible,
    )


def topology(*replicas: MemberView, position: LSN | None = LSN(1000), sampled_ns: int = 100) -> Topology:
    return Topology(
        (primary(0, position), *replicas), primary=0, primary_position=position, primary_sampled_ns=sampled_ns
    )


def route(
    topo: Topology, req: Requirement | None = None, selector: Selector | None = None, **kw: object
) -> tuple[int | None, Reason]:
    d = route_read(topo, req, selector or Selector(), **kw)  # type: ignore[arg-type]
    return d.member, d.reason


# -- one test per reason -------------------------------------------------------------------------


def test_a_pinned_read_goes_to_the_primary_even_with_a_fresh_replica() -> None:
    assert route(topology(replica(1)), pinned=True) == (None, Reason.PINNED)


def test_no_replica_configured_sends_reads_to_the_primary() -> None:
    assert route(topology()) == (None, Reason.NO_REPLICA)


def test_replicas_that_are_down_count_as_no_replica() -> None:
    topo = topology(replica(1, up=False, eligible=False), replica(2, up=False, eligible=True))
    assert route(topo) == (None, Reason.NO_REPLICA)


def test_replicas_not_sampled_yet_count_as_no_replica() -> None:
    assert route(topology(replica(1, None, eligible=False))) == (None, Reason.NO_REPLICA)


def test_replicas_up_but_not_eligible_are_lagging() -> None:
    topo = topology(replica(1, LSN(10), eligible=False), replica(2, up=False))
    assert route(topo) == (None, Reason.REPLICA_LAGGING)


def test_a_write_not_yet_sampled_on_the_primary_is_pending() -> None:
    req = Requirement(PG, None, pending_since=500)
    assert route(topology(replica(1), sampled_ns=400), req) == (None, Reason.POSITION_PENDING)


def test_a_primary_sample_sent_the_same_instant_as_the_write_leaves_it_pending() -> None:
    req = Requirement(PG, LSN(10), pending_since=500)
    assert route(topology(replica(1), sampled_ns=500), req) == (None, Reason.POSITION_PENDING)


def test_a_write_is_pending_while_the_primary_position_is_unknown() -> None:
    req = Requirement(PG, None, pending_since=5)
    assert route(topology(replica(1), position=None, sampled_ns=0), req) == (None, Reason.POSITION_PENDING)


def test_a_requirement_beyond_every_replica_finds_no_fresh_replica() -> None:
    req = Requirement(PG, LSN(2000))
    d = route_read(topology(replica(1, LSN(1999)), replica(2, LSN(5))), req, Selector())
    assert (d.member, d.reason, d.needed) == (None, Reason.NO_FRESH_REPLICA, LSN(2000))


def test_a_pending_write_needs_the_position_of_the_first_primary_sample_sent_after_it() -> None:
    req = Requirement(PG, LSN(10), pending_since=50)
    behind = route_read(topology(replica(1, LSN(999)), sampled_ns=51), req, Selector())
    assert (behind.member, behind.reason, behind.needed) == (None, Reason.NO_FRESH_REPLICA, LSN(1000))
    there = route_read(topology(replica(1, LSN(1000)), sampled_ns=51), req, Selector())
    assert (there.member, there.reason, there.needed) == (1, Reason.FRESH_REPLICA, LSN(1000))


def test_a_read_without_requirement_goes_to_any_eligible_replica() -> None:
    d = route_read(topology(replica(1, LSN(3))), None, Selector())
    assert (d.member, d.reason, d.needed) == (1, Reason.FRESH_REPLICA, None)


def test_a_requirement_with_neither_floor_nor_pending_write_needs_nothing() -> None:
    d = route_read(topology(replica(1, LSN(0))), Requirement(PG), Selector())
    assert (d.member, d.reason, d.needed) == (1, Reason.FRESH_REPLICA, None)


def test_the_replica_that_has_the_writes_is_chosen_over_one_that_lacks_them() -> None:
    topo = topology(replica(1, LSN(100)), replica(2, LSN(900)), replica(3, LSN(400)))
    for _ in range(5):
        assert route(topo, Requirement(PG, LSN(500))) == (2, Reason.FRESH_REPLICA)


def test_only_members_in_the_replica_role_serve_reads() -> None:
    odd = MemberView(1, "db1:5432", "unknown", True, LSN(1000), eligible=True)
    topo = Topology((primary(0), odd), primary=0, primary_position=LSN(1000), primary_sampled_ns=1)
    assert route(topo) == (None, Reason.NO_REPLICA)


def test_avoiding_the_chosen_replica_goes_to_another_saying_member_down() -> None:
    topo = topology(replica(1), replica(2))
    assert route(topo, avoid=frozenset({1})) == (2, Reason.MEMBER_DOWN)


def test_avoiding_every_replica_goes_to_the_primary_saying_member_down() -> None:
    topo = topology(replica(1), replica(2))
    assert route(topo, avoid=frozenset({1, 2})) == (None, Reason.MEMBER_DOWN)


def test_only_pending_and_not_fresh_are_worth_waiting_for() -> None:
    assert WAITABLE == {Reason.POSITION_PENDING, Reason.NO_FRESH_REPLICA}
    req = Requirement(PG, None, pending_since=500)
    assert route_read(topology(replica(1), sampled_ns=1), req, Selector()).waitable
    assert not route_read(topology(replica(1)), None, Selector(), pinned=True).waitable


def test_primary_view_is_the_primary_only_while_it_is_up() -> None:
    topo = topology(replica(1))
    assert topo.primary_view == topo.members[0]
    down = Topology((MemberView(0, "db0:5432", "primary", False), replica(1)), primary=0)
    assert down.primary_view is None
    assert Topology((replica(1),)).primary_view is None
    assert [m.index for m in topo.replicas()] == [1]


def test_reason_prints_as_its_metric_label() -> None:
    assert str(Reason.FRESH_REPLICA) == "fresh_replica"


# -- selection policies ----------------------------------------------------------------------------


def test_round_robin_alternates_between_fresh_replicas() -> None:
    topo = topology(replica(1), replica(2))
    sel = Selector("round_robin")
    picks = [route(topo, selector=sel)[0] for _ in range(6)]
    assert set(picks) == {1, 2}
    assert all(a != b for a, b in zip(picks, picks[1:]))


def test_round_robin_gives_each_of_three_replicas_one_turn_in_three() -> None:
    topo = topology(replica(1), replica(2), replica(3))
    sel = Selector("round_robin")
    picks = [route(topo, selector=sel)[0] for _ in range(9)]
    assert Counter(picks) == {1: 3, 2: 3, 3: 3}
    assert sorted(picks[:3]) == [1, 2, 3]


def test_round_robin_skips_replicas_that_are_not_fresh() -> None:
    topo = topology(replica(1, LSN(10)), replica(2), replica(3))
    sel = Selector("round_robin")
    picks = [route(topo, Requirement(PG, LSN(500)), sel)[0] for _ in range(6)]
    assert set(picks) == {2, 3}


def test_least_lag_prefers_the_smaller_byte_lag() -> None:
    topo = topology(replica(1, lag_bytes=500), replica(2, lag_bytes=20), replica(3, lag_bytes=900))
    sel = Selector("least_lag")
    assert {route(topo, selector=sel)[0] for _ in range(6)} == {2}


def test_least_lag_breaks_equal_byte_lag_by_seconds() -> None:
    topo = topology(replica(1, lag_bytes=0, lag_seconds=2.0), replica(2, lag_bytes=0, lag_seconds=0.5))
    sel = Selector("least_lag")
    assert {route(topo, selector=sel)[0] for _ in range(4)} == {2}


def test_least_lag_spreads_reads_over_equally_lagging_replicas() -> None:
    topo = topology(replica(1, lag_bytes=0), replica(2, lag_bytes=0), replica(3, lag_bytes=64))
    sel = Selector("least_lag")
    picks = [route(topo, selector=sel)[0] for _ in range(6)]
    assert Counter(picks) == {1: 3, 2: 3}


def test_least_busy_uses_the_busy_callable() -> None:
    topo = topology(replica(1), replica(2), replica(3))
    load = {1: 5, 2: 0, 3: 2}
    sel = Selector("least_busy")
    assert {route(topo, selector=sel, busy=load.__getitem__)[0] for _ in range(4)} == {2}
    load[2] = 9
    assert route(topo, selector=sel, busy=load.__getitem__)[0] == 3


def test_least_busy_spreads_reads_over_equally_busy_replicas() -> None:
    topo = topology(replica(1), replica(2), replica(3))
    load = {1: 1, 2: 1, 3: 4}
    sel = Selector("least_busy")
    picks = [route(topo, selector=sel, busy=load.__getitem__)[0] for _ in range(6)]
    assert Counter(picks) == {1: 3, 2: 3}


def test_random_only_returns_fresh_replicas_and_uses_them_all() -> None:
    topo = topology(replica(1), replica(2, LSN(5)), replica(3), replica(4, eligible=False))
    sel = Selector("random", rng=random.Random(1234))
    picks = Counter(route(topo, Requirement(PG, LSN(900)), sel)[0] for _ in range(200))
    assert set(picks) == {1, 3}


@pytest.mark.parametrize("policy", SELECTIONS)
def test_a_single_fresh_replica_is_chosen_whatever_the_policy(policy: str) -> None:
    topo = topology(replica(1, LSN(5)), replica(2), replica(3, up=False))
    sel = Selector(policy)
    assert {route(topo, Requirement(PG, LSN(1000)), sel)[0] for _ in range(4)} == {2}


# -- the safety property -------------------------------------------------------------------------

ROLES = ("primary", "replica", "unknown")


def lsn_positions(n: int) -> st.SearchStrategy[LSN]:
    return st.integers(0, n).map(LSN)


def gtid_positions(n: int) -> st.SearchStrategy[MariaDBGTID]:
    return st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 2), st.integers(0, n)), max_size=3
    ).map(MariaDBGTID.from_gtids)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Topology, Requirement | None, frozenset[int], bool, str, str]:
    engine = draw(st.sampled_from([PG, "mariadb"]))
    positions = lsn_positions(8) if engine == PG else gtid_positions(4)
    n = draw(st.integers(1, 5))
    members = tuple(
        MemberView(
            i,
            f"db{i}:5432",
            draw(st.sampled_from(ROLES)),
            draw(st.booleans()),
            draw(st.none() | positions),
            lag_bytes=draw(st.none() | st.integers(0, 3)),
            lag_seconds=draw(st.none() | st.floats(0, 3)),
            eligible=draw(st.booleans()),
        )
        for i in range(n)
    )
    topo = Topology(
        members,
        primary=draw(st.none() | st.integers(0, n - 1)),
        primary_position=draw(st.none() | positions),
        primary_sampled_ns=draw(st.integers(0, 6)),
    )
    req = draw(
        st.none()
        | st.builds(Requirement, st.just(engine), st.none() | positions, st.none() | st.integers(0, 6),
                    st.none(), st.just(0))
    )
    avoid = frozenset(draw(st.sets(st.integers(0, n - 1), max_size=2)))
    return topo, req, avoid, draw(st.booleans()), draw(st.sampled_from(SELECTIONS)), engine


def model_needed(topo: Topology, req: Requirement | None) -> tuple[bool, object]:
    """(known, position a replica must cover), computed from the rule itself: a pending
    write is known only through a primary sample sent strictly after it finished."""
    if req is None:
        return True, None
    if req.pending_since is None:
        return True, req.floor
    if topo.primary_position is None or topo.primary_sampled_ns <= req.pending_since:
        return False, None
    return True, topo.primary_position if req.floor is None else req.floor.join(topo.primary_position)


@settings(deadline=None, max_examples=200)
@given(scenarios(), st.randoms(use_true_random=False))
def test_a_chosen_replica_is_an_eligible_live_replica_that_has_the_sessions_writes(
    scenario: tuple[Topology, Requirement | None, frozenset[int], bool, str, str], rng: random.Random
) -> None:
    topo, req, avoid, pinned, policy, _ = scenario
    d = route_read(topo, req, Selector(policy, rng=rng), pinned=pinned, avoid=avoid, busy=lambda i: i % 2)
    if d.member is None:
        assert d.reason not in (Reason.FRESH_REPLICA, Reason.WAITED_REPLICA)
        return
    m = topo.members[d.member]
    assert m.role == "replica" and m.up and m.eligible and m.index not in avoid
    assert not pinned
    known, needed = model_needed(topo, req)
    assert known
    assert m.position is not None
    assert needed is None or m.position.covers(needed)
    assert d.needed == needed


@settings(deadline=None, max_examples=200)
@given(scenarios(), st.randoms(use_true_random=False))
def test_a_read_goes_to_a_replica_whenever_one_is_known_to_have_the_sessions_writes(
    scenario: tuple[Topology, Requirement | None, frozenset[int], bool, str, str], rng: random.Random
) -> None:
    topo, req, avoid, pinned, policy, _ = scenario
    d = route_read(topo, req, Selector(policy, rng=rng), pinned=pinned, avoid=avoid)
    known, needed = model_needed(topo, req)
    usable = [
        m for m in topo.members
        if m.role == "replica" and m.up and m.eligible and m.position is not None and m.index not in avoid
        and (needed is None or m.position.covers(needed))
    ]
    if pinned:
        assert d == type(d)(None, Reason.PINNED)
    elif known and usable:
        assert d.member in {m.index for m in usable}
        assert d.reason == (Reason.MEMBER_DOWN if avoid else Reason.FRESH_REPLICA)
    else:
        assert d.member is None


# -- consistency levels ---------------------------------------------------------------------------

from replpool._routing import resolve_from  # noqa: E402
from replpool._session import EVENTUAL, STRONG, make_consistency  # noqa: E402


def sticky(index: int, life: int = 0, *, since: int = 500, floor: LSN | None = None) -> Requirement:
    """A session whose pending reads were made on replica ``index``."""
    return Requirement(PG, floor, since, index, life)


def replica_at(index: int, position: LSN, *, life: int = 0, sampled_ns: int = 100,
               fresh_as_of_ns: int | None = None) -> MemberView:
    return MemberView(index, f"db{index}:5432", "replica", True, position, sampled_ns=sampled_ns,
                      lag_bytes=0, lag_seconds=0.0, eligible=True, life=life, fresh_as_of_ns=fresh_as_of_ns)


def test_the_strong_level_reads_the_primary_even_with_a_fresh_replica() -> None:
    assert route(topology(replica(1)), level=STRONG) == (None, Reason.PINNED)


def test_the_eventual_level_ignores_the_sessions_floor_and_pending_writes() -> None:
    topo = topology(replica(1, LSN(10)))
    assert route(topo, Requirement(PG, LSN(900), 500), level=EVENTUAL) == (1, Reason.FRESH_REPLICA)


def test_the_eventual_level_still_needs_an_eligible_replica() -> None:
    assert route(topology(replica(1, eligible=False)), level=EVENTUAL) == (None, Reason.REPLICA_LAGGING)


def test_the_bounded_level_takes_a_replica_known_fresh_within_the_bound() -> None:
    bounded = make_consistency("bounded", 2.0)
    topo = topology(replica_at(1, LSN(900), fresh_as_of_ns=5_000_000_000),
                    replica_at(2, LSN(1000), fresh_as_of_ns=8_000_000_000))
    # At t = 9.5 s: replica 1 may be 4.5 s behind, replica 2 at most 1.5 s.
    assert route(topo, Requirement(PG, LSN(5000), 1), level=bounded, now_ns=9_500_000_000) == (2, Reason.FRESH_REPLICA)


def test_the_bounded_level_reads_the_primary_when_no_replica_is_known_within_the_bound() -> None:
    bounded = make_consistency("bounded", 1.0)
    topo = topology(replica_at(1, LSN(900), fresh_as_of_ns=5_000_000_000), replica_at(2, LSN(900)))
    d = route_read(topo, None, Selector(), level=bounded, now_ns=9_500_000_000)
    assert (d.member, d.reason, d.waitable) == (None, Reason.NO_FRESH_REPLICA, True)


def test_a_session_pending_on_a_replica_reads_that_replica_again() -> None:
    topo = topology(replica_at(1, LSN(1000)), replica_at(2, LSN(1000)))
    sel = Selector("round_robin")
    assert {route(topo, sticky(2), sel)[0] for _ in range(6)} == {2}


def test_a_session_pending_on_a_replica_that_restarted_reads_the_primary() -> None:
    # Its earlier life may have shown more than it has now.
    topo = topology(replica_at(1, LSN(1000), sampled_ns=100), replica_at(2, LSN(1000), life=1, sampled_ns=100))
    assert route(topo, sticky(2, life=0)) == (None, Reason.POSITION_PENDING)


def test_a_session_pending_on_a_replica_that_is_avoided_reads_the_primary() -> None:
    topo = topology(replica_at(1, LSN(1000)), replica_at(2, LSN(1000)))
    assert route(topo, sticky(2), avoid=frozenset({2})) == (None, Reason.POSITION_PENDING)


def test_a_replicas_sample_sent_after_the_pending_reads_resolves_them_to_its_position() -> None:
    topo = topology(replica_at(1, LSN(990)), replica_at(2, LSN(995), sampled_ns=600), sampled_ns=100)
    resolved = resolve_from(topo, sticky(2, since=500))
    assert resolved == Requirement(PG, LSN(995))
    # Then any replica that far will do: replica 1 is not, replica 2 is.
    assert route(topo, resolved) == (2, Reason.FRESH_REPLICA)


def test_a_replicas_sample_from_another_life_resolves_nothing() -> None:
    topo = topology(replica_at(2, LSN(995), sampled_ns=600, life=3), sampled_ns=100)
    assert resolve_from(topo, sticky(2, life=2, since=500)).pending_since == 500


def test_a_primary_sample_resolves_what_was_read_on_a_replica() -> None:
    topo = topology(replica_at(1, LSN(990)), replica_at(2, LSN(1000)), position=LSN(1000), sampled_ns=700)
    assert resolve_from(topo, sticky(1, since=500)) == Requirement(PG, LSN(1000))


@settings(max_examples=200, deadline=None)
@given(
    positions=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    floor=st.integers(0, 50), on=st.integers(1, 4), life=st.integers(0, 2),
    lives=st.lists(st.integers(0, 2), min_size=4, max_size=4),
    level=st.sampled_from(["session", "eventual", "strong"]),
)
def test_a_session_read_never_goes_to_a_replica_behind_its_floor_or_off_its_pending_replica(
    positions: list[int], floor: int, on: int, life: int, lives: list[int], level: str
) -> None:
    members = tuple(replica_at(i + 1, LSN(p), life=lives[i]) for i, p in enumerate(positions))
    topo = Topology((primary(0, LSN(100)), *members), primary=0, primary_position=LSN(100), primary_sampled_ns=100)
    req = sticky(on, life, floor=LSN(floor))
    d = route_read(topo, req, Selector("random", random.Random(1)), level=make_consistency(level))
    if d.member is None or level == "eventual":
        return
    chosen = topo.members[d.member]
    assert chosen.position is not None and chosen.position.covers(LSN(floor))
    assert (d.member, chosen.life) == (on, life)


@st.composite
def usual_scenarios(draw: st.DrawFn) -> tuple[Topology, Requirement | None]:
    """Topologies and session requirements, with lives and observations pending on a
    member (what usual_read looks at)."""
    positions = lsn_positions(8)
    n = draw(st.integers(1, 4))
    members = tuple(
        MemberView(
            i, f"db{i}:5432", draw(st.sampled_from(ROLES)), draw(st.booleans()), draw(st.none() | positions),
            lag_bytes=draw(st.none() | st.integers(0, 3)), lag_seconds=draw(st.none() | st.floats(0, 3)),
            eligible=draw(st.booleans()), life=draw(st.integers(0, 2)),
        )
        for i in range(n)
    )
    topo = Topology(
        members, primary=draw(st.none() | st.integers(0, n - 1)),
        primary_position=draw(st.none() | positions), primary_sampled_ns=draw(st.integers(0, 6)),
    )
    req = draw(
        st.none()
        | st.builds(Requirement, st.just(PG), st.none() | positions, st.none() | st.integers(0, 6),
                    st.none() | st.integers(0, n - 1), st.integers(0, 2))
    )
    return topo, req


@settings(deadline=None, max_examples=300)
@given(usual_scenarios(), st.sampled_from(SELECTIONS), st.integers(0, 2**32))
def test_the_usual_read_is_decided_as_decide_read_decides_it(
    scenario: tuple[Topology, Requirement | None], policy: str, seed: int
) -> None:
    topo, req = scenario

    def busy(i: int) -> int:
        return i % 2

    usual = usual_read(topo, req, Selector(policy, rng=random.Random(seed)), busy)
    full = decide_read(topo, req, Selector(policy, rng=random.Random(seed)), lambda r: None, busy=busy)
    if usual is not None:
        assert usual == full
    # It answers the two reads it is for.
    if req is None:
        assert (usual is None) == (not topo.eligible)
    elif req.floor is None and req.pending_since is not None and req.pending_on is not None:
        back = any(m.index == req.pending_on and m.life == req.pending_life for m in topo.eligible)
        assert (usual is not None) == back
    else:
        assert usual is None
