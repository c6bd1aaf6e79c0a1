"""Faults on the lab's replicas, from inside the Django test run (the lab itself lives
in the pytest process that started this one; its superuser connection settings come in
the environment), for either engine of the project (settings.ENGINE):

- PostgreSQL: ``pg_wal_replay_pause()``, ``recovery_min_apply_delay``, and
  ``pg_last_wal_replay_lsn()`` against the primary's ``pg_current_wal_lsn()``;
- MariaDB: ``STOP SLAVE SQL_THREAD``, ``MASTER_DELAY`` (set with both replication
  threads stopped), and ``@@gtid_slave_pos`` against the primary's
  ``@@gtid_binlog_pos``.
"""

import json
import os
import time

from django.conf import settings

LAB = json.loads(os.environ["REPLPOOL_TEST_LAB"])
ENGINE = settings.ENGINE
REPLICAS = LAB["replica_names"]

# An apply delay that keeps a write off the delayed replica for as long as a test needs
# to read it there. MariaDB counts MASTER_DELAY in whole seconds from whole-second
# commit timestamps, so a commit can be applied up to a second early, and the clock
# difference it measures with the primary can add one: 3 s leaves at least one.
LAG_SECONDS = 1.0 if ENGINE == "postgresql" else 3


# -- PostgreSQL ---------------------------------------------------------------------------


def _pg(member, sql, dbname=None):
    import psycopg

    dsn = LAB["admin"][member]
    if dbname is not None:
        dsn = dsn.replace("dbname=app", f"dbname={dbname}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description is not None else None


# -- MariaDB ------------------------------------------------------------------------------


def _maria(member, sql, dbname=None, dictionary=False):
    import mysql.connector

    kwargs = dict(LAB["admin"][member])
    if dbname is not None:
        kwargs["database"] = dbname
    conn = mysql.connector.connect(**kwargs, autocommit=True, connection_timeout=5)
    try:
        cursor = conn.cursor(dictionary=dictionary)
        results = []
        for statement in sql if isinstance(sql, (list, tuple)) else [sql]:
            cursor.execute(statement)
            results = cursor.fetchall() if cursor.description else None
        return results
    finally:
        conn.close()


def _maria_gtid(member, variable):
    from replpool._positions import MariaDBGTID

    return MariaDBGTID.parse(_maria(member, f"SELECT @@{variable}")[0][0])


def _maria_status(replica):
    rows = _maria(replica, "SHOW SLAVE STATUS", dictionary=True)
    return rows[0] if rows else {}


def on_primary(sql, dbname):
    """Run ``sql`` on the primary as another client would (the lab's superuser)."""
    if ENGINE == "postgresql":
        _pg(LAB["primary_name"], sql, dbname)
    else:
        _maria(LAB["primary_name"], sql, dbname)


# -- faults -------------------------------------------------------------------------------


def pause(replica):
    """The replica stops applying what it receives."""
    if ENGINE == "postgresql":
        _pg(replica, "SELECT pg_wal_replay_pause()")
    else:
        _maria(replica, "STOP SLAVE SQL_THREAD")


def delay(replica, seconds):
    """The replica applies each commit ``seconds`` after the primary made it."""
    if ENGINE == "postgresql":
        _pg(replica, f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
        _pg(replica, "SELECT pg_reload_conf()")
        time.sleep(0.1)  # the reload reaches the process that applies WAL asynchronously
    else:
        # MASTER_DELAY changes only while both replication threads are stopped.
        _maria(replica, ["STOP SLAVE", f"CHANGE MASTER TO MASTER_DELAY = {int(seconds)}", "START SLAVE"])


def heal(timeout=10.0):
    """Undo pause() and delay() on every replica, then wait until each has applied all
    the primary wrote."""
    if ENGINE == "postgresql":
        for replica in REPLICAS:
            _pg(replica, "ALTER SYSTEM RESET recovery_min_apply_delay")
            _pg(replica, "SELECT pg_reload_conf()")
            _pg(replica, "SELECT pg_wal_replay_resume()")
        (target,) = _pg(LAB["primary_name"], "SELECT pg_current_wal_lsn()")[0]

        def caught_up(replica):
            return _pg(replica, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0] is True
    else:
        for replica in REPLICAS:
            status = _maria_status(replica)
            if status.get("SQL_Delay") or status.get("Slave_SQL_Running") != "Yes" or (
                status.get("Slave_IO_Running") != "Yes"
            ):
                _maria(replica, ["STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE"])
        target = _maria_gtid(LAB["primary_name"], "gtid_binlog_pos")

        def caught_up(replica):
            return _maria_gtid(replica, "gtid_slave_pos").covers(target)

    deadline = time.monotonic() + timeout
    for replica in REPLICAS:
        while not caught_up(replica):
            if time.monotonic() > deadline:
                raise AssertionError(f"{replica} did not catch up")
            time.sleep(0.01)


def describe_replicas(dbname):
    """Each replica's applied position, pause state and delay, and its shop_item ids."""
    out = {}
    for replica in REPLICAS:
        if ENGINE == "postgresql":
            out[replica] = _pg(
                replica,
                "SELECT pg_last_wal_replay_lsn()::text, pg_get_wal_replay_pause_state(),"
                " current_setting('recovery_min_apply_delay'),"
                " (SELECT array_agg(id ORDER BY id) FROM shop_item)",
                dbname,
            )[0]
        else:
            status = _maria_status(replica)
            out[replica] = (
                str(_maria_gtid(replica, "gtid_slave_pos")),
                f"SQL thread {status.get('Slave_SQL_Running')}",
                f"delay {status.get('SQL_Delay')} s",
                _maria(replica, "SELECT GROUP_CONCAT(id ORDER BY id) FROM shop_item", dbname)[0][0],
            )
    return out
