"""The cluster on real replicated servers: read-your-writes, routing, health, failover.

Every test runs against the shared lab (healed after each test) unless it needs a lab of
its own (promote)."""

from __future__ import annotations

import contextvars
import gc
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import replpool
from replpool import Reason, _clusterbase, _pg, _session
from tests.engines import CLUSTER_LABS, POSTGRESQL, EngineOps, rows
from tests.fronts import AsyncFront
from tests.labtools import wait_until

pytestmark = pytest.mark.lab

FAST = {"monitor_interval": 0.05, "probe_timeout": 0.5, "connect_timeout": 2}

# Each engine's lab on the thread front (MariaDB's twice, with replicas read_only on and
# off), and PostgreSQL's on the asyncio front too (tests.fronts.AsyncFront).
SETUPS: dict[str, tuple[EngineOps, str]] = {
    **{name: (ops, "sync") for name, ops in CLUSTER_LABS.items()},
    "postgresql-async": (POSTGRESQL, "async"),
}
# A test about threads or the thread front itself.
sync_only = pytest.mark.parametrize("setup", sorted(CLUSTER_LABS), indirect=True)
# A test of PostgreSQL's connections, on both fronts.
postgresql_only = pytest.mark.parametrize("setup", ["postgresql", "postgresql-async"], indirect=True)


@pytest.fixture(params=sorted(SETUPS))
def setup(request: pytest.FixtureRequest) -> tuple[EngineOps, str]:
    return SETUPS[request.param]


@pytest.fixture
def engine(setup: tuple[EngineOps, str]) -> EngineOps:
    return setup[0]


@pytest.fixture
def lab(engine: EngineOps, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(engine.lab_fixture)


@pytest.fixture
def make_cluster(setup: tuple[EngineOps, str]) -> Iterator[Callable[..., Any]]:
    """``make_cluster(lab, replicas=None, **options)``: a cluster of the lab on the
    test's front (all the lab's replicas unless ``replicas`` lists some), not opened."""
    made: list[AsyncFront] = []

    def make(lab: Any, replicas: list[Any] | None = None, **options: Any) -> Any:
        urls = [r.url for r in (lab.replicas if replicas is None else replicas)]
        settings = {**FAST, **options}
        if setup[1] == "sync":
            return replpool.Cluster(lab.primary.url, urls, **settings)
        front = AsyncFront(replpool.AsyncCluster(lab.primary.url, urls, **settings))
        made.append(front)
        return front

    yield make
    for front in made:
        front.close()


@pytest.fixture
def cluster(lab: Any, make_cluster: Callable[..., Any]) -> Iterator[Any]:
    with make_cluster(lab) as c:
        yield c


@pytest.fixture
def table(cluster: replpool.Cluster, engine: EngineOps, lab: Any) -> Iterator[str]:
    name = engine.table()
    cluster.query(engine.create_table_sql(name))
    lab.wait_until_caught_up()
    # Sessions start from the thread's implicit one, and the test's must not have to
    # observe this write (the monitor may not have sampled it yet).
    _session.forget_implicit_session()
    yield name
    with replpool.session():
        cluster.query(f"DROP TABLE {name}")


def routed(cluster: replpool.Cluster) -> dict[str, dict[str, int]]:
    return cluster.status().routing


def reason_count(cluster: replpool.Cluster, target: str, reason: Reason) -> int:
    return routed(cluster).get(target, {}).get(reason.value, 0)


def on_replica(cluster: replpool.Cluster, engine: EngineOps) -> bool:
    with cluster.connection(read_only=True) as conn:
        return bool(rows(conn, engine.is_replica_sql)[0][0])


# -- routing -----------------------------------------------------------------------------


def test_reads_of_a_clean_session_go_to_replicas(cluster, engine):
    with replpool.session():
        for _ in range(10):
            assert on_replica(cluster, engine)
    assert reason_count(cluster, "replica", Reason.FRESH_REPLICA) == 10
    assert "primary" not in routed(cluster)


def test_writes_go_to_the_primary(cluster, table):
    before = reason_count(cluster, "primary", Reason.WRITE)
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
        with cluster.connection() as conn:
            rows(conn, f"INSERT INTO {table} VALUES (2, 'y')")
    assert reason_count(cluster, "primary", Reason.WRITE) - before == 2


def test_a_cluster_of_one_database_reads_from_it_and_says_why(lab, engine, make_cluster):
    with make_cluster(lab, replicas=[]) as c, replpool.session():
        for _ in range(3):
            with c.connection(read_only=True) as conn:
                assert rows(conn, engine.is_replica_sql) == [(0,)]
        with replpool.pinned_to_master():
            assert c.query(engine.is_replica_sql, read_only=True) == [(0,)]
        routing = c.status().routing
    assert routing == {"primary": {"no_replica": 3, "pinned": 1}}, routing


def test_round_robin_spreads_sessions_over_both_replicas(lab, engine, make_cluster):
    with make_cluster(lab, replica_selection="round_robin") as c:
        for _ in range(10):
            with replpool.session():
                c.query(engine.is_replica_sql, read_only=True)
        reads = [m.reads for m in c.status().members]
    assert reads[0] == 0 and reads[1] == 5 and reads[2] == 5


def test_round_robin_spreads_eventual_reads_of_one_session(lab, engine, make_cluster):
    with make_cluster(lab, replica_selection="round_robin") as c, replpool.session():
        for _ in range(10):
            c.query(engine.is_replica_sql, read_only=True, consistency="eventual")
        reads = [m.reads for m in c.status().members]
    assert reads[0] == 0 and reads[1] == 5 and reads[2] == 5


def test_a_session_keeps_reading_the_replica_it_read_last(lab, engine, make_cluster):
    # Monotonic reads: another replica may be behind what the first one showed.
    with make_cluster(lab, replica_selection="round_robin") as c, replpool.session():
        for _ in range(10):
            c.query(engine.is_replica_sql, read_only=True)
        reads = sorted(m.reads for m in c.status().members)
    assert reads == [0, 0, 10]


@sync_only
def test_checkouts_from_many_threads_are_counted_exactly(cluster, monkeypatch):
    """Counting takes no lock per checkout: the counted keys are folded into the totals
    now and then. Folding often, while eight threads count, loses nothing."""
    monkeypatch.setattr(_clusterbase, "_FOLD_AT", 7)
    threads, iterations = 8, 150
    before = cluster.status()
    errors: list[BaseException] = []

    def user() -> None:
        try:
            for i in range(iterations):
                with replpool.session(), cluster.connection(read_only=i % 3 != 0):
                    pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=user) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    after = cluster.status()
    checkouts = sum(m.reads + m.writes for m in after.members) - sum(m.reads + m.writes for m in before.members)
    writes = sum(m.writes for m in after.members) - sum(m.writes for m in before.members)
    assert (checkouts, writes) == (threads * iterations, threads * (iterations // 3))
    by_level = sum(after.reads_by_level["session"].values()) - sum(before.reads_by_level.get("session", {}).values())
    assert by_level == threads * (iterations - iterations // 3)


# -- read your writes ----------------------------------------------------------------------


def test_own_writes_are_always_seen_with_one_replica_paused_and_one_delayed(cluster, table, lab):
    lab.pause_replication(lab.replicas[0])
    lab.set_apply_delay(lab.replicas[1], 0.5)
    threads, iterations = 4, 75
    stale: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def user(n: int) -> None:
        try:
            with replpool.session():
                for i in range(iterations):
                    key = n * 1000 + i
                    with cluster.connection() as conn:
                        rows(conn, f"INSERT INTO {table} VALUES (%s, 'w')", (key,))
                    with cluster.connection(read_only=True) as conn:
                        if rows(conn, f"SELECT count(*) FROM {table} WHERE id = %s", (key,))[0][0] != 1:
                            stale.append((n, i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=user, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert stale == []
    status = cluster.status()
    assert sum(status.routing["primary"].values()) >= threads * iterations * 2 - 5


def test_reads_go_back_to_replicas_once_they_catch_up(cluster, table):
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
        assert reason_count(cluster, "replica", Reason.FRESH_REPLICA) == 0

        def served_by_replica() -> bool:
            cluster.query(f"SELECT * FROM {table}", read_only=True)
            return reason_count(cluster, "replica", Reason.FRESH_REPLICA) > 0

        wait_until(served_by_replica, timeout=2, what="a read served by a replica")
        assert cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1


def test_paused_replica_gets_no_reads_of_a_session_that_wrote(cluster, table, lab, engine):
    lab.pause_replication(lab.replicas[0])
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
        time.sleep(0.3)  # the monitor sampled the write, the healthy replica applied it
        for _ in range(20):
            assert cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1
    paused = cluster.status().member(f"{lab.replicas[0].host}:{lab.replicas[0].port}")
    assert paused.reads == 0
    assert reason_count(cluster, "replica", Reason.FRESH_REPLICA) >= 19


def test_causal_wait_lets_a_read_wait_for_a_replica(lab, table, make_cluster):
    with make_cluster(lab, causal_wait=1.0) as c, replpool.session():
        c.query(f"INSERT INTO {table} VALUES (1, 'x')")
        assert c.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1
        assert reason_count(c, "replica", Reason.WAITED_REPLICA) == 1


def test_causal_wait_gives_up_and_uses_the_primary(lab, table, make_cluster):
    for r in lab.replicas:
        lab.pause_replication(r)
    with make_cluster(lab, causal_wait=0.3) as c, replpool.session():
        c.query(f"INSERT INTO {table} VALUES (1, 'x')")
        start = time.monotonic()
        assert c.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1
        assert time.monotonic() - start >= 0.3
        assert reason_count(c, "primary", Reason.WAITED_PRIMARY) == 1


def test_pinned_to_master_sends_reads_to_the_primary(cluster, engine):
    with replpool.session():
        with replpool.pinned_to_master():
            assert not on_replica(cluster, engine)

        @replpool.pinned_to_primary
        def view() -> bool:
            return on_replica(cluster, engine)

        assert view() is False
    assert reason_count(cluster, "primary", Reason.PINNED) == 2


def test_reads_return_to_replicas_once_what_the_pinned_reads_saw_is_sampled(cluster, engine):
    with replpool.session():
        with replpool.pinned_to_master():
            assert not on_replica(cluster, engine)
        # The primary's answer binds the session, like a write: replicas serve it again
        # once the monitor has sampled a position after that read (asked for at once).
        wait_until(lambda: on_replica(cluster, engine), 2)


def test_nested_sessions_see_the_outer_writes_and_hand_theirs_back(cluster, table, lab):
    for r in lab.replicas:
        lab.pause_replication(r)
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'outer')")
        with replpool.session():
            assert cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1
            cluster.query(f"INSERT INTO {table} VALUES (2, 'inner')")
        time.sleep(0.2)
        assert cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 2

    seen: list[int] = []

    def elsewhere() -> None:
        # A scope in a thread that observed nothing has no requirement: it reads a
        # (paused) replica, which has neither row.
        with replpool.session():
            seen.append(cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0])

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen == [0]


def test_a_token_carries_read_your_writes_to_another_thread(cluster, table, lab):
    for r in lab.replicas:
        lab.pause_replication(r)
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
        token = replpool.current_token()
    assert token is not None and token.startswith("rp1.")
    seen: dict[str, int] = {}

    def elsewhere() -> None:
        with replpool.session(after=token):
            seen["with token"] = cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0]
        with replpool.session():
            seen["without"] = cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0]

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen == {"with token": 1, "without": 0}


def test_a_bad_token_is_refused():
    with pytest.raises(replpool.TokenError, match="not a replpool causal token"):
        with replpool.session(after="hello"):
            pass


def test_a_token_from_another_engine_is_refused(lab, engine, make_cluster):
    from replpool import _tokens
    from replpool._positions import LSN, MariaDBGTID, MySQLGTIDSet

    others = {
        "postgresql": LSN.parse("0/3000060"),
        "mariadb": MariaDBGTID.parse("0-1-5"),
        "mysql": MySQLGTIDSet.parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
    }
    with make_cluster(lab) as c:
        assert c.engine_name == engine.name
        for kind, position in others.items():
            if kind == engine.name:
                continue
            token = _tokens.encode({c.name: position})
            # Refused when the session starts, the cluster being open...
            with pytest.raises(replpool.TokenError, match=f"comes from a {kind} server"):
                with replpool.session(after=token):
                    pass

    def first_read(token: str) -> None:
        # In a context of its own: this thread's earlier writes would be inherited.
        with replpool.session(after=token):  # ...or at the first read, opened after it
            with make_cluster(lab) as c:
                with pytest.raises(replpool.TokenError, match=f"must observe a {kind} position"):
                    c.query("SELECT 1", read_only=True)

    for kind, position in others.items():
        if kind != engine.name:
            contextvars.Context().run(first_read, _tokens.encode({"default": position}))


def test_threads_without_a_session_each_have_their_own(cluster, table, lab):
    for r in lab.replicas:
        lab.pause_replication(r)
    results: dict[str, int] = {}

    def writer() -> None:
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
        results["writer"] = cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0]

    def reader() -> None:
        results["reader"] = cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0]

    for target in (writer, reader):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    assert results == {"writer": 1, "reader": 0}


# -- read-only connections -----------------------------------------------------------------


def test_a_write_on_a_read_only_replica_connection_fails_with_the_server_error(cluster, table, engine):
    with replpool.session():
        with pytest.raises(engine.read_only_error) as err:
            with cluster.connection(read_only=True) as conn:
                rows(conn, f"INSERT INTO {table} VALUES (1, 'x')")
        engine.check_read_only_error(err.value)
    assert cluster.query(f"SELECT count(*) FROM {table}")[0][0] == 0


def test_a_write_on_a_read_only_primary_connection_fails_too(cluster, table, engine):
    with replpool.session(), replpool.pinned_to_master():
        with pytest.raises(engine.read_only_error) as err:
            with cluster.connection(read_only=True) as conn:
                rows(conn, f"INSERT INTO {table} VALUES (1, 'x')")
        engine.check_read_only_error(err.value)
        # ...and the same pooled connection accepts writes again afterwards.
        for i in range(3):
            cluster.query(f"INSERT INTO {table} VALUES (%s, 'x')", (i,))
    assert cluster.query(f"SELECT count(*) FROM {table}")[0][0] == 3


def test_read_only_primary_connections_in_autocommit_refuse_writes(lab, table, engine, make_cluster):
    options = {"kwargs": {"autocommit": True}}  # driver arguments, for both pools
    with make_cluster(lab, pool_options=options, max_size=1) as c, replpool.session():
        with replpool.pinned_to_master():
            for _ in range(2):
                with pytest.raises(engine.read_only_error) as err:
                    c.query(f"INSERT INTO {table} VALUES (1, 'x')", read_only=True)
                engine.check_read_only_error(err.value)
        c.query(f"INSERT INTO {table} VALUES (1, 'x')")
        with replpool.pinned_to_master():
            assert c.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 1
        c.query(f"INSERT INTO {table} VALUES (2, 'x')")


def test_connection_commits_on_exit_and_rolls_back_on_error(cluster, table):
    with replpool.session():
        with cluster.connection() as conn:
            rows(conn, f"INSERT INTO {table} VALUES (1, 'kept')")
        with pytest.raises(ZeroDivisionError):
            with cluster.connection() as conn:
                rows(conn, f"INSERT INTO {table} VALUES (2, 'dropped')")
                raise ZeroDivisionError
        assert cluster.query(f"SELECT id FROM {table}") == [(1,)]


# -- health --------------------------------------------------------------------------------


def read_loop(cluster: replpool.Cluster, table: str, n: int, fault_at: int, fault: Any) -> list[float]:
    """``n`` reads through Cluster.query in a clean session, injecting ``fault`` before
    read ``fault_at``; returns each read's duration (any failed read raises)."""
    durations = []
    with replpool.session():
        for i in range(n):
            if i == fault_at:
                fault()
            start = time.monotonic()
            assert cluster.query(f"SELECT count(*) FROM {table}", read_only=True)[0][0] == 0
            durations.append(time.monotonic() - start)
            time.sleep(0.005)
    return durations


def test_a_killed_replica_costs_no_failed_read(cluster, table, lab):
    victim = lab.replicas[0]
    durations = read_loop(cluster, table, 120, 20, lambda: lab.kill(victim))
    assert max(durations) < 0.5
    status = cluster.status().member(f"{victim.host}:{victim.port}")
    assert not status.up and status.error
    lab.start(victim)
    wait_until(lambda: cluster.status().member(f"{victim.host}:{victim.port}").eligible, 10)
    with replpool.consistency("eventual"):  # any replica, so both take turns
        before = cluster.status().member(f"{victim.host}:{victim.port}").reads
        for _ in range(10):
            cluster.query("SELECT 1", read_only=True)
        assert cluster.status().member(f"{victim.host}:{victim.port}").reads > before


def test_a_frozen_replica_costs_at_most_one_short_timeout(cluster, table, lab):
    victim = lab.replicas[1]
    durations = read_loop(cluster, table, 80, 10, lambda: lab.freeze(victim))
    slow = [d for d in durations if d > 0.2]
    assert len(slow) <= 1, slow
    assert max(durations) < cluster.probe_timeout + 1.0
    # Marked down within probe_timeout of the first poll it left unanswered (whether or
    # not this session's reads were on it).
    wait_until(lambda: not cluster.status().member(f"{victim.host}:{victim.port}").up, 2)
    lab.thaw(victim)
    wait_until(lambda: cluster.status().member(f"{victim.host}:{victim.port}").eligible, 10)


def test_a_restarted_replica_costs_no_failed_read(cluster, table, lab):
    victim = lab.replicas[0]

    def restart() -> None:
        lab.stop(victim)
        lab.start(victim)

    durations = read_loop(cluster, table, 60, 10, restart)
    assert max(durations) < 0.5
    wait_until(lambda: cluster.status().member(f"{victim.host}:{victim.port}").eligible, 10)


def test_connections_left_from_before_a_restart_do_not_take_the_replica_out_again(cluster, lab):
    """The monitor saw the replica come back, but its pool still holds connections from
    before the restart (the check the cluster starts then has not run yet: here it never
    does). Finding those dead says nothing about the replica now: the read goes
    elsewhere, and the replica serves the next ones on new connections."""
    victim = lab.replicas[0]
    name = f"{victim.host}:{victim.port}"
    with replpool.session():
        for _ in range(10):
            cluster.query("SELECT 1", read_only=True)
    assert cluster.status().member(name).pool.size > 0
    cluster._monitor.on_member_up = lambda index: None
    lab.kill(victim)
    wait_until(lambda: not cluster.status().member(name).up, 10)
    lab.start(victim)
    wait_until(lambda: cluster.status().member(name).eligible, 10)
    before = cluster.status().member(name).reads
    with replpool.consistency("eventual"):  # any replica, so both take turns
        for _ in range(10):
            assert cluster.query("SELECT 1", read_only=True) == [(1,)]
    status = cluster.status().member(name)
    assert status.up and status.reads > before, status


class _CountingPoll:
    """Stands in for the poll object of a connection's liveness check, counting calls."""

    def __init__(self, poll: Any) -> None:
        self._poll = poll
        self.calls = 0

    def poll(self, timeout: int) -> Any:
        self.calls += 1
        return self._poll.poll(timeout)


def _count_liveness_checks(cluster: Any, index: int) -> list[_CountingPoll]:
    """Count the liveness checks of the idle connections of member ``index``'s pool."""
    polls = []
    for conn in cluster._members[index].pool._pool:
        watch = conn._replpool_watch
        watch.poll = _CountingPoll(watch.poll)
        polls.append(watch.poll)
    assert polls, "no idle connection to watch"
    return polls


@postgresql_only
def test_a_connection_its_pool_took_back_just_now_is_handed_out_unchecked(lab, make_cluster, monkeypatch):
    """A connection back in its pool for less than RECENTLY_RETURNED (1 ms) is not looked
    at; one idle longer is. (The window is stretched to an hour for the first read, so
    that the test does not depend on how fast this machine is.)"""
    with make_cluster(lab, replicas=lab.replicas[:1], min_size=1, max_size=1) as c:
        with replpool.session():
            assert c.query("SELECT 1", read_only=True) == [(1,)]
        polls = _count_liveness_checks(c, 1)
        monkeypatch.setattr(_pg, "RECENTLY_RETURNED", 3600.0)
        with replpool.session():
            assert c.query("SELECT 1", read_only=True) == [(1,)]
        assert sum(p.calls for p in polls) == 0
        monkeypatch.undo()
        time.sleep(0.01)  # idle ten times longer than the window
        with replpool.session():
            assert c.query("SELECT 1", read_only=True) == [(1,)]
        assert sum(p.calls for p in polls) == 1
        assert c.status().member(f"{lab.replicas[0].host}:{lab.replicas[0].port}").reads == 3


@postgresql_only
def test_a_read_on_a_connection_whose_server_died_as_it_came_back_runs_elsewhere(lab, make_cluster, monkeypatch):
    """The case the 1 ms window gives up: the replica dies just after its connection
    came back to the pool, so the next read gets it unchecked and fails like a read in
    flight; query() runs it once more elsewhere, and the replica is taken out. (The
    monitor polls rarely here, so that it does not take the replica out first.)"""
    victim = lab.replicas[0]
    name = f"{victim.host}:{victim.port}"
    monkeypatch.setattr(_pg, "RECENTLY_RETURNED", 3600.0)
    slow = {"monitor_interval": 30, "monitor_idle_interval": 30, "monitor_demand_interval": None}
    with make_cluster(lab, replicas=[victim], min_size=1, max_size=1, **slow) as c:
        with replpool.session():
            assert c.query("SELECT 1", read_only=True) == [(1,)]
        assert c.status().member(name).reads == 1
        lab.kill(victim)
        try:
            with replpool.session():
                assert c.query("SELECT 1", read_only=True) == [(1,)]
            status = c.status()
            assert status.member(name).reads == 2 and not status.member(name).up, status
            assert reason_count(c, "primary", Reason.MEMBER_DOWN) == 1, routed(c)
        finally:
            lab.start(victim)


def test_a_read_in_a_block_does_not_go_to_a_dead_replica(cluster, table, lab, engine):
    with replpool.session():
        for _ in range(5):
            on_replica(cluster, engine)  # every replica pool now holds idle connections
        on_replicas = sum(m.reads for m in cluster.status().members[1:])
        on_primary = cluster.status().members[0].reads
        for r in lab.replicas:
            lab.kill(r)
        for _ in range(5):
            with cluster.connection(read_only=True) as conn:
                assert rows(conn, f"SELECT count(*) FROM {table}") == [(0,)]
    # All five on the primary: none on a replica, whatever the monitor had seen of the
    # kills when each read was routed (member_down when the checkout found the replica
    # dead; no_replica once the monitor saw both go; position_pending while the session
    # waited on a replica it had read, seen dead, beside one not seen dead yet).
    assert sum(m.reads for m in cluster.status().members[1:]) == on_replicas, routed(cluster)
    assert cluster.status().members[0].reads == on_primary + 5, routed(cluster)


def test_a_lagging_replica_serves_no_reads(lab, table, engine, make_cluster):
    lagging = lab.replicas[0]
    name = f"{lagging.host}:{lagging.port}"
    lab.pause_replication(lagging)
    with make_cluster(lab, max_replica_lag=0.3) as c:
        with replpool.session():
            c.query(f"INSERT INTO {table} VALUES (1, 'x')")
        wait_until(lambda: not c.status().member(name).eligible, 3, "the paused replica ineligible")
        status = c.status().member(name)
        assert status.lag_seconds is not None and status.lag_seconds > 0.3
        if engine.lag_in_bytes:
            assert status.lag_bytes is not None and status.lag_bytes > 0
        else:  # GTIDs count transactions, not bytes
            assert status.lag_bytes is None
        with replpool.session():
            for _ in range(10):
                c.query("SELECT 1", read_only=True)
        assert c.status().member(name).reads == 0
        lab.resume_replication(lagging)
        wait_until(lambda: c.status().member(name).eligible, 3, "the resumed replica eligible")
        assert c.status().member(name).lag_seconds == 0


def test_the_primary_down_reads_go_on_and_writes_fail_clearly(lab, table, make_cluster):
    with make_cluster(lab, failover_wait=0.3) as c:
        lab.kill(lab.primary)
        wait_until(lambda: c.status().primary is None, 3, "the primary seen down")
        with replpool.session():
            assert c.query(f"SELECT count(*) FROM {table}", read_only=True) == [(0,)]
            with pytest.raises(replpool.NoPrimaryAvailable, match="no reachable primary"):
                c.query(f"INSERT INTO {table} VALUES (1, 'x')")
        lab.start(lab.primary)
        wait_until(lambda: c.status().primary is not None, 10, "the primary back")
        c.query(f"INSERT INTO {table} VALUES (1, 'x')")


@pytest.mark.slow
def test_after_promote_writes_go_to_the_new_primary(lab_factory, engine, make_cluster):
    lab = lab_factory(engine.name, replicas=2, **engine.lab_options)
    new = lab.replicas[0]
    with make_cluster(lab, failover_wait=10) as c:
        c.query(engine.create_table_sql("failover"))
        lab.wait_until_caught_up()
        lab.promote(new)
        start = time.monotonic()
        with replpool.session():
            c.query("INSERT INTO failover VALUES (1, 'after')")
            assert time.monotonic() - start < 5
            assert c.status().primary == f"{new.host}:{new.port}"
            assert c.query("SELECT count(*) FROM failover", read_only=True) == [(1,)]
        assert c.status().failovers == 1
        lab.wait_until_caught_up()
        with replpool.session():
            for _ in range(5):
                assert c.query("SELECT count(*) FROM failover", read_only=True) == [(1,)]


@sync_only
@pytest.mark.slow
def test_after_a_failover_status_and_metrics_show_exactly_one_primary(lab_factory, engine, make_cluster):
    from prometheus_client import CollectorRegistry

    import replpool.metrics as rm

    lab = lab_factory(engine.name, replicas=2, **engine.lab_options)
    old, new = f"{lab.primary.host}:{lab.primary.port}", f"{lab.replicas[0].host}:{lab.replicas[0].port}"
    registry = CollectorRegistry()
    rm.enable(registry)
    try:
        with make_cluster(lab, name="failover") as c:
            lab.promote(lab.replicas[0])
            wait_until(lambda: c.status().primary == new, 10, "the new primary found")
            wait_until(lambda: not c.status().member(old).up, 10, "the old primary seen down")
            status = c.status()
            roles = {m.name: m.role for m in status.members}
            assert [n for n, r in roles.items() if r == "primary"] == [new], roles
            assert roles[old] == "down", roles
            assert sorted(roles.values()) == ["down", "primary", "replica"], roles

            def role_gauge(role: str) -> dict[str, float | None]:
                return {
                    m.name: registry.get_sample_value(
                        "replpool_member_role", {"cluster": "failover", "member": m.name, "role": role}
                    )
                    for m in status.members
                }

            wait_until(lambda: role_gauge("primary")[old] == 0, 3, "the gauges of the next round")
            assert [n for n, v in role_gauge("primary").items() if v == 1] == [new]
            assert role_gauge("down")[old] == 1
    finally:
        rm.disable()


# -- status and secrecy ----------------------------------------------------------------------


def test_status_describes_members_positions_lag_and_pools(cluster, table, lab):
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (1, 'x')")
    lab.wait_until_caught_up()
    wait_until(lambda: all(m.lag_seconds == 0 for m in cluster.status().members[1:]), 3)
    status = cluster.status()
    assert status.name == "default" and status.engine == lab.engine
    assert status.primary == f"{lab.primary.host}:{lab.primary.port}"
    assert [m.role for m in status.members] == ["primary", "replica", "replica"]
    assert all(m.up for m in status.members)
    assert all(m.position for m in status.members)
    assert all(m.eligible for m in status.members[1:])
    assert status.members[0].pool is not None and status.members[0].pool.max_size == 10
    assert status.monitor_rounds > 0
    json.dumps(status.as_dict())


def test_the_monitor_polls_at_its_interval_under_traffic_and_slowly_when_idle(lab, make_cluster):
    with make_cluster(lab, monitor_interval=0.05, monitor_idle_interval=0.5) as cluster:
        time.sleep(0.6)  # the first rounds saw the opening's checkouts
        rounds0 = cluster.status().monitor_rounds
        time.sleep(1.0)
        idle = cluster.status().monitor_rounds - rounds0
        rounds1 = cluster.status().monitor_rounds
        deadline = time.monotonic() + 0.5
        with replpool.consistency("eventual"):  # reads that never ask for a round
            while time.monotonic() < deadline:
                cluster.query("SELECT 1", read_only=True)
        busy = cluster.status().monitor_rounds - rounds1
    assert 1 <= idle <= 3 and 6 <= busy <= 12, (idle, busy)


def test_no_password_in_repr_status_errors_or_logs(lab, caplog, make_cluster):
    caplog.set_level(logging.DEBUG, logger="replpool")
    secret = lab.password
    with make_cluster(lab, failover_wait=0.2) as c:
        texts = [repr(c), json.dumps(c.status().as_dict())]
        lab.kill(lab.replicas[0])
        lab.kill(lab.primary)
        wait_until(lambda: c.status().primary is None, 3)
        with pytest.raises(replpool.NoPrimaryAvailable) as err:
            c.query("SELECT 1")
        texts += [str(err.value), repr(c), json.dumps(c.status().as_dict())]
    texts.append(caplog.text)
    assert caplog.text, "expected the failures to be logged"
    for text in texts:
        assert secret not in text


@sync_only
# Its connections were never closed: Python says so (ResourceWarning), as it should.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_cluster_dropped_without_close_stops_its_monitor(lab, make_cluster):
    c = make_cluster(lab, name="dropped")
    c.open()
    assert any(t.name == "replpool-dropped-monitor" for t in threading.enumerate())
    del c
    gc.collect()
    wait_until(
        lambda: not any(t.name == "replpool-dropped-monitor" for t in threading.enumerate()),
        3, "the monitor thread gone",
    )


# -- the session guarantees, end to end -----------------------------------------------------


def test_session_guarantees_hold_while_replicas_pause_lag_and_resume(lab, engine, make_cluster):
    """Writers append rows to a log and readers read its highest id, each in sessions of
    its own that start from a token of the last one (as requests of one browser), while
    replicas are paused, delayed and resumed. A session never reads a log shorter than
    one it wrote or read before (read your writes, monotonic reads), at the session
    level; bounded reads are never further behind than their bound allows."""
    table = engine.table()
    with make_cluster(lab, replica_selection="random") as c:
        c.query(f"CREATE TABLE {table} (id integer PRIMARY KEY, at_ns bigint)")
        lab.wait_until_caught_up()
        stop = threading.Event()
        errors: list[str] = []
        appended: list[tuple[int, int]] = []  # (id, monotonic ns when its commit returned)
        next_id = itertools.count(1)

        def user(n: int) -> None:
            rng = random.Random(n)
            token, floor = None, 0
            try:
                while not stop.is_set():
                    with replpool.session(after=token):
                        for _ in range(rng.randint(1, 6)):
                            if rng.random() < 0.3:
                                i = next(next_id)
                                c.query(f"INSERT INTO {table} VALUES (%s, %s)", (i, time.monotonic_ns()))
                                appended.append((i, time.monotonic_ns()))
                                floor = max(floor, i)
                            elif rng.random() < 0.2:
                                started = time.monotonic_ns()
                                seen = c.query(f"SELECT coalesce(max(id), 0) FROM {table}", read_only=True,
                                               consistency="bounded", max_staleness=0.5)[0][0]
                                due = [i for i, at in list(appended) if at < started - 500_000_000]
                                if due and seen < max(due):
                                    errors.append(f"bounded read saw {seen} < {max(due)}")
                            else:
                                seen = c.query(f"SELECT coalesce(max(id), 0) FROM {table}", read_only=True)[0][0]
                                if seen < floor:
                                    errors.append(f"user {n} read {seen} after seeing {floor}")
                                floor = max(floor, seen)
                        token = replpool.current_token()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(f"user {n}: {type(exc).__name__}: {exc}")

        users = [threading.Thread(target=user, args=(n,)) for n in range(4)]
        for t in users:
            t.start()
        try:
            paused, delayed = lab.replicas
            for _ in range(3):
                lab.pause_replication(paused)
                lab.set_apply_delay(delayed, 0.3 if engine.name == "postgresql" else 1)
                time.sleep(0.6)
                lab.resume_replication(paused)
                lab.set_apply_delay(delayed, 0)
                time.sleep(0.4)
        finally:
            stop.set()
            for t in users:
                t.join(10)
        reads = c.status().reads_by_level
        c.query(f"DROP TABLE {table}")
    assert errors == []
    assert reads["session"].get("replica", 0) > 0, reads


def test_a_session_that_read_a_child_row_finds_its_parent(lab, engine, make_cluster):
    """Monotonic reads: a session that never writes reads a child row on an up-to-date
    replica; its next read must not go to a replica that lacks the parent."""
    parents, children = engine.table(), engine.table()
    with make_cluster(lab, replica_selection="round_robin") as c:
        c.query(engine.create_table_sql(parents))
        c.query(engine.create_table_sql(children))
        lab.wait_until_caught_up()
        lab.pause_replication(lab.replicas[1])
        for i in range(50):
            c.query(f"INSERT INTO {parents} VALUES (%s, 'parent')", (i,))
            c.query(f"INSERT INTO {children} VALUES (%s, 'child')", (i,))
        wait_until(lambda: bool(lab.query(lab.replicas[0], f"SELECT 1 FROM {children} WHERE id = 49")), 5)

        def one_session(i: int) -> tuple[bool, bool]:
            with replpool.session():
                child = c.query(f"SELECT id FROM {children} WHERE id = %s", (i,), read_only=True)
                parent = c.query(f"SELECT id FROM {parents} WHERE id = %s", (i,), read_only=True)
                return bool(child), bool(parent)

        outcomes = []
        for i in range(50):
            t = threading.Thread(target=lambda i=i: outcomes.append(one_session(i)))  # a clean thread
            t.start()
            t.join()
        c.query(f"DROP TABLE {children}")
        c.query(f"DROP TABLE {parents}")
    assert sum(child for child, _ in outcomes) >= 10, outcomes  # round robin: about half
    assert [o for o in outcomes if o == (True, False)] == []


def _hold_replay_lock(lab: Any, engine: EngineOps, replica: Any, table: str) -> Any:
    """Make ``replica`` hold a lock on ``table`` that its readers must wait for, as
    replay does. PostgreSQL: the replica applies commits 3 s late, so it replays the
    TRUNCATE's ACCESS EXCLUSIVE lock at once and holds it until the commit is due.
    MariaDB delays whole transactions, so there the replica stops applying (a transaction
    it has not applied yet, as replay would be in the middle of one) and the lock is
    taken on the replica itself (LOCK TABLES ... WRITE by the superuser), which readers
    wait for the same way; the returned function releases it."""
    if engine.name == "postgresql":
        lab.set_apply_delay(replica, 3.0)
        lab.query(lab.primary, f"TRUNCATE {table}")
        return lambda: None
    import mysql.connector

    lab.pause_replication(replica)
    lab.query(lab.primary, f"INSERT INTO {table} VALUES (98, 'not applied yet')")
    conn = mysql.connector.connect(**lab.member(replica).admin_connect_kwargs())
    conn.cursor().execute(f"LOCK TABLES {table} WRITE")
    return conn.close


def test_a_read_does_not_wait_long_behind_a_lock_that_replay_holds(lab, engine, table, make_cluster):
    replica = lab.replicas[0]
    name = f"{replica.host}:{replica.port}"
    only = make_cluster(lab, replicas=[replica], name="one_replica", replica_lock_timeout=0.2)
    with only as c:
        c.query(f"SELECT count(*) FROM {table}", read_only=True)  # a pooled connection set up
        release = _hold_replay_lock(lab, engine, replica, table)
        try:
            start = time.monotonic()
            with replpool.consistency("eventual"):
                c.query(f"SELECT count(*) FROM {table}", read_only=True)
            took = time.monotonic() - start
            # The lock timeout (MariaDB counts whole seconds), then the primary.
            assert took < (0.2 if engine.name == "postgresql" else 1.0) + 0.8, took
            assert not c.status().member(name).eligible
            with replpool.consistency("eventual"):  # nothing more waits on that replica
                start = time.monotonic()
                c.query(f"SELECT count(*) FROM {table}", read_only=True)
                assert time.monotonic() - start < 0.2
        finally:
            release()
            lab.heal()
        # Replay moved past the lock: the replica serves reads again.
        wait_until(lambda: c.status().member(name).eligible, 10)


def test_a_new_cluster_reads_no_schema_older_than_the_primarys_when_it_opened(lab, engine, table, make_cluster):
    """A process started right after a migration (a new web worker after a deploy) must
    not read a replica that has not replayed it: the cluster's floor is the primary's
    position when it opened."""
    for r in lab.replicas:
        lab.pause_replication(r)
    lab.query(lab.primary, f"ALTER TABLE {table} ADD COLUMN flag integer")
    with make_cluster(lab, name="after_deploy") as c:
        for _ in range(5):
            assert c.query(f"SELECT flag FROM {table}", read_only=True, consistency="eventual") == []
        assert all(not m.eligible for m in c.status().members if m.role == "replica")
        assert c.status().reads_by_level["eventual"] == {"primary": 5}
    lab.heal()


def test_raise_floor_keeps_reads_off_replicas_that_have_not_replayed_it(cluster, lab, table):
    for r in lab.replicas:
        lab.pause_replication(r)
    cluster.query(f"ALTER TABLE {table} ADD COLUMN flag integer")
    floor = cluster.raise_floor()
    assert cluster.floor == floor
    with replpool.consistency("eventual"), replpool.session():
        assert cluster.query(f"SELECT flag FROM {table}", read_only=True) == []
    lab.heal()
    wait_until(lambda: all(m.eligible for m in cluster.status().members if m.role == "replica"), 5)


def test_a_token_asked_for_inside_a_connection_block_that_writes_is_refused(cluster, table):
    with replpool.session():
        with cluster.connection() as conn:
            rows(conn, f"INSERT INTO {table} VALUES (1, 'x')")
            with pytest.raises(replpool.WriteInProgress, match="once it has committed"):
                replpool.current_token()
        assert replpool.current_token() is not None


@sync_only
def test_a_forked_child_closing_the_cluster_leaves_the_parents_sessions_alone(lab, make_cluster, caplog):
    """Django's parallel test runner forks workers, which inherit the parent's clusters
    (pools and monitor connections, their sockets shared with the parent) and close
    them: the parent's connections must keep their sessions."""
    caplog.set_level(logging.INFO, logger="replpool")
    with make_cluster(lab, min_size=2) as c:
        assert c.query("SELECT 1", read_only=True)[0][0] == 1
        assert c.query("SELECT 1")[0][0] == 1
        pid = os.fork()
        if pid == 0:  # the child: close everything it inherited, and go
            code = 1
            try:
                c.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        rounds = c.status().monitor_rounds
        wait_until(lambda: c.status().monitor_rounds > rounds + 2, 5, "2 more rounds (idle pace)")
        assert all(m.up for m in c.status().members), c.status()
        for _ in range(4):  # every pooled connection, on each member
            assert c.query("SELECT 1", read_only=True)[0][0] == 1
            assert c.query("SELECT 1")[0][0] == 1
        assert c.status().routing.get("primary", {}).get("member_down") is None
    lost = [r.getMessage() for r in caplog.records if "is down" in r.getMessage() or "lost" in r.getMessage()]
    assert lost == []
