"""A PostgreSQL standby cancels a read that conflicts with replaying the primary's
changes; replpool recognises it by its SQLSTATE and the member's role, not by the
message, which the server translates. Tested on a lab whose servers speak German
(``lc_messages``; the lab builds the locale, the server ships the translations)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import replpool
from replpool import Reason
from replpool._pg import PostgresEngine
from replpool.testing import PostgresLab
from tests.labtools import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GERMAN = {
    "lc_messages": "de_DE.UTF-8",
    # Cancel a conflicting read 0.1 s after replay starts waiting for it (30 s by default).
    "max_standby_streaming_delay": "100ms",
}


@pytest.fixture(scope="module")
def lab() -> Iterator[PostgresLab]:
    with PostgresLab(replicas=1, settings=GERMAN, locales=("de_DE.UTF-8",)) as lab:
        lab.query(lab.primary, "CREATE TABLE t (x int)")
        lab.query(lab.primary, "INSERT INTO t VALUES (1), (2)")
        lab.query(lab.primary, "GRANT SELECT ON t TO app")
        lab.wait_until_caught_up()
        yield lab


def conflict_with(lab: PostgresLab, reading: str) -> None:
    """Once the replica runs ``reading``, take a lock on the primary that the replica
    must replay: it cancels the read after max_standby_streaming_delay."""
    replica = lab.replicas[0]
    wait_until(
        lambda: lab.query(
            replica, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
            (reading,),
        )[0][0] == 1,
        5, "the read running on the replica",
    )
    with psycopg.connect(lab.primary.admin_dsn) as conn:  # committed on exit
        conn.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")


def in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_recovery_conflict_in_another_language_is_recognised(lab):
    engine = PostgresEngine()
    reading = "SELECT count(*), pg_sleep(3) FROM t"
    with psycopg.connect(lab.replicas[0].dsn) as replica, psycopg.connect(lab.primary.dsn) as primary:
        t, out = in_thread(lambda: replica.execute(reading).fetchone())
        conflict_with(lab, reading)
        t.join(10)
        exc = out.get("error")
        assert isinstance(exc, psycopg.Error), out
        assert exc.sqlstate == "40001"
        assert "Wiederherstellung" in str(exc) and "recovery" not in str(exc).lower(), str(exc)
        assert engine.is_retryable_read(exc, replica)
        # The same SQLSTATE on the primary is the caller's own serialization failure.
        assert not engine.is_recovery_conflict(exc, primary)
        assert not engine.is_recovery_conflict(exc, None, on_replica=False)
        assert engine.is_recovery_conflict(exc, None, on_replica=True)


def test_a_read_cancelled_by_recovery_runs_once_more_elsewhere(lab):
    reading = "SELECT count(*), pg_sleep(1) FROM t"
    with replpool.Cluster(lab.primary.url, [lab.replicas[0].url], monitor_interval=0.05) as c:
        with replpool.session():
            t, out = in_thread(lambda: c.query(reading, read_only=True))
            start = time.monotonic()
            conflict_with(lab, reading)
            t.join(10)
        assert out.get("result") == [(2, "")], out
        assert time.monotonic() - start < 5
        routing = c.status().routing
        assert routing["replica"][Reason.FRESH_REPLICA.value] == 1, routing
        assert routing["primary"][Reason.MEMBER_DOWN.value] == 1, routing
