"""replpool's PostgreSQL pool (psycopg_pool's, last-in first-out, with a short checkout
path) on a real server: everything the short path skips must still happen.

Each behaviour runs twice: with the short path as the installed psycopg_pool gets it,
and with it turned off (psycopg_pool's own code throughout), so a difference between the
two shows up as one failing variant."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

from replpool import _pg
from replpool._pg import LifoConnectionPool
from tests.labtools import wait_until

pytestmark = pytest.mark.lab


@pytest.fixture(params=["short path", "psycopg_pool's path"])
def make_pool(request: pytest.FixtureRequest, postgres_lab: Any) -> Iterator[Callable[..., Any]]:
    pools: list[LifoConnectionPool] = []
    short = request.param == "short path"

    def make(**options: Any) -> LifoConnectionPool:
        options.setdefault("min_size", 2)
        pool = LifoConnectionPool(postgres_lab.primary.dsn, open=False, **options)
        if not short:
            pool._fast_get = pool._fast_put = False
        pools.append(pool)
        pool.open(wait=True, timeout=10)
        return pool

    yield make
    for pool in pools:
        pool.close()


def pid(conn: Any) -> int:
    return int(conn.info.backend_pid)


def test_the_short_path_is_on_only_where_it_was_checked_and_needs_no_callbacks():
    on = psycopg_pool.__version__.startswith(_pg.FAST_PATH_VERSIONS)
    assert _pg.FAST_PATH is on

    def flags(**options: Any) -> tuple[bool, bool]:
        pool = LifoConnectionPool("", open=False, **options)
        return pool._fast_get, pool._fast_put

    assert flags() == (on, on)
    # A check or reset callback needs psycopg_pool's own path.
    assert flags(check=psycopg_pool.ConnectionPool.check_connection) == (False, on)
    assert flags(reset=lambda conn: None) == (on, False)


def test_the_connection_returned_last_is_handed_out_first(make_pool):
    pool = make_pool(min_size=3, max_size=3)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    for _ in range(5):
        c = pool.getconn()
        assert pid(c) == pid(b)
        pool.putconn(c)


def test_every_connection_entering_the_idle_pool_is_stamped_with_the_time(make_pool):
    """PostgresEngine.alive skips its check for a connection back for less than 1 ms:
    the stamp must be the time it came back, whichever path it came back by."""
    before = time.monotonic()
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    opened = conn._replpool_returned  # a new connection, stamped as it was added
    assert before <= opened <= time.monotonic()
    time.sleep(0.01)
    before = time.monotonic()
    pool.putconn(conn)
    assert before <= conn._replpool_returned <= time.monotonic()
    pool.check()  # checked connections go back in too
    assert conn._replpool_returned > before


def test_requests_are_counted(make_pool):
    pool = make_pool()
    before = pool.get_stats().get("requests_num", 0)
    for _ in range(7):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    stats = pool.get_stats()
    assert stats["requests_num"] - before == 7
    assert stats["pool_available"] == stats["pool_size"] == 2


def test_a_connection_past_its_lifetime_is_replaced_on_return(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_lifetime=0.5)
    conn = pool.getconn()
    first = pid(conn)
    time.sleep(0.6)
    pool.putconn(conn)
    with pool.connection(timeout=5) as conn:
        assert pid(conn) != first
    assert conn.closed is False  # the new one went back to the pool


def test_a_connection_out_during_drain_is_closed_on_return(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    if not hasattr(pool, "drain"):
        pytest.skip(f"psycopg_pool {psycopg_pool.__version__} has no drain()")
    conn = pool.getconn()
    first = pid(conn)
    pool.drain()
    pool.putconn(conn)
    assert conn.closed
    with pool.connection(timeout=5) as conn:
        assert pid(conn) != first


def test_a_connection_returned_in_a_transaction_is_rolled_back(make_pool, postgres_lab):
    pool = make_pool(min_size=1, max_size=1)
    with psycopg.connect(postgres_lab.primary.dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS pool_rollback (v int)")
        admin.execute("TRUNCATE pool_rollback")
    conn = pool.getconn()
    conn.execute("INSERT INTO pool_rollback VALUES (1)")
    pool.putconn(conn)  # in a transaction: the pool rolls it back
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM pool_rollback").fetchone() == (0,)


def test_a_broken_connection_is_replaced(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    first = pid(conn)
    conn.close()
    pool.putconn(conn)
    with pool.connection(timeout=5) as conn:
        assert pid(conn) != first and not conn.closed
    assert pool.get_stats().get("returns_bad") == 1


def test_a_waiting_client_gets_the_returned_connection(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    t.start()
    wait_until(lambda: pool.get_stats().get("requests_waiting", 0) > 0, 5, "the second client waiting")
    pool.putconn(conn)
    t.join(5)
    assert got and got[0] is conn
    pool.putconn(got[0])


def test_callbacks_run_on_each_checkout_and_return(make_pool):
    seen: list[str] = []
    pool = make_pool(min_size=1, max_size=1, check=lambda c: seen.append("check"),
                     reset=lambda c: seen.append("reset"))
    for _ in range(3):
        with pool.connection():
            pass
    wait_until(lambda: seen.count("reset") >= 3, 5, "three resets, run by the pool's worker")
    assert seen.count("check") == 3


def test_a_closed_pool_hands_out_nothing_and_closes_what_comes_back(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    pool.close()
    with pytest.raises(psycopg_pool.PoolClosed):
        pool.getconn()
    pool.putconn(conn)
    assert conn.closed


def test_the_surplus_of_a_burst_is_closed_after_max_idle(make_pool):
    """Last-in first-out leaves the surplus idle, and the short path keeps the count
    psycopg_pool's shrinking relies on: steady one-at-a-time use shrinks the pool."""
    pool = make_pool(min_size=1, max_size=4, max_idle=0.3)
    burst = [pool.getconn(timeout=5) for _ in range(4)]
    for conn in burst:
        pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 4
    deadline = time.monotonic() + 5
    while pool.get_stats()["pool_size"] > 1:
        assert time.monotonic() < deadline, pool.get_stats()
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        time.sleep(0.02)


def test_a_pool_in_full_use_keeps_its_connections(make_pool):
    """The other half of shrinking: connections all in use at some point in each
    ``max_idle`` interval are not closed (no churn of reconnections)."""
    pool = make_pool(min_size=1, max_size=2, max_idle=0.2)
    held = [pool.getconn(timeout=5) for _ in range(2)]
    for conn in held:
        pool.putconn(conn)
    opened = pool.get_stats()["connections_num"]
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        held = [pool.getconn(timeout=5) for _ in range(2)]
        for conn in held:
            pool.putconn(conn)
        time.sleep(0.01)
    stats = pool.get_stats()
    assert stats["connections_num"] == opened and stats["pool_size"] == 2, stats


def test_threads_hammering_the_pool_never_share_a_connection_or_lose_one(make_pool):
    pool = make_pool(min_size=2, max_size=4, max_idle=0.2)
    in_use: set[int] = set()
    guard = threading.Lock()
    errors: list[str] = []
    rounds = 300

    def worker(seed: int) -> None:
        for i in range(rounds):
            conn = pool.getconn(timeout=10)
            with guard:
                if id(conn) in in_use:
                    errors.append(f"connection {pid(conn)} handed out twice")
                in_use.add(id(conn))
            if (i + seed) % 7 == 0:
                conn.execute("SELECT 1")  # returned in a transaction: rolled back
            elif (i + seed) % 11 == 0:
                time.sleep(0.001)
            with guard:
                in_use.discard(id(conn))
            pool.putconn(conn)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    before = pool.get_stats().get("requests_num", 0)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    # a rollback may still be running
    wait_until(lambda: (st := pool.get_stats())["pool_available"] == st["pool_size"], 5,
               "every connection back in the pool")
    stats = pool.get_stats()
    assert stats["requests_num"] - before == 8 * rounds
    assert 2 <= stats["pool_size"] <= 4
    with pool.connection(timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
