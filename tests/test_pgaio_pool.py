"""replpool's asyncio PostgreSQL pool (psycopg_pool's AsyncConnectionPool, last-in
first-out, with a short checkout path) on a real server: everything the short path
skips must still happen.

As tests/test_pg_pool.py does for the thread pool, each behaviour runs twice: with the
short path as the installed psycopg_pool gets it, and with it turned off (psycopg_pool's
own code throughout), so a difference between the two shows up as one failing
variant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

from replpool import _pg
from replpool._pgaio import AsyncLifoConnectionPool

pytestmark = pytest.mark.lab

Make = Callable[..., Awaitable[AsyncLifoConnectionPool]]
Run = Callable[[Callable[[Make], Awaitable[None]]], None]


@pytest.fixture(params=["short path", "psycopg_pool's path"])
def run(request: pytest.FixtureRequest, postgres_lab: Any) -> Iterator[Run]:
    """``run(body)``: ``asyncio.run(body(make))``, ``make(**options)`` opening a pool on
    the lab's primary (closed after the body)."""
    short = request.param == "short path"

    def go(body: Callable[[Make], Awaitable[None]]) -> None:
        async def main() -> None:
            pools: list[AsyncLifoConnectionPool] = []

            async def make(**options: Any) -> AsyncLifoConnectionPool:
                options.setdefault("min_size", 2)
                pool = AsyncLifoConnectionPool(postgres_lab.primary.dsn, open=False, **options)
                if not short:
                    pool._fast_get = pool._fast_put = False
                pools.append(pool)
                await pool.open(wait=True, timeout=10)
                return pool

            try:
                await body(make)
            finally:
                for pool in pools:
                    await pool.close()

        asyncio.run(main())

    yield go


def pid(conn: Any) -> int:
    return int(conn.info.backend_pid)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_the_short_path_is_on_only_where_it_was_checked_and_needs_no_callbacks():
    on = _pg.FAST_PATH

    def flags(**options: Any) -> tuple[bool, bool]:
        pool = AsyncLifoConnectionPool("", open=False, **options)
        return pool._fast_get, pool._fast_put

    async def check(conn: Any) -> None:
        pass

    assert flags() == (on, on)
    assert flags(check=check) == (False, on)
    assert flags(reset=check) == (on, False)


def test_the_connection_returned_last_is_handed_out_first(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=3, max_size=3)
        a, b = await pool.getconn(), await pool.getconn()
        await pool.putconn(a)
        await pool.putconn(b)
        for _ in range(5):
            c = await pool.getconn()
            assert pid(c) == pid(b)
            await pool.putconn(c)

    run(body)


def test_every_connection_entering_the_idle_pool_is_stamped_with_the_time(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        await asyncio.sleep(0.01)
        before = time.monotonic()
        await pool.putconn(conn)
        assert before <= conn._replpool_returned <= time.monotonic()
        await pool.check()  # checked connections go back in too
        assert conn._replpool_returned > before

    run(body)


def test_requests_and_waits_are_counted(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        before = pool.get_stats()

        async def use() -> None:
            async with pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")

        await asyncio.gather(*(use() for _ in range(7)))
        stats = pool.get_stats()
        assert stats["requests_num"] - before.get("requests_num", 0) == 7
        # One connection for seven tasks: all but the first queued.
        assert stats["requests_queued"] - before.get("requests_queued", 0) == 6
        assert stats["pool_available"] == stats["pool_size"] == 1
        assert stats.get("requests_waiting", 0) == 0

    run(body)


def test_a_waiting_client_gets_the_returned_connection(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        waiter = asyncio.ensure_future(pool.getconn(timeout=5))
        await until(lambda: pool.get_stats().get("requests_waiting", 0) == 1, "the second client waiting")
        await pool.putconn(conn)
        got = await asyncio.wait_for(waiter, 5)
        assert got is conn
        await pool.putconn(got)
        assert pool.get_stats()["pool_available"] == 1

    run(body)


def test_a_wait_that_times_out_raises_and_loses_no_connection(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        with pytest.raises(psycopg_pool.PoolTimeout, match="after 0.05 sec"):
            await pool.getconn(timeout=0.05)
        assert pool.get_stats().get("requests_waiting", 0) == 0
        await pool.putconn(conn)  # the timed-out client is skipped: back to the pool
        assert pool.get_stats()["pool_available"] == 1
        again = await pool.getconn(timeout=1)
        assert again is conn
        await pool.putconn(again)

    run(body)


def test_a_cancelled_wait_loses_no_connection(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        waiter = asyncio.ensure_future(pool.getconn(timeout=5))
        await until(lambda: pool.get_stats().get("requests_waiting", 0) == 1, "the second client waiting")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await pool.putconn(conn)
        assert pool.get_stats()["pool_available"] == 1

        # Cancelled after the connection was given, before the client ran: the
        # connection goes back to the pool.
        conn = await pool.getconn()
        waiter = asyncio.ensure_future(pool.getconn(timeout=5))
        await until(lambda: pool.get_stats().get("requests_waiting", 0) == 1, "the second client waiting")
        await pool.putconn(conn)
        waiter.cancel()
        try:
            got = await waiter  # psycopg_pool's path: the client may have run already
        except asyncio.CancelledError:
            pass
        else:
            assert got is conn
            await pool.putconn(got)
        await until(lambda: pool.get_stats()["pool_available"] == 1, "the connection back in the pool")
        async with pool.connection(timeout=5) as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)

    run(body)


def test_a_connection_past_its_lifetime_is_replaced_on_return(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1, max_lifetime=0.5)
        conn = await pool.getconn()
        first = pid(conn)
        await asyncio.sleep(0.6)
        await pool.putconn(conn)
        assert conn.closed
        async with pool.connection(timeout=5) as conn:
            assert pid(conn) != first

    run(body)


def test_a_connection_returned_in_a_transaction_is_rolled_back(run, postgres_lab):
    with psycopg.connect(postgres_lab.primary.dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS apool_rollback (v int)")
        admin.execute("TRUNCATE apool_rollback")

    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        await conn.execute("INSERT INTO apool_rollback VALUES (1)")
        await pool.putconn(conn)  # in a transaction: the pool rolls it back
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT count(*) FROM apool_rollback")).fetchone()) == (0,)

    run(body)


def test_a_broken_connection_is_replaced(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        first = pid(conn)
        await conn.close()
        await pool.putconn(conn)
        async with pool.connection(timeout=5) as conn:
            assert pid(conn) != first and not conn.closed
        assert pool.get_stats().get("returns_bad") == 1

    run(body)


def test_callbacks_run_on_each_checkout_and_return(run):
    seen: list[str] = []

    async def check(conn: Any) -> None:
        seen.append("check")

    async def reset(conn: Any) -> None:
        seen.append("reset")

    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1, check=check, reset=reset)
        for _ in range(3):
            async with pool.connection():
                pass
        await until(lambda: seen.count("reset") >= 3, "three resets, run by the pool's worker")
        assert seen.count("check") == 3

    run(body)


def test_a_closed_pool_hands_out_nothing_and_closes_what_comes_back(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=1, max_size=1)
        conn = await pool.getconn()
        await pool.close()
        with pytest.raises(psycopg_pool.PoolClosed):
            await pool.getconn()
        await pool.putconn(conn)
        assert conn.closed

    run(body)


def test_tasks_hammering_the_pool_never_share_a_connection_or_lose_one(run):
    async def body(make: Make) -> None:
        pool = await make(min_size=2, max_size=4, max_idle=0.2)
        in_use: set[int] = set()
        errors: list[str] = []
        rounds = 200

        async def worker(seed: int) -> None:
            for i in range(rounds):
                conn = await pool.getconn(timeout=10)
                if id(conn) in in_use:
                    errors.append(f"connection {pid(conn)} handed out twice")
                in_use.add(id(conn))
                if (i + seed) % 7 == 0:
                    await conn.execute("SELECT 1")  # returned in a transaction: rolled back
                elif (i + seed) % 11 == 0:
                    await asyncio.sleep(0.001)
                in_use.discard(id(conn))
                await pool.putconn(conn)

        before = pool.get_stats().get("requests_num", 0)
        await asyncio.gather(*(worker(n) for n in range(12)))
        assert not errors, errors[:3]
        await until(lambda: (st := pool.get_stats())["pool_available"] == st["pool_size"],
                    "every connection back in the pool")
        stats = pool.get_stats()
        assert stats["requests_num"] - before == 12 * rounds
        assert 2 <= stats["pool_size"] <= 4
        async with pool.connection(timeout=5) as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)

    run(body)
