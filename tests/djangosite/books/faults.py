"""Faults on the lab's replicas, injected as the superuser whose URLs ``python -m
replpool lab up`` printed (settings.SITE["members"]): pause a replica's replay, undo it."""

import time
from urllib.parse import urlsplit

from django.conf import settings

MEMBERS = {name: (role, url) for name, role, url in settings.SITE["members"]}
PRIMARY = next(name for name, (role, _) in MEMBERS.items() if role == "primary")
REPLICAS = [name for name, (role, _) in MEMBERS.items() if role == "replica"]


def _run(member, sql):
    url = MEMBERS[member][1]
    if settings.ENGINE == "postgresql":
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else None
    import mysql.connector

    parts = urlsplit(url)
    conn = mysql.connector.connect(
        host=parts.hostname, port=parts.port, user=parts.username, autocommit=True,
        connection_timeout=5,
    )
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else None
    finally:
        conn.close()


def pause_replicas():
    """Every replica stops applying what it receives (and stays within the lag limit
    for the few seconds a test takes, so it is still used)."""
    for replica in REPLICAS:
        if settings.ENGINE == "postgresql":
            _run(replica, "SELECT pg_wal_replay_pause()")
        else:
            _run(replica, "STOP SLAVE SQL_THREAD")


def delay_replicas(seconds):
    """Every replica applies each commit ``seconds`` after the primary made it
    (PostgreSQL's recovery_min_apply_delay; MariaDB's MASTER_DELAY, in whole seconds
    counted from whole-second commit times)."""
    for replica in REPLICAS:
        if settings.ENGINE == "postgresql":
            _run(replica, f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
            _run(replica, "SELECT pg_reload_conf()")
        else:
            for sql in ("STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {int(seconds)}", "START SLAVE"):
                _run(replica, sql)
    time.sleep(0.1)  # the reload reaches the process that applies WAL asynchronously


def heal(timeout=10.0):
    """Undo pause_replicas(), then wait until every replica has applied all the
    primary wrote."""
    deadline = time.monotonic() + timeout
    if settings.ENGINE == "postgresql":
        for replica in REPLICAS:
            _run(replica, "ALTER SYSTEM RESET recovery_min_apply_delay")
            _run(replica, "SELECT pg_reload_conf()")
            _run(replica, "SELECT pg_wal_replay_resume()")
        (target,) = _run(PRIMARY, "SELECT pg_current_wal_lsn()::text")[0]
        for replica in REPLICAS:
            while not _run(replica, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{replica} did not catch up")
                time.sleep(0.01)
    else:
        for replica in REPLICAS:
            for sql in ("STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"):
                _run(replica, sql)
        (target,) = _run(PRIMARY, "SELECT @@gtid_binlog_pos")[0]
        for replica in REPLICAS:
            (done,) = _run(replica, f"SELECT MASTER_GTID_WAIT('{target}', {timeout})")[0]
            if done != 0:
                raise AssertionError(f"{replica} did not catch up")
