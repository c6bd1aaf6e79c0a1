"""What the monitor logs on a real lab: a lasting condition once when it starts and once
when it ends, never once per poll."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import replpool
from tests.labtools import wait_until

pytestmark = pytest.mark.lab

FAST = {"monitor_interval": 0.02, "monitor_idle_interval": 0.02, "probe_timeout": 0.5, "connect_timeout": 2}


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def levels(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.levelname for r in caplog.records if text in r.getMessage()]


def cluster_of(lab: Any, **options: Any) -> replpool.Cluster:
    return replpool.Cluster(lab.primary.url, [r.url for r in lab.replicas], **{**FAST, **options})


def test_replicas_that_accept_writes_are_each_warned_about_once(mariadb_lab_writable_replicas, caplog):
    lab = mariadb_lab_writable_replicas
    caplog.set_level(logging.INFO, logger="replpool")
    with cluster_of(lab) as c:
        rounds = c.status().monitor_rounds
        wait_until(lambda: c.status().monitor_rounds > rounds + 30, 5, "30 more rounds")
        assert [m.role for m in c.status().members] == ["primary", "replica", "replica"]
    warned = lines(caplog, "accepts writes (read_only is off)")
    assert len(warned) == 2, warned
    for r in lab.replicas:
        assert sum(f"{r.host}:{r.port} replicates from" in w for w in warned) == 1
    assert "SET GLOBAL read_only = ON" in warned[0]
    assert not lines(caplog, "claim"), "no member is taken for a second primary"


@pytest.mark.parametrize("fixture", ["postgres_lab", "mariadb_lab"])
def test_a_member_down_is_logged_once_when_it_goes_and_once_when_it_comes_back(fixture, request, caplog):
    lab = request.getfixturevalue(fixture)
    victim = lab.replicas[0]
    name = f"{victim.host}:{victim.port}"
    caplog.set_level(logging.INFO, logger="replpool")
    with cluster_of(lab) as c:
        lab.kill(victim)
        wait_until(lambda: c._monitor.members[1].poll_errors >= 5, 10, "five failed polls")
        lab.start(victim)
        wait_until(lambda: c.status().member(name).up, 10, "the replica back")
    assert levels(caplog, f"{name} is down") == ["WARNING"]
    back = lines(caplog, f"{name} is answering again")
    assert len(back) == 1 and "failed polls" in back[0], back
    # Its recovery, and the restart found then, are told at INFO: the warning came when it went.
    assert levels(caplog, f"{name} is answering again") == ["INFO"]
    restarted = levels(caplog, f"{name} restarted")
    # (MariaDB's start time counts whole seconds: a restart within one may go unseen.)
    assert restarted == ["INFO"] or (fixture == "mariadb_lab" and not restarted), restarted


def test_two_members_claiming_to_be_primary_are_logged_once_while_it_lasts(mariadb_lab_writable_replicas, caplog):
    lab = mariadb_lab_writable_replicas
    detached = lab.replicas[1]
    caplog.set_level(logging.INFO, logger="replpool")
    with cluster_of(lab) as c:
        # Replication removed from a writable replica: it now looks like a primary too.
        lab.query(detached, "STOP SLAVE")
        lab.query(detached, "RESET SLAVE ALL")
        name = f"{detached.host}:{detached.port}"
        wait_until(lambda: c.status().member(name).role == "unknown", 15, "a second claimant")
        rounds = c.status().monitor_rounds
        wait_until(lambda: c.status().monitor_rounds > rounds + 30, 5, "30 more rounds")
        assert c.status().primary == f"{lab.primary.host}:{lab.primary.port}"
        claims = lines(caplog, "several members accept writes")
        assert len(claims) == 1, claims
        lab.stop(detached)
        lab.start(detached)  # the lab points it at the primary again
        wait_until(lambda: c.status().member(name).role == "replica", 10, "a replica again")
        time.sleep(0.2)
    assert levels(caplog, "several members accept writes") == ["WARNING"]
    assert levels(caplog, "no longer all claim to be primary") == ["INFO"]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["postgres_lab", "mariadb_lab"])
def test_a_pool_failing_to_connect_says_so_once_and_once_when_it_connects_again(fixture, request, caplog):
    lab = request.getfixturevalue(fixture)
    victim = lab.replicas[0]
    name = f"{victim.host}:{victim.port}"
    caplog.set_level(logging.INFO)
    with cluster_of(lab) as c:
        # A member's pool opens once the monitor has seen it answer (a member down at
        # start-up is reported by the monitor alone): the member goes away afterwards,
        # and the pool, checking its connections, finds them dead and tries to replace
        # them.
        wait_until(lambda: c.status().member(name).eligible, 10, "the replica in use")
        pool = c._members[1].pool
        lab.kill(victim)
        # Gone for good before the pool checks (a connection begun while the server was
        # dying could still be accepted, and count as connecting again).
        wait_until(lambda: not c.status().member(name).up, 10, "the replica seen down")
        pool.check()
        wait_until(lambda: pool.get_stats().get("connections_errors", 0) >= 3, 15, "three failed attempts")
        lab.start(victim)
        wait_until(lambda: lines(caplog, "connected again"), 15, "the pool connected again")
    failed = [
        r.getMessage() for r in caplog.records
        if name in r.getMessage() and r.levelno >= logging.WARNING
        and ("could not connect" in r.getMessage() or "error connecting" in r.getMessage())
    ]
    assert len(failed) == 1, failed
    again = lines(caplog, "connected again")
    assert len(again) == 1 and name in again[0] and "failed attempts" in again[0], again
    assert levels(caplog, "connected again") == ["INFO"]  # a recovery


def test_a_grant_to_read_the_replication_status_is_noticed_on_a_new_connection(
    mariadb_lab_writable_replicas, monkeypatch, caplog,
):
    # MariaDB applies a global privilege to the connections opened after the GRANT only:
    # the monitor's next try must not be on the connection that was denied.
    import replpool._mysql

    monkeypatch.setattr(replpool._mysql, "_DENIED_RETRY", 0.3)  # a minute in production
    lab = mariadb_lab_writable_replicas
    user, password = "rp_mon_granted", lab.password
    lab.query(lab.primary, "CREATE USER %s@%s IDENTIFIED BY %s", (user, "%", password))
    lab.query(lab.primary, f"GRANT SELECT ON {lab.primary.database}.* TO %s@%s", (user, "%"))
    caplog.set_level(logging.INFO, logger="replpool")
    try:
        lab.wait_until_caught_up()
        urls = [f"mysql://{user}:{password}@{m.host}:{m.port}/{m.database}" for m in lab.members]
        with replpool.Cluster(urls[0], urls[1:], **FAST) as c:
            wait_until(lambda: len(lines(caplog, "may not read the replication status")) == 3, 5, "denied")
            assert [m.role for m in c.status().members] == ["primary", "unknown", "unknown"]
            lab.query(lab.primary, "GRANT SLAVE MONITOR ON *.* TO %s@%s", (user, "%"))
            wait_until(
                lambda: [m.role for m in c.status().members] == ["primary", "replica", "replica"],
                5, "the replicas found by replication",
            )
            assert c.status().poll_errors == 0  # no member was taken for failed meanwhile
            with replpool.session():
                c.query("SELECT 1", read_only=True)
            assert c.status().routing.get("replica", {}).get("fresh_replica") == 1
        assert levels(caplog, "is readable again") == ["INFO"] * 3
    finally:
        lab.query(lab.primary, "DROP USER %s@%s", (user, "%"))


@pytest.mark.parametrize("down", ["before_it_opens", "while_it_runs"])
def test_no_primary_is_logged_once_when_it_starts_and_once_when_it_ends_with_its_rounds(postgres_lab, caplog, down):
    lab = postgres_lab
    primary = f"{lab.primary.host}:{lab.primary.port}"
    caplog.set_level(logging.INFO, logger="replpool")
    if down == "before_it_opens":
        lab.kill(lab.primary)
    with cluster_of(lab) as c:
        if down == "while_it_runs":
            wait_until(lambda: c.status().primary == primary, 5, "the primary")
            lab.kill(lab.primary)
        wait_until(lambda: lines(caplog, "no primary is reachable"), 5, "no primary said")
        rounds = c.status().monitor_rounds
        wait_until(lambda: c.status().monitor_rounds > rounds + 10, 5, "10 more rounds")
        lab.start(lab.primary)
        wait_until(lambda: c.status().primary == primary, 15, "the primary back")
    (started,) = lines(caplog, "no primary is reachable")
    assert primary in started, started
    (ended,) = [r for r in caplog.records if re.search("none was reachable|reachable again", r.getMessage())]
    assert ended.levelno == logging.INFO, ended.getMessage()
    seen = re.search(r"\(seen (\d+) more rounds\)", ended.getMessage())
    assert seen is not None and int(seen.group(1)) >= 10, ended.getMessage()


@pytest.mark.parametrize("fixture", ["postgres_lab", "mariadb_lab"])
def test_a_process_exiting_while_its_primary_hangs_logs_nothing(fixture, request):
    """The interpreter stops the monitor's executor before anything can close the
    cluster: a round that then finds it shut is the process ending, not a failure."""
    lab = request.getfixturevalue(fixture)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # accepts, never answers: a hung server
        scheme = "postgresql" if lab.engine == "postgresql" else "mariadb"
        primary = f"{scheme}://app:{lab.password}@127.0.0.1:{silent.getsockname()[1]}/app"
        script = textwrap.dedent(f"""
            import logging, replpool
            logging.basicConfig(level=logging.ERROR)
            c = replpool.Cluster({primary!r}, {[r.url for r in lab.replicas]!r},
                                 monitor_interval=0.02, probe_timeout=0.5, connect_timeout=2)
            c.open()
            assert c.query("SELECT 1", read_only=True)[0][0] == 1
            print("served")
        """)  # and exit without closing it, the primary still hanging
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "served" in proc.stdout, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert lab.password not in proc.stderr


def test_an_idle_mariadb_cluster_costs_each_member_one_statement_per_idle_interval(mariadb_lab, monkeypatch):
    """The servers count the replication status, read now and then with a poll, as a
    statement of its own: the idle pace spaces rounds by what they ran. Here the status
    comes with every poll (the worst case), so rounds come at half the pace."""
    import replpool._mysql

    monkeypatch.setattr(replpool._mysql, "_STATUS_INTERVAL", 0.0)
    lab = mariadb_lab

    def questions() -> list[int]:
        return [int(lab.query(m, "SHOW GLOBAL STATUS LIKE 'Questions'")[0][1]) for m in lab.members]

    with cluster_of(lab, monitor_interval=0.05, monitor_idle_interval=0.25) as c:
        rounds = c.status().monitor_rounds
        wait_until(lambda: c.status().monitor_rounds > rounds + 2, 5, "idle rounds")
        first = questions()
        before, start = questions(), time.monotonic()
        own = [b - f for f, b in zip(first, before)]  # what asking costs (a connection's set-up)
        time.sleep(3)
        after, took = questions(), time.monotonic() - start
    for b, a, o in zip(before, after, own):
        rate = (a - b - o) / took
        assert rate <= 1 / 0.25 + 0.5, (before, after, own, took)  # 8 a second without the spacing
