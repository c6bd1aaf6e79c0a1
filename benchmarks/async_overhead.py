"""What replpool's asyncio front costs on each request: a raw psycopg_pool
``AsyncConnectionPool`` and ``replpool.AsyncCluster`` on the same members, side by side
in one process, at 1 and 50 concurrent tasks.

    python benchmarks/async_overhead.py [--seconds 1] [--rounds 5] [--tasks 1 50] [--size 10]

Read path: a one-row SELECT on the replica (the cluster routes to it: it is the only
replica and the session wrote nothing). Write path: a one-row UPDATE on the primary,
including what replpool records for read-your-writes. Both pools of a variant hold
``--size`` connections (10: at 50 tasks, tasks queue for connections, as they do in a
busy service). Throughput is the median over interleaved rounds; ratios > 1 mean faster
than the raw pool.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ainterleaved, pin_cpus, table  # noqa: E402

import replpool  # noqa: E402
from replpool.testing import PostgresLab  # noqa: E402

ROWS = 1000
READ = "SELECT v FROM bench WHERE id = %s"
WRITE = "UPDATE bench SET v = v + 1 WHERE id = %s"


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round (1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (5)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--size", type=int, default=10, help="connections per member pool (10)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args


async def run(lab: Any, args: argparse.Namespace) -> None:
    primary, replica = lab.primary, lab.replicas[0]
    keys = itertools.count()

    def key() -> int:
        return next(keys) % ROWS + 1

    pools = {
        role: psycopg_pool.AsyncConnectionPool(m.dsn, min_size=args.size, max_size=args.size, open=False)
        for role, m in (("primary", primary), ("replica", replica))
    }
    for p in pools.values():
        await p.open(wait=True)
    cluster = replpool.AsyncCluster(primary.url, [replica.url], min_size=args.size, max_size=args.size)
    await cluster.open()
    for m in cluster._members:  # full pools on both sides before the first round
        assert m.pool is not None
        await cluster._open_member(m.index)
        await m.pool.wait()  # type: ignore[attr-defined]

    def pool_op(role: str, sql: str) -> Any:
        pool = pools[role]

        async def op() -> None:
            async with pool.connection() as conn:
                cur = await conn.execute(sql, (key(),))
                if cur.description:
                    await cur.fetchall()
        return op

    def cluster_op(read_only: bool, sql: str) -> Any:
        async def op() -> None:
            async with cluster.connection(read_only=read_only) as conn:
                cur = await conn.execute(sql, (key(),))
                if cur.description:
                    await cur.fetchall()
        return op

    try:
        for tasks in args.tasks:
            with replpool.session():
                reads = await ainterleaved(
                    {"AsyncConnectionPool": pool_op("replica", READ),
                     "AsyncCluster read_only=True": cluster_op(True, READ)},
                    rounds=args.rounds, seconds=args.seconds, tasks=tasks,
                )
            reads_went = cluster.status().reads_by_level
            assert set(reads_went["session"]) == {"replica"}, f"replpool reads went elsewhere: {reads_went}"
            with replpool.session():
                writes = await ainterleaved(
                    {"AsyncConnectionPool": pool_op("primary", WRITE),
                     "AsyncCluster (primary)": cluster_op(False, WRITE)},
                    rounds=args.rounds, seconds=args.seconds, tasks=tasks,
                )
            print(table(f"read path, {tasks} task(s), replica", reads, "AsyncConnectionPool"))
            print(table(f"write path, {tasks} task(s), primary", writes, "AsyncConnectionPool"))
            print(flush=True)
    finally:
        await cluster.close()
        for p in pools.values():
            await p.close()


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    with PostgresLab(replicas=1) as lab:
        with psycopg.connect(lab.primary.dsn, autocommit=True) as c:
            c.execute("CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL)")
            c.execute("INSERT INTO bench SELECT g, 0 FROM generate_series(1, %s) g", (ROWS,))
        lab.wait_until_caught_up()
        placement = pin_cpus(lab)
        print(f"PostgreSQL lab: primary {lab.primary.port}, replica {lab.replicas[0].port}; "
              f"{args.rounds} rounds of {args.seconds:g} s; pools of {args.size}; {placement}\n")
        asyncio.run(run(lab, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
