"""The role decision (replpool._roles): pure, over what members say of themselves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replpool._roles import Claim, Source, Verdict, decide_roles


def maria(port: int, *, read_only: bool, sources: tuple[Source, ...] | None = (),
          server_id: int | None = None, up: bool = True, host: str = "10.0.0.1") -> Claim:
    return Claim(host, port, read_only=read_only, sources=sources,
                 server_id=server_id if server_id is not None else port, up=up)


def src(port: int, server_id: int | None = None, host: str = "10.0.0.1") -> tuple[Source, ...]:
    return (Source(host, port, server_id),)


def test_postgresql_roles_are_what_pg_is_in_recovery_says():
    claims = [Claim("db1", 5432, in_recovery=False), Claim("db2", 5432, in_recovery=True)]
    assert decide_roles(claims) == [Verdict("candidate"), Verdict("replica")]


def test_a_replica_with_read_only_off_is_a_replica_and_flagged_writable():
    claims = [maria(1, read_only=False), maria(2, read_only=False, sources=src(1, 1))]
    assert decide_roles(claims) == [Verdict("candidate"), Verdict("replica", source=0, writable=True)]


def test_a_replica_with_read_only_on_is_a_replica_not_flagged():
    claims = [maria(1, read_only=False), maria(2, read_only=True, sources=src(1))]
    assert decide_roles(claims)[1] == Verdict("replica", source=0)


def test_the_source_is_matched_by_server_id_when_the_replica_names_it_otherwise():
    # The replica reaches its primary by another address than the monitor does.
    claims = [maria(1, read_only=False, server_id=11),
              maria(2, read_only=False, sources=src(3306, 11, host="192.0.2.9"))]
    assert decide_roles(claims)[1] == Verdict("replica", source=0, writable=True)


def test_a_replica_of_a_primary_that_is_down_stays_a_replica():
    claims = [maria(1, read_only=False, up=False), maria(2, read_only=False, sources=src(1))]
    assert decide_roles(claims) == [None, Verdict("replica", source=0, writable=True)]


def test_a_member_replicating_from_nobody_is_a_candidate_if_writable_else_fenced():
    claims = [maria(1, read_only=False), maria(2, read_only=True)]
    assert decide_roles(claims) == [Verdict("candidate"), Verdict("fenced")]


def test_without_the_replication_status_read_only_decides():
    claims = [maria(1, read_only=False, sources=None), maria(2, read_only=True, sources=None)]
    assert decide_roles(claims) == [
        Verdict("candidate", by_read_only=True), Verdict("replica", by_read_only=True),
    ]


def test_a_member_fed_only_from_outside_the_cluster_is_what_read_only_says():
    outside = src(9999, 99, host="192.0.2.50")
    claims = [maria(1, read_only=False, sources=outside), maria(2, read_only=True, sources=outside)]
    assert decide_roles(claims) == [
        Verdict("candidate", external=True), Verdict("replica", external=True),
    ]


def test_in_a_replication_cycle_read_only_picks_the_primary():
    # Two primaries replicating from each other, one of them written to.
    claims = [maria(1, read_only=False, sources=src(2)), maria(2, read_only=True, sources=src(1))]
    assert decide_roles(claims) == [Verdict("candidate", source=1), Verdict("replica", source=0)]


def test_a_chain_of_replicas_are_all_replicas():
    claims = [maria(1, read_only=False), maria(2, read_only=False, sources=src(1)),
              maria(3, read_only=False, sources=src(2))]
    assert [v.kind for v in decide_roles(claims) if v] == ["candidate", "replica", "replica"]


@st.composite
def topologies(draw: st.DrawFn) -> list[Claim]:
    """A primary (port 1) and replicas that each replicate from an earlier member (no
    cycle), with any read_only; some members down."""
    n = draw(st.integers(2, 6))
    claims = [maria(1, read_only=draw(st.booleans()), up=draw(st.booleans()))]
    for i in range(2, n + 1):
        source = draw(st.integers(1, i - 1))
        claims.append(maria(i, read_only=draw(st.booleans()), sources=src(source),
                            up=draw(st.booleans())))
    return claims


@given(topologies())
def test_a_member_replicating_from_a_member_is_never_a_candidate_whatever_read_only(claims):
    verdicts = decide_roles(claims)
    for c, v in zip(claims, verdicts):
        if not c.up:
            assert v is None
        elif c.sources:
            assert v is not None and v.kind == "replica" and v.source is not None
            assert v.writable is (c.read_only is False)
