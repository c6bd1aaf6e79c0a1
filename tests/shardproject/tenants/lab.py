"""Faults on the shard lab's replicas from inside the Django test run (the lab lives in
the pytest process that started this one; its superuser DSNs come in the environment)."""

import json
import os
import time

import psycopg

LAB = json.loads(os.environ["REPLPOOL_TEST_SHARDS"])


def _pg(member_dsn, sql):
    with psycopg.connect(member_dsn, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description is not None else None


def pause(shard):
    """Shard ``shard`` (0-based)'s replicas stop applying what they receive."""
    s = LAB["shards"][shard]
    for name in s["replica_names"]:
        _pg(s["admin"][name], "SELECT pg_wal_replay_pause()")


def heal(timeout=10.0):
    """Every replica applies again, and catches up with its primary."""
    deadline = time.monotonic() + timeout
    for s in LAB["shards"]:
        for name in s["replica_names"]:
            _pg(s["admin"][name], "SELECT pg_wal_replay_resume()")
        (target,) = _pg(s["admin"][s["primary_name"]], "SELECT pg_current_wal_lsn()")[0]
        for name in s["replica_names"]:
            while not _pg(s["admin"][name], f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not catch up")
                time.sleep(0.01)
