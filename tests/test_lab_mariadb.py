"""The MariaDB lab: each fault observed through real connections as the app user."""

from __future__ import annotations

import os
import socket
import sys
import time

import mysql.connector
import pytest

from replpool._positions import MariaDBGTID
from replpool.testing import LabError, MariaDBLab
from replpool.testing._process import cmdline
from tests.labtools import lab_processes, lab_up_lines

pytestmark = pytest.mark.lab

# ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option".
READ_ONLY_ERRNO = 1290


def connect(member, timeout: int = 3, **options):
    return mysql.connector.connect(
        **member.connect_kwargs(), autocommit=True, connection_timeout=timeout, **options
    )


def fetch(member, statement: str, dictionary: bool = False) -> list:
    with connect(member) as c:
        cur = c.cursor(dictionary=dictionary)
        cur.execute(statement)
        return cur.fetchall()


def count(member, table: str) -> int:
    return fetch(member, f"SELECT count(*) FROM {table}")[0][0]


def insert(member, table: str) -> None:
    with connect(member) as c:
        c.cursor().execute(f"INSERT INTO {table} (note) VALUES ('x')")


@pytest.fixture
def table(mariadb_lab):
    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    with connect(mariadb_lab.primary) as c:
        c.cursor().execute(f"CREATE TABLE {name} (id int AUTO_INCREMENT PRIMARY KEY, note text)")
    mariadb_lab.wait_until_caught_up()
    yield name
    with connect(mariadb_lab.primary) as c:
        c.cursor().execute(f"DROP TABLE IF EXISTS {name}")


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_lab_has_a_primary_and_two_gtid_replicas(mariadb_lab):
    assert [m.name for m in mariadb_lab.members] == ["maria1", "maria2", "maria3"]
    assert mariadb_lab.primary.name == "maria1"
    assert [r.name for r in mariadb_lab.replicas] == ["maria2", "maria3"]
    assert len({m.port for m in mariadb_lab.members}) == 3
    server_ids = set()
    for m in mariadb_lab.members:
        assert m.datadir == m.directory / "data" and m.datadir.is_dir()
        ((user, db, read_only, server_id, log_bin, slave_updates, strict),) = fetch(
            m,
            "SELECT current_user(), database(), @@read_only, @@server_id, @@log_bin,"
            " @@log_slave_updates, @@gtid_strict_mode",
        )
        assert (user, db) == ("app@%", "app")
        assert read_only == (m.role == "replica")
        assert (log_bin, slave_updates, strict) == (1, 1, 1)
        server_ids.add(server_id)
        grants = " ".join(row[0] for row in fetch(m, "SHOW GRANTS"))
        assert "SLAVE MONITOR" in grants and "BINLOG MONITOR" in grants
        assert "SUPER" not in grants and "READ ONLY ADMIN" not in grants
    assert len(server_ids) == 3


def test_member_connection_details(mariadb_lab):
    m = mariadb_lab.replicas[0]
    assert m.url.startswith("mysql://app:") and m.url.endswith(f"@127.0.0.1:{m.port}/app")
    assert m.password not in repr(m)
    with mysql.connector.connect(**m.admin_connect_kwargs()) as c:
        cur = c.cursor()
        cur.execute("SELECT current_user()")
        assert cur.fetchall() == [("root@127.0.0.1",)]


def test_replicas_apply_writes_and_refuse_them(mariadb_lab, table):
    insert(mariadb_lab.primary, table)
    mariadb_lab.wait_until_caught_up()
    for r in mariadb_lab.replicas:
        assert count(r, table) == 1
        with pytest.raises(mysql.connector.DatabaseError) as refused:
            insert(r, table)
        assert refused.value.errno == READ_ONLY_ERRNO


def test_admin_writes_on_a_replica_do_not_break_replication(mariadb_lab, table):
    # Logged on the replica, this would be a GTID the primary lacks, and gtid_strict_mode
    # would stop the replica at the primary's next transaction.
    r = mariadb_lab.replicas[0]
    mariadb_lab.query(r, f"INSERT INTO {table} (id, note) VALUES (1000, 'local')")
    insert(mariadb_lab.primary, table)
    mariadb_lab.wait_until_caught_up()
    assert count(r, table) == 2
    mariadb_lab.query(r, f"DELETE FROM {table} WHERE id = 1000")


def test_paused_replica_receives_but_does_not_apply(mariadb_lab, table):
    r, other = mariadb_lab.replicas
    mariadb_lab.pause_replication(r)
    insert(mariadb_lab.primary, table)
    target = mariadb_lab.primary_position()

    def positions() -> tuple[MariaDBGTID, MariaDBGTID]:
        # What a monitor connected as the app user sees.
        with connect(r) as c:
            cur = c.cursor(dictionary=True)
            cur.execute("SHOW ALL SLAVES STATUS")
            (status,) = cur.fetchall()
            cur.execute("SELECT @@gtid_slave_pos AS applied")
            (applied,) = cur.fetchall()
        return MariaDBGTID.parse(status["Gtid_IO_Pos"]), MariaDBGTID.parse(applied["applied"])

    assert _eventually(lambda: positions()[0].covers(target)), "the paused replica stopped receiving"
    received, applied = positions()
    assert not applied.covers(target)
    assert received.transactions_ahead_of(applied) == 1
    assert count(r, table) == 0
    assert _eventually(lambda: count(other, table) == 1)
    mariadb_lab.resume_replication(r)
    assert _eventually(lambda: count(r, table) == 1)
    assert mariadb_lab.replay_position(r).covers(target)


def _just_after_a_second_boundary() -> None:
    # MASTER_DELAY sleeps whole seconds computed from whole-second timestamps: a commit
    # just before a boundary, read by the replica just after it, would sleep a second less.
    while time.time() % 1 > 0.3:
        time.sleep(0.01)


def test_apply_delay_holds_commits_back_for_that_long(mariadb_lab, table):
    r = mariadb_lab.replicas[1]
    mariadb_lab.set_apply_delay(r, 0.5)  # whole seconds: rounded up to 1
    _just_after_a_second_boundary()
    start = time.monotonic()
    insert(mariadb_lab.primary, table)
    time.sleep(0.3)
    assert count(r, table) == 0
    assert _eventually(lambda: count(r, table) == 1, timeout=5)
    assert time.monotonic() - start >= 0.9
    mariadb_lab.set_apply_delay(r, 0)
    insert(mariadb_lab.primary, table)
    assert _eventually(lambda: count(r, table) == 2, timeout=1)


def test_apply_delay_keeps_a_paused_replica_paused(mariadb_lab, table):
    r = mariadb_lab.replicas[0]
    mariadb_lab.pause_replication(r)
    mariadb_lab.set_apply_delay(r, 0)
    insert(mariadb_lab.primary, table)
    time.sleep(0.3)
    assert count(r, table) == 0
    mariadb_lab.heal()
    assert count(r, table) == 1


def test_frozen_member_accepts_tcp_but_never_answers(mariadb_lab):
    r = mariadb_lab.replicas[0]
    mariadb_lab.freeze(r)
    # The kernel still completes the TCP handshake...
    socket.create_connection((r.host, r.port), timeout=1).close()
    # ...but the server sends no greeting: a short timeout fails instead of hanging.
    start = time.monotonic()
    with pytest.raises(mysql.connector.Error):
        connect(r, timeout=1)
    assert time.monotonic() - start < 3
    mariadb_lab.thaw(r)
    assert fetch(r, "SELECT 1") == [(1,)]


def test_frozen_member_stalls_a_running_connection(mariadb_lab):
    r = mariadb_lab.replicas[1]
    with connect(r, read_timeout=1) as c:
        cur = c.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        mariadb_lab.freeze(r)
        start = time.monotonic()
        try:
            with pytest.raises(mysql.connector.Error):
                cur.execute("SELECT 1")
                cur.fetchall()
            assert time.monotonic() - start < 3
        finally:
            mariadb_lab.thaw(r)


def test_killed_replica_refuses_connections_until_started(mariadb_lab, table):
    r = mariadb_lab.replicas[0]
    mariadb_lab.kill(r)
    assert r.state == "killed"
    with pytest.raises(mysql.connector.Error, match="2003|refused"):
        connect(r)
    insert(mariadb_lab.primary, table)
    mariadb_lab.start(r)
    assert r.state == "running"
    assert _eventually(lambda: count(r, table) == 1, timeout=10)


def test_killed_primary_restarts_with_its_data(mariadb_lab, table):
    # A commit reaches the kernel before the client hears of it, so SIGKILL right after
    # cannot lose it (and the replicas, which may have it already, keep replicating).
    insert(mariadb_lab.primary, table)
    mariadb_lab.kill(mariadb_lab.primary)
    with pytest.raises(mysql.connector.Error):
        connect(mariadb_lab.primary)
    mariadb_lab.start(mariadb_lab.primary)
    assert count(mariadb_lab.primary, table) == 1
    insert(mariadb_lab.primary, table)
    # The replicas reconnect on their own (MASTER_CONNECT_RETRY = 1 s).
    mariadb_lab.wait_until_caught_up(timeout=15)
    for r in mariadb_lab.replicas:
        assert count(r, table) == 2


def test_clean_stop_and_start(mariadb_lab, table):
    r = mariadb_lab.replicas[1]
    mariadb_lab.stop(r)
    assert r.state == "stopped"
    with pytest.raises(mysql.connector.Error, match="2003|refused"):
        connect(r)
    insert(mariadb_lab.primary, table)
    mariadb_lab.start(r)
    assert _eventually(lambda: count(r, table) == 1, timeout=10)


def test_wait_until_caught_up_names_a_paused_replica(mariadb_lab, table):
    r = mariadb_lab.replicas[0]
    mariadb_lab.pause_replication(r)
    insert(mariadb_lab.primary, table)
    with pytest.raises(LabError, match=f"{r.name} .*did not apply"):
        mariadb_lab.wait_until_caught_up(timeout=0.5)


def test_positions_are_gtids_that_compare(mariadb_lab, table):
    before = mariadb_lab.primary_position()
    insert(mariadb_lab.primary, table)
    target = mariadb_lab.primary_position()
    assert isinstance(target, MariaDBGTID)
    assert target.covers(before) and not before.covers(target)
    mariadb_lab.wait_until_caught_up()
    for r in mariadb_lab.replicas:
        assert mariadb_lab.replay_position(r).covers(target)
        assert mariadb_lab.receive_position(r).covers(target)
    assert mariadb_lab.receive_position(mariadb_lab.primary) is None


@pytest.mark.slow
def test_promote_moves_the_primary_and_the_other_replica_follows(lab_factory):
    lab = lab_factory("mariadb", replicas=2)
    old, new, other = lab.members
    with connect(old) as c:
        c.cursor().execute("CREATE TABLE p (id int)")
    lab.wait_until_caught_up()
    # What the new primary received but held back must survive the failover.
    lab.set_apply_delay(new, 60)
    with connect(old) as c:
        c.cursor().execute("INSERT INTO p VALUES (1)")
    target = lab.primary_position()
    assert _eventually(lambda: lab.receive_position(new).covers(target))
    lab.promote(new)
    assert (old.role, new.role, other.role) == ("fenced", "primary", "replica")
    assert (old.state, new.state, other.state) == ("stopped", "running", "running")
    assert lab.primary is new and lab.replicas == [other]
    assert fetch(new, "SELECT @@read_only, count(*) FROM p") == [(0, 1)]
    with connect(new) as c:
        c.cursor().execute("INSERT INTO p VALUES (2)")
    lab.wait_until_caught_up()
    assert count(other, "p") == 2
    (status,) = fetch(other, "SHOW SLAVE STATUS", dictionary=True)
    assert status["Master_Port"] == new.port
    with pytest.raises(mysql.connector.Error):
        connect(old)
    with pytest.raises(LabError, match="fenced"):
        lab.start(old)


@pytest.mark.slow
def test_replica_stopped_during_promote_follows_the_new_primary(lab_factory):
    lab = lab_factory("mariadb", replicas=2)
    old, new, other = lab.members
    lab.stop(other)
    lab.promote(new)
    with connect(new) as c:
        c.cursor().execute("CREATE TABLE p (id int)")
    lab.start(other)
    lab.wait_until_caught_up()
    assert fetch(other, "SHOW TABLES") == [("p",)]


def test_misuse_is_refused_with_a_clear_message(mariadb_lab):
    with pytest.raises(LabError, match="no member named 'maria9'.*maria1, maria2, maria3"):
        mariadb_lab.member("maria9")
    with pytest.raises(LabError, match="promote needs a replica, but maria1 is the primary"):
        mariadb_lab.promote(mariadb_lab.primary)
    with pytest.raises(LabError, match="pause_replication needs a replica"):
        mariadb_lab.pause_replication(mariadb_lab.primary)
    with pytest.raises(LabError, match="seconds >= 0"):
        mariadb_lab.set_apply_delay("maria2", -1)
    with pytest.raises(LabError, match="whole number"):
        MariaDBLab(replicas=-1)


def test_missing_binaries_name_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("REPLPOOL_MARIADB_BINDIR", str(tmp_path))
    with pytest.raises(LabError, match=r"apt-get install mariadb-server.*REPLPOOL_MARIADB_BINDIR"):
        MariaDBLab().start()


def test_missing_driver_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mysql.connector", None)  # makes the import fail
    with pytest.raises(LabError, match=r"replpool\[mysql\]"):
        MariaDBLab().start()


def test_one_replica_lab_starts_fast_and_stop_leaves_nothing():
    start = time.monotonic()
    lab = MariaDBLab(replicas=1).start()
    elapsed = time.monotonic() - start
    directory = lab.directory
    try:
        assert elapsed < 10, f"a primary and a replica took {elapsed:.1f} s to start"
        primary, replica = lab.members
        servers = lab_processes(directory)
        assert len(servers) == 2, [cmdline(pid) for pid in servers]
        with connect(primary) as c:
            c.cursor().execute("CREATE TABLE s (id int)")
            c.cursor().execute("INSERT INTO s VALUES (1)")
        lab.wait_until_caught_up()
        assert count(replica, "s") == 1
        with pytest.raises(mysql.connector.DatabaseError) as refused:
            with connect(replica) as c:
                c.cursor().execute("INSERT INTO s VALUES (2)")
        assert refused.value.errno == READ_ONLY_ERRNO
    finally:
        lab.stop()
    assert not lab_processes(directory)
    assert not directory.exists(), sorted(str(p) for p in directory.rglob("*"))


def test_lab_up_runs_writable_replicas_when_asked():
    import signal
    import subprocess
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    proc = subprocess.Popen(
        [sys.executable, "-m", "replpool", "lab", "up", "--engine", "mariadb", "--replicas", "1",
         "--writable-replicas"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = lab_up_lines(proc)
        (replica,) = [urlsplit(line.split()[3]) for line in lines if line.split()[1:2] == ["replica"]]
        folder = Path(lines[0].split(" lab in ")[1].strip())
        with mysql.connector.connect(
            host=replica.hostname, port=replica.port, user=replica.username,
            password=unquote(replica.password or ""), connection_timeout=5,
        ) as c:
            cur = c.cursor()
            cur.execute("SELECT @@GLOBAL.read_only")
            assert cur.fetchall() == [(0,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    assert not folder.exists()


def test_writable_replicas_are_refused_for_postgresql():
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "replpool", "lab", "up", "--engine", "postgresql", "--writable-replicas"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "--writable-replicas is for --engine mariadb" in proc.stderr
