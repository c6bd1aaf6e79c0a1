"""Faults on the lab's replicas, from inside the Django test run (the lab itself lives
in the pytest process that started this one; its superuser DSNs come in the
environment)."""

import json
import os
import time

import psycopg

LAB = json.loads(os.environ["REPLPOOL_TEST_LAB"])


def _run(member, sql):
    with psycopg.connect(LAB["admin"][member], autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description is not None else None


def pause(replica):
    _run(replica, "SELECT pg_wal_replay_pause()")


def delay(replica, seconds):
    _run(replica, f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
    _run(replica, "SELECT pg_reload_conf()")
    time.sleep(0.1)  # the reload reaches the process that applies WAL asynchronously


def heal(timeout=10.0):
    for replica in LAB["replica_names"]:
        _run(replica, "ALTER SYSTEM RESET recovery_min_apply_delay")
        _run(replica, "SELECT pg_reload_conf()")
        _run(replica, "SELECT pg_wal_replay_resume()")
    (target,) = _run(LAB["primary_name"], "SELECT pg_current_wal_lsn()")[0]
    deadline = time.monotonic() + timeout
    for replica in LAB["replica_names"]:
        while _run(replica, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0] is not True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{replica} did not catch up")
            time.sleep(0.01)


def describe_replicas(dbname):
    """Each replica's replay position, pause state and delay, and its shop_item ids."""
    out = {}
    for replica in LAB["replica_names"]:
        dsn = LAB["admin"][replica].replace("dbname=app", f"dbname={dbname}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            out[replica] = conn.execute(
                "SELECT pg_last_wal_replay_lsn()::text, pg_get_wal_replay_pause_state(),"
                " current_setting('recovery_min_apply_delay'),"
                " (SELECT array_agg(id ORDER BY id) FROM shop_item)"
            ).fetchone()
    return out
