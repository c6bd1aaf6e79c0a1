"""replpool's MySQL pool on a real MariaDB server: waiting, timeouts, growth, lifetime,
idle limits, resets, statistics, and a clean close."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import mysql.connector
import psycopg_pool
import pytest

from replpool._mysqlpool import (
    Connection,
    MySQLPool,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
    socket_ok,
)
from tests.labtools import wait_until

pytestmark = pytest.mark.lab


@pytest.fixture
def server(mariadb_lab: Any) -> Any:
    return mariadb_lab.primary


@pytest.fixture
def make_pool(server: Any) -> Iterator[Any]:
    pools: list[MySQLPool] = []

    def make(**options: Any) -> MySQLPool:
        options.setdefault("name", "test")
        pool = MySQLPool(server.connect_kwargs(), **options)
        pools.append(pool)
        pool.open(wait=options.get("min_size", 4) > 0, timeout=10)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def resets(monkeypatch: pytest.MonkeyPatch) -> list[Connection]:
    """The connections reset (COM_RESET_CONNECTION), in order."""
    seen: list[Connection] = []
    original = Connection.cmd_reset_connection

    def counting(self: Connection) -> bool:
        seen.append(self)
        return original(self)

    monkeypatch.setattr(Connection, "cmd_reset_connection", counting)
    return seen


def scalar(conn: Connection, sql: str, params: Any = None) -> Any:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()[0][0]
    finally:
        cur.close()


def pool_threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"replpool-pool-{name}-")]


# -- opening, statistics ------------------------------------------------------------------


def test_open_waits_for_min_size_connections_and_reports_psycopg_pool_statistics(make_pool):
    pool = make_pool(min_size=3, max_size=5)
    stats = pool.get_stats()
    assert stats["pool_min"] == 3 and stats["pool_max"] == 5
    assert stats["pool_size"] == 3 and stats["pool_available"] == 3
    assert stats["requests_waiting"] == 0
    assert stats["connections_num"] == 3 and stats.get("connections_ms", 0) >= 0
    conn = pool.getconn()
    time.sleep(0.02)
    pool.putconn(conn)
    stats = pool.pop_stats()
    assert stats["requests_num"] == 1 and stats["usage_ms"] >= 20
    assert "requests_num" not in pool.get_stats()  # counters restart after pop_stats()


def test_open_with_wait_times_out_on_a_server_that_is_not_there():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = MySQLPool({"host": "127.0.0.1", "port": port, "user": "x"}, min_size=1, name="nowhere")
    start = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.open(wait=True, timeout=0.5)
    assert time.monotonic() - start < 3
    assert pool.closed and pool.get_stats().get("connections_errors", 0) >= 1
    wait_until(lambda: not pool_threads("nowhere"), 5, "the pool's threads gone")


# -- checkouts --------------------------------------------------------------------------------


def test_idle_connections_are_reused_last_in_first_out(make_pool):
    pool = make_pool(min_size=3)
    a, b, c = pool.getconn(), pool.getconn(), pool.getconn()
    for conn in (a, b, c):
        pool.putconn(conn)
    assert pool.getconn() is c
    assert pool.getconn() is b


def test_a_request_waits_for_a_connection_to_be_returned(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    got: list[Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, 2, "a waiting request")
    time.sleep(0.2)
    pool.putconn(held)
    waiter.join(5)
    assert got == [held]
    stats = pool.get_stats()
    assert stats["requests_queued"] == 1 and stats["requests_wait_ms"] >= 150
    assert stats["requests_waiting"] == 0
    pool.putconn(got[0])


def test_a_request_gives_up_after_its_timeout(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    start = time.monotonic()
    with pytest.raises(PoolTimeout, match="after 0.3 s") as err:
        pool.getconn(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 1.0
    # The cluster catches psycopg_pool's class for both pools.
    assert isinstance(err.value, psycopg_pool.PoolTimeout)
    assert pool.get_stats()["requests_errors"] == 1
    pool.putconn(held)
    pool.putconn(pool.getconn(timeout=0.3))  # and the pool still works


def test_max_waiting_refuses_more_waiting_requests_at_once(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_waiting=1)
    held = pool.getconn()
    got: list[Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, 2, "a waiting request")
    start = time.monotonic()
    with pytest.raises(TooManyRequests) as err:
        pool.getconn(timeout=5)
    assert time.monotonic() - start < 0.1
    assert isinstance(err.value, psycopg_pool.TooManyRequests)
    pool.putconn(held)
    waiter.join(5)
    assert got == [held]
    pool.putconn(got[0])


def test_the_pool_grows_in_the_background_without_blocking_callers(make_pool):
    connecting: list[str] = []

    def slow_configure(conn: Connection) -> None:
        connecting.append(threading.current_thread().name)
        time.sleep(0.5)

    pool = make_pool(min_size=1, max_size=2, configure=slow_configure)
    first = pool.getconn()
    got: list[Connection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    start = time.monotonic()
    waiter.start()
    wait_until(lambda: len(connecting) == 2, 2, "a second connection being made")
    pool.putconn(first)  # the waiting request gets it, without waiting for the connect
    waiter.join(5)
    assert got == [first] and time.monotonic() - start < 0.4
    assert all(name.startswith("replpool-pool-test-worker") for name in connecting)
    wait_until(lambda: pool.get_stats()["pool_available"] == 1, 3, "the new connection idle")
    assert pool.get_stats()["pool_size"] == 2
    pool.putconn(got[0])


def test_the_pool_never_opens_more_than_max_size(make_pool):
    pool = make_pool(min_size=0, max_size=3)
    conns: list[Connection] = []
    lock = threading.Lock()

    def take() -> None:
        conn = pool.getconn(timeout=5)
        with lock:
            conns.append(conn)

    takers = [threading.Thread(target=take) for _ in range(3)]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    assert len({id(c) for c in conns}) == 3
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.2)
    assert pool.get_stats()["pool_size"] == 3
    for conn in conns:
        pool.putconn(conn)


# -- what happens on return --------------------------------------------------------------------


def test_a_transaction_left_open_is_rolled_back_on_return(make_pool, mariadb_lab):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS pool_rb (id int PRIMARY KEY)")
    cur.execute("INSERT INTO pool_rb VALUES (1)")
    assert conn.in_transaction
    pool.putconn(conn)
    conn = pool.getconn()
    assert not conn.in_transaction
    assert scalar(conn, "SELECT count(*) FROM pool_rb") == 0
    conn.cursor().execute("DROP TABLE pool_rb")
    pool.putconn(conn)


def test_a_changed_session_is_reset_before_reuse_and_an_unchanged_one_is_not(make_pool, resets):

    def configure(conn: Connection) -> None:
        conn.cursor().execute("SET SESSION sql_mode = 'ANSI_QUOTES'")

    pool = make_pool(min_size=1, max_size=1, configure=configure)
    conn = pool.getconn()
    thread_id = scalar(conn, "SELECT CONNECTION_ID()")
    scalar(conn, "SELECT 1")
    conn.autocommit = False  # as it is already: nothing sent, nothing changed
    pool.putconn(conn)
    conn = pool.getconn()
    assert resets == []  # reads change nothing: no reset, no round trip
    cur = conn.cursor()
    cur.execute("SET @secret = 42")
    cur.execute("SET SESSION time_zone = '+05:00'")
    conn.autocommit = True
    pool.putconn(conn)
    conn = pool.getconn(timeout=5)
    assert resets == [conn]
    assert scalar(conn, "SELECT CONNECTION_ID()") == thread_id  # reset, not reconnected
    assert scalar(conn, "SELECT @secret") is None
    assert scalar(conn, "SELECT @@session.time_zone") != "+05:00"
    assert scalar(conn, "SELECT @@session.autocommit") == 0 and not conn.autocommit
    assert scalar(conn, "SELECT @@session.sql_mode") == "ANSI_QUOTES"  # configure() again
    pool.putconn(conn)


def test_autocommit_switched_off_and_back_on_costs_no_reset(make_pool, resets):
    """What every Django atomic() block does; left switched, the connection is reset."""
    pool = make_pool(min_size=1, max_size=1, configure=lambda c: setattr(c, "autocommit", True))
    conn = pool.getconn()
    conn.autocommit = False
    scalar(conn, "SELECT 1")
    conn.commit()
    conn.autocommit = True
    pool.putconn(conn)
    conn = pool.getconn(timeout=5)
    assert resets == []
    conn.autocommit = False  # and left so
    pool.putconn(conn)
    conn = pool.getconn(timeout=5)
    assert resets == [conn]
    assert conn.autocommit and scalar(conn, "SELECT @@session.autocommit") == 1
    pool.putconn(conn)


def test_a_schema_change_is_undone_by_the_reset(make_pool, server):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    conn.cursor().execute("USE information_schema")
    pool.putconn(conn)
    conn = pool.getconn(timeout=5)
    assert scalar(conn, "SELECT DATABASE()") == server.database
    pool.putconn(conn)


def test_an_expired_connection_is_replaced(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_lifetime=0.3)
    conn = pool.getconn()
    first = scalar(conn, "SELECT CONNECTION_ID()")
    time.sleep(0.35)
    pool.putconn(conn)
    conn = pool.getconn(timeout=5)
    assert scalar(conn, "SELECT CONNECTION_ID()") != first
    pool.putconn(conn)
    # Idle ones are replaced too, by the pool's maintenance.
    ids = set()
    deadline = time.monotonic() + 3
    while len(ids) < 3 and time.monotonic() < deadline:
        conn = pool.getconn(timeout=5)
        ids.add(scalar(conn, "SELECT CONNECTION_ID()"))
        pool.putconn(conn)
        time.sleep(0.1)
    assert len(ids) >= 3
    assert pool.get_stats()["connections_num"] >= 4


def test_connections_idle_beyond_max_idle_are_closed_down_to_min_size(make_pool):
    pool = make_pool(min_size=1, max_size=4, max_idle=0.3)
    conns = [pool.getconn(timeout=5) for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 4
    wait_until(lambda: pool.get_stats()["pool_size"] == 1, 3, "the pool shrinking to min_size")
    time.sleep(0.5)
    assert pool.get_stats()["pool_size"] == 1
    # The one kept is the one used last.
    assert pool.getconn() is conns[-1]


def test_a_connection_killed_by_the_server_is_seen_without_a_round_trip(make_pool, mariadb_lab, server):
    pool = make_pool(min_size=2, max_size=2)
    conn = pool.getconn()
    assert socket_ok(conn)
    thread_id = scalar(conn, "SELECT CONNECTION_ID()")
    mariadb_lab.query(server, "KILL %s", (thread_id,))
    wait_until(lambda: not socket_ok(conn), 2, "the killed connection seen")
    assert not conn.is_connected()
    pool.putconn(conn)
    stats = pool.get_stats()
    assert stats["returns_bad"] == 1
    wait_until(lambda: pool.get_stats()["pool_available"] == 2, 3, "a replacement")


def test_one_dead_connection_returned_takes_the_dead_idle_ones_with_it(make_pool, mariadb_lab, server):
    pool = make_pool(min_size=3, max_size=3)
    conns = [pool.getconn() for _ in range(3)]
    ids = [scalar(c, "SELECT CONNECTION_ID()") for c in conns]
    for c in conns:
        pool.putconn(c)
    for thread_id in ids[:2]:  # as if the server went away: the two idle longest die
        mariadb_lab.query(server, "KILL %s", (thread_id,))
    wait_until(lambda: not socket_ok(conns[0]) and not socket_ok(conns[1]), 2, "the kills seen")
    first = pool.getconn()
    assert first is conns[2] and socket_ok(first)
    dead = pool.getconn()  # the cluster's checkout would find it dead, and return it
    assert dead is conns[1] and not socket_ok(dead)
    pool.putconn(dead)
    stats = pool.get_stats()
    assert stats["returns_bad"] == 1 and stats["connections_lost"] == 1  # conns[0] too
    pool.putconn(first)
    wait_until(lambda: pool.get_stats()["pool_available"] == 3, 3, "replacements")
    conns = [pool.getconn() for _ in range(3)]
    assert first in conns and all(scalar(c, "SELECT 1") == 1 for c in conns)
    for c in conns:
        pool.putconn(c)


def test_check_replaces_idle_connections_that_died(make_pool, mariadb_lab, server):
    pool = make_pool(min_size=3, max_size=3)
    conns = [pool.getconn() for _ in range(3)]
    ids = [scalar(c, "SELECT CONNECTION_ID()") for c in conns]
    for c in conns:
        pool.putconn(c)
    for thread_id in ids[:2]:
        mariadb_lab.query(server, "KILL %s", (thread_id,))
    time.sleep(0.1)
    pool.check()
    assert pool.get_stats()["connections_lost"] == 2
    wait_until(lambda: pool.get_stats()["pool_available"] == 3, 3, "replacements")
    conns = [pool.getconn() for _ in range(3)]
    assert all(scalar(c, "SELECT 1") == 1 for c in conns)
    for c in conns:
        pool.putconn(c)


# -- closing ---------------------------------------------------------------------------------


def test_close_fails_waiting_requests_and_leaves_no_thread(server):
    pool = MySQLPool(server.connect_kwargs(), min_size=1, max_size=1, name="closing")
    pool.open(wait=True)
    assert len(pool_threads("closing")) == 2
    held = pool.getconn()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn(timeout=10)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1, 2, "a waiting request")
    pool.close()
    waiter.join(2)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    assert pool_threads("closing") == []
    with pytest.raises(PoolClosed):
        pool.getconn()
    pool.putconn(held)  # a connection in use is closed when it comes back
    assert held.closed


def test_connections_use_the_pure_python_driver_and_keep_no_password_in_repr(make_pool, server):
    pool = make_pool(min_size=1)
    conn = pool.getconn()
    assert isinstance(conn, mysql.connector.connection.MySQLConnection)
    for text in (repr(pool), repr(conn)):
        assert server.password not in text
    pool.putconn(conn)
