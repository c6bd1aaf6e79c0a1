"""The PostgreSQL lab: each fault observed through real connections as the app user."""

from __future__ import annotations

import os
import socket
import threading
import time

import psycopg
import pytest
from psycopg import errors

from replpool._positions import LSN
from replpool.testing import LabError, PostgresLab

pytestmark = pytest.mark.lab


def connect(member, timeout: int = 3) -> psycopg.Connection:
    return psycopg.connect(member.dsn, autocommit=True, connect_timeout=timeout)


def count(member, table: str) -> int:
    with connect(member) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture
def table(postgres_lab):
    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    with connect(postgres_lab.primary) as c:
        c.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, note text)")
    postgres_lab.wait_until_caught_up()
    yield name
    with connect(postgres_lab.primary) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")


def insert(member, table: str) -> None:
    with connect(member) as c:
        c.execute(f"INSERT INTO {table} (note) VALUES ('x')")


def test_lab_has_a_primary_and_two_streaming_replicas(postgres_lab):
    assert [m.name for m in postgres_lab.members] == ["pg1", "pg2", "pg3"]
    assert postgres_lab.primary.name == "pg1"
    assert [r.name for r in postgres_lab.replicas] == ["pg2", "pg3"]
    ports = {m.port for m in postgres_lab.members}
    assert len(ports) == 3
    for m in postgres_lab.members:
        with connect(m) as c:
            user, superuser, db, recovering = c.execute(
                "SELECT current_user, rolsuper, current_database(), pg_is_in_recovery()"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert (user, superuser, db) == ("app", False, "app")
        assert recovering == (m.role == "replica")


def test_member_connection_strings_name_the_app_database(postgres_lab):
    m = postgres_lab.replicas[0]
    assert m.url.startswith("postgresql://app:") and m.url.endswith(f"@127.0.0.1:{m.port}/app")
    with psycopg.connect(m.url) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "app"
    assert m.password not in repr(m)


def test_replicas_apply_writes_and_refuse_them(postgres_lab, table):
    insert(postgres_lab.primary, table)
    postgres_lab.wait_until_caught_up()
    for r in postgres_lab.replicas:
        assert count(r, table) == 1
        with pytest.raises(errors.ReadOnlySqlTransaction):
            insert(r, table)


def test_paused_replica_receives_but_does_not_apply(postgres_lab, table):
    r = postgres_lab.replicas[0]
    postgres_lab.pause_replication(r)
    insert(postgres_lab.primary, table)
    target = postgres_lab.primary_position()

    def received() -> bool:
        pos = postgres_lab.receive_position(r)
        return pos is not None and pos.covers(target)

    deadline = time.monotonic() + 5
    while not received():
        assert time.monotonic() < deadline, "the paused replica stopped receiving WAL"
        time.sleep(0.01)
    assert count(r, table) == 0
    assert postgres_lab.receive_position(r).value > postgres_lab.replay_position(r).value
    assert count(postgres_lab.replicas[1], table) == 1 or _eventually(
        lambda: count(postgres_lab.replicas[1], table) == 1
    )
    postgres_lab.resume_replication(r)
    assert _eventually(lambda: count(r, table) == 1)


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_apply_delay_holds_commits_back_for_that_long(postgres_lab, table):
    r = postgres_lab.replicas[1]
    postgres_lab.set_apply_delay(r, 1.0)
    start = time.monotonic()
    insert(postgres_lab.primary, table)
    time.sleep(0.3)
    assert count(r, table) == 0
    assert _eventually(lambda: count(r, table) == 1, timeout=5)
    assert time.monotonic() - start >= 0.9
    postgres_lab.set_apply_delay(r, 0)
    insert(postgres_lab.primary, table)
    assert _eventually(lambda: count(r, table) == 2, timeout=1)


def test_frozen_member_accepts_tcp_but_never_answers(postgres_lab):
    r = postgres_lab.replicas[0]
    postgres_lab.freeze(r)
    # The kernel still completes the TCP handshake...
    socket.create_connection((r.host, r.port), timeout=1).close()
    # ...but the server answers nothing: a short timeout fails instead of hanging.
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        connect(r, timeout=2)
    assert time.monotonic() - start < 4
    postgres_lab.thaw(r)
    with connect(r) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_frozen_member_stalls_an_open_connection_until_thawed(postgres_lab):
    r = postgres_lab.replicas[1]
    result: list[object] = []
    with connect(r) as c:
        postgres_lab.freeze(r)
        try:
            t = threading.Thread(target=lambda: result.append(c.execute("SELECT 1").fetchone()))
            t.start()
            t.join(1.0)
            assert t.is_alive() and not result, "a frozen server answered a query"
        finally:
            postgres_lab.thaw(r)
        t.join(5)
        assert result == [(1,)]


def test_killed_member_refuses_connections_until_started(postgres_lab, table):
    r = postgres_lab.replicas[0]
    postgres_lab.kill(r)
    assert r.state == "killed"
    with pytest.raises(psycopg.OperationalError, match="refused|failed"):
        connect(r)
    postgres_lab.start(r)
    insert(postgres_lab.primary, table)
    assert _eventually(lambda: count(r, table) == 1, timeout=10)


def test_killed_primary_restarts_with_its_data(postgres_lab, table):
    insert(postgres_lab.primary, table)
    postgres_lab.kill(postgres_lab.primary)
    with pytest.raises(psycopg.OperationalError):
        connect(postgres_lab.primary)
    postgres_lab.start(postgres_lab.primary)
    assert count(postgres_lab.primary, table) == 1
    insert(postgres_lab.primary, table)
    postgres_lab.wait_until_caught_up(timeout=15)
    assert count(postgres_lab.replicas[1], table) == 2


def test_clean_stop_and_start(postgres_lab, table):
    r = postgres_lab.replicas[1]
    postgres_lab.stop(r)
    assert r.state == "stopped"
    with pytest.raises(psycopg.OperationalError):
        connect(r)
    insert(postgres_lab.primary, table)
    postgres_lab.start(r)
    assert _eventually(lambda: count(r, table) == 1, timeout=10)


def test_wait_until_caught_up_names_a_paused_replica(postgres_lab, table):
    r = postgres_lab.replicas[0]
    postgres_lab.pause_replication(r)
    insert(postgres_lab.primary, table)
    with pytest.raises(LabError, match=f"{r.name} .*did not apply"):
        postgres_lab.wait_until_caught_up(timeout=0.5)


def test_insert_position_is_comparable_with_replay_position(postgres_lab, table):
    insert(postgres_lab.primary, table)
    target = postgres_lab.primary_position()
    postgres_lab.wait_until_caught_up()
    for r in postgres_lab.replicas:
        assert postgres_lab.replay_position(r).covers(target)
    assert isinstance(target, LSN)


@pytest.mark.slow
def test_promote_moves_the_primary_and_the_other_replica_follows(lab_factory):
    lab = lab_factory("postgresql", replicas=2)
    old, new, other = lab.members
    with connect(old) as c:
        c.execute("CREATE TABLE p (id int)")
    lab.wait_until_caught_up()
    lab.promote(new)
    assert (old.role, new.role, other.role) == ("fenced", "primary", "replica")
    assert lab.primary is new and lab.replicas == [other]
    with connect(new) as c:
        assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        c.execute("INSERT INTO p VALUES (1)")
    lab.wait_until_caught_up()
    assert count(other, "p") == 1
    with pytest.raises(psycopg.OperationalError):
        connect(old)
    with pytest.raises(LabError, match="fenced"):
        lab.start(old)


def test_misuse_is_refused_with_a_clear_message(postgres_lab):
    with pytest.raises(LabError, match="no member named 'pg9'.*pg1, pg2, pg3"):
        postgres_lab.member("pg9")
    with pytest.raises(LabError, match="promote needs a replica, but pg1 is the primary"):
        postgres_lab.promote("pg1")
    with pytest.raises(LabError, match="needs a replica"):
        postgres_lab.pause_replication(postgres_lab.primary)
    with pytest.raises(LabError, match="seconds >= 0"):
        postgres_lab.set_apply_delay("pg2", -1)
    with pytest.raises(LabError, match="thaw needs a frozen server"):
        postgres_lab.thaw("pg2")
    with pytest.raises(LabError, match="whole number"):
        PostgresLab(replicas=-1)


def test_missing_binaries_name_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("REPLPOOL_PG_BINDIR", str(tmp_path))
    with pytest.raises(LabError, match=r"apt-get install postgresql.*REPLPOOL_PG_BINDIR"):
        PostgresLab().start()
