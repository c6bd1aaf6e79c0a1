"""What only the asyncio front has: tasks sharing sessions, waits that leave the event
loop free, the engines it supports. (The routing, session, fault and status tests of
tests/test_cluster.py run on both fronts.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import replpool
from replpool import Reason
from tests.engines import POSTGRESQL
from tests.labtools import wait_until

FAST = {"monitor_interval": 0.05, "probe_timeout": 0.5, "connect_timeout": 2}


def make(lab: Any, **options: Any) -> replpool.AsyncCluster:
    return replpool.AsyncCluster(lab.primary.url, [r.url for r in lab.replicas], **{**FAST, **options})


@pytest.fixture
def table(postgres_lab: Any) -> Any:
    name = POSTGRESQL.table()
    postgres_lab.query(postgres_lab.primary, POSTGRESQL.create_table_sql(name))
    postgres_lab.query(postgres_lab.primary, f"GRANT ALL ON {name} TO {postgres_lab.primary.user}")
    postgres_lab.wait_until_caught_up()
    yield name
    postgres_lab.heal()
    postgres_lab.query(postgres_lab.primary, f"DROP TABLE {name}")


# -- no servers ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://app:pw@db1/app", "mariadb://app:pw@db1:3307/app"])
def test_mysql_and_mariadb_urls_are_refused_with_what_to_use_instead(url):
    with pytest.raises(replpool.ConfigurationError, match="AsyncCluster supports PostgreSQL only") as err:
        replpool.AsyncCluster(url, [url.replace("db1", "db2")])
    assert "replpool.Cluster" in str(err.value) and "asyncio.to_thread" in str(err.value)
    assert "pw" not in str(err.value)
    with pytest.raises(replpool.ConfigurationError, match="PostgreSQL only"):
        replpool.AsyncCluster("host=db1 dbname=app", driver="mysql")


def test_the_arguments_are_checked_as_clusters_are():
    with pytest.raises(replpool.ConfigurationError, match="causal_wait must be >= 0"):
        replpool.AsyncCluster("postgresql://app@db1/app", causal_wait=-1)
    with pytest.raises(replpool.ConfigurationError, match="replica_selection must be one of"):
        replpool.AsyncCluster("postgresql://app@db1/app", replica_selection="nearest")


def test_a_cluster_not_opened_says_how_to_open_it():
    c = replpool.AsyncCluster("postgresql://app@db1/app", ["postgresql://app@db2/app"])

    async def read() -> None:
        await c.query("SELECT 1", read_only=True)

    with pytest.raises(replpool.Error, match=r"not open: use 'async with cluster:' or await cluster.open\(\)"):
        asyncio.run(read())
    assert repr(c).startswith("<replpool.AsyncCluster 'default' postgresql not opened")


# -- on the lab --------------------------------------------------------------------------------

on_lab = pytest.mark.lab


@on_lab
def test_a_task_observes_the_writes_of_the_tasks_it_awaited(postgres_lab, table):
    """No explicit session: the thread's implicit one is shared by its tasks, so a
    count after ``gather`` sees both rows although no replica has them."""
    lab = postgres_lab
    for r in lab.replicas:
        lab.pause_replication(r)

    async def main() -> tuple[int, int, int]:
        async with make(lab) as c:
            async def insert(i: int) -> None:
                await c.query(f"INSERT INTO {table} VALUES (%s, 'x')", (i,))

            await asyncio.gather(insert(1), insert(2))
            after_gather = (await c.query(f"SELECT count(*) FROM {table}", read_only=True))[0][0]
            task = asyncio.create_task(insert(3))
            await task
            after_task = (await c.query(f"SELECT count(*) FROM {table}", read_only=True))[0][0]
            async with asyncio.TaskGroup() as group:
                group.create_task(insert(4))
            after_group = (await c.query(f"SELECT count(*) FROM {table}", read_only=True))[0][0]
            return after_gather, after_task, after_group

    assert asyncio.run(main()) == (2, 3, 4)


@on_lab
def test_tasks_of_one_explicit_session_read_each_others_writes(postgres_lab, table):
    lab = postgres_lab
    for r in lab.replicas:
        lab.pause_replication(r)

    async def main() -> tuple[list[int], int]:
        async with make(lab) as c:
            async def user(i: int) -> int:
                await c.query(f"INSERT INTO {table} VALUES (%s, 'x')", (i,))
                return (await c.query(f"SELECT count(*) FROM {table} WHERE id = %s", (i,), read_only=True))[0][0]

            with replpool.session():
                seen = list(await asyncio.gather(*(user(i) for i in range(20))))
                total = (await c.query(f"SELECT count(*) FROM {table}", read_only=True))[0][0]
            return seen, total

    assert asyncio.run(main()) == ([1] * 20, 20)


@on_lab
def test_waiting_for_a_replica_leaves_the_event_loop_free(postgres_lab, table):
    """A read that waits (causal_wait) for a replica that never catches up: meanwhile
    other tasks run, at their pace."""
    lab = postgres_lab
    for r in lab.replicas:
        lab.pause_replication(r)

    async def main() -> tuple[float, int, dict[str, dict[str, int]]]:
        async with make(lab, causal_wait=0.5) as c:
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    ticks += 1

            with replpool.session():
                await c.query(f"INSERT INTO {table} VALUES (1, 'x')")
                running = asyncio.create_task(ticker())
                start = time.monotonic()
                await c.query(f"SELECT count(*) FROM {table}", read_only=True)
                took = time.monotonic() - start
                stop.set()
                await running
            return took, ticks, c.status().routing

    took, ticks, routing = asyncio.run(main())
    assert took >= 0.5
    # One tick every 10 ms while the read waited (a blocked loop would give none).
    assert ticks >= 0.5 * took / 0.01, (ticks, took)
    assert routing["primary"].get(Reason.WAITED_PRIMARY.value) == 1, routing


@on_lab
def test_waiting_for_a_primary_leaves_the_event_loop_free(postgres_lab, table):
    lab = postgres_lab

    async def main() -> tuple[float, int]:
        async with make(lab, failover_wait=0.5) as c:
            lab.kill(lab.primary)
            while c.status().primary is not None:
                await asyncio.sleep(0.01)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            running = asyncio.create_task(ticker())
            start = time.monotonic()
            with pytest.raises(replpool.NoPrimaryAvailable, match="no reachable primary after waiting 0.5 s"):
                await c.query(f"INSERT INTO {table} VALUES (1, 'x')")
            took = time.monotonic() - start
            running.cancel()
            return took, ticks

    try:
        took, ticks = asyncio.run(main())
    finally:
        lab.start(lab.primary)
    assert took >= 0.5
    assert ticks >= 0.5 * took / 0.01, (ticks, took)
    wait_until(lambda: bool(lab.query(lab.primary, "SELECT 1")), 10, "the primary back")


@on_lab
def test_a_frozen_replica_cuts_its_waiting_readers_and_the_read_runs_elsewhere(postgres_lab, table):
    """A reader awaiting a frozen replica's answer is cut when the monitor marks the
    replica down (probe_timeout), and query() runs the read again elsewhere."""
    lab = postgres_lab
    victim = lab.replicas[0]

    async def main() -> tuple[list[Any], float]:
        only = replpool.AsyncCluster(lab.primary.url, [victim.url], **FAST)
        async with only as c:
            with replpool.consistency("eventual"):
                await c.query("SELECT 1", read_only=True)  # a pooled replica connection
                lab.freeze(victim)
                start = time.monotonic()
                rows = await c.query(f"SELECT count(*) FROM {table}", read_only=True)
                return rows, time.monotonic() - start

    try:
        rows, took = asyncio.run(main())
    finally:
        lab.thaw(victim)
    assert rows == [(0,)]
    assert took < FAST["probe_timeout"] + 1.5, took


@on_lab
def test_every_connection_entering_the_idle_pool_is_stamped_with_the_time(postgres_lab):
    """As the thread pool's (tests/test_pg_pool.py): the stamp that lets
    PostgresEngine.alive skip its check for a connection back for less than 1 ms."""
    from replpool._pgaio import AsyncLifoConnectionPool

    async def main() -> None:
        before = time.monotonic()
        pool = AsyncLifoConnectionPool(postgres_lab.primary.dsn, min_size=1, max_size=1, open=False)
        await pool.open(wait=True, timeout=10)
        try:
            conn = await pool.getconn()
            assert before <= conn._replpool_returned <= time.monotonic()  # new: stamped when added
            await asyncio.sleep(0.01)
            before = time.monotonic()
            await pool.putconn(conn)
            assert before <= conn._replpool_returned <= time.monotonic()
        finally:
            await pool.close()

    asyncio.run(main())


@on_lab
@pytest.mark.parametrize("short", [True, False], ids=["short path", "psycopg_pool's path"])
def test_tasks_queueing_for_connections_each_get_their_own_and_every_checkout_is_counted(
    postgres_lab, table, short
):
    """Many tasks over pools of two: reads and writes queue for connections. With the
    pools' short path (connections taken and handed back without a coroutine) and
    without it (psycopg_pool's own getconn/putconn), the same: no connection used by two
    tasks at once, every checkout counted and observed, every connection back after."""
    from replpool import _observe

    class Waits(_observe.Observer):
        def __init__(self) -> None:
            self.waits: list[tuple[str, float]] = []

        def checkout_waited(self, cluster: str, member: str, seconds: float) -> None:
            self.waits.append((member, seconds))

    async def main() -> tuple[list[str], dict[str, Any], list[dict[str, int]]]:
        async with make(postgres_lab, min_size=2, max_size=2, name="queue") as c:
            for m in c._members:
                await c._open_member(m.index)
                await m.pool.wait()
                if not short:
                    m.pool._fast_get = m.pool._fast_put = False
            in_use: set[int] = set()
            errors: list[str] = []

            async def worker(n: int) -> None:
                for i in range(20):
                    read_only = (n + i) % 3 != 0
                    async with c.connection(read_only=read_only) as conn:
                        if id(conn) in in_use:
                            errors.append(f"a connection used by two tasks at once (task {n})")
                        in_use.add(id(conn))
                        if read_only:
                            await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchall()
                        else:
                            await conn.execute(f"INSERT INTO {table} (id) VALUES (%s)", (n * 100 + i,))
                        in_use.discard(id(conn))

            with replpool.session():
                await asyncio.gather(*(worker(n) for n in range(15)))
            return errors, c.status().reads_by_level, [m.pool.get_stats() for m in c._members]

    observer = Waits()
    _observe.add_observer(observer)
    try:
        errors, reads, stats = asyncio.run(main())
    finally:
        _observe.remove_observer(observer)
    assert not errors, errors[:3]
    assert len(observer.waits) == 15 * 20 and all(s >= 0 for _, s in observer.waits)
    expected_reads = sum(1 for n in range(15) for i in range(20) if (n + i) % 3 != 0)
    assert sum(sum(by_target.values()) for by_target in reads.values()) == expected_reads
    for s in stats:
        assert s["pool_available"] == s["pool_size"] == 2, s
