"""What replpool costs on each request: a direct psycopg connection, a raw psycopg_pool
pool, and replpool, side by side on the same lab in one process.

    python benchmarks/overhead.py [--seconds 1] [--rounds 5] [--threads 1 4]

First, unpinned (client and servers wherever the scheduler puts them, as most
deployments run): the read path with the same connection settings on both sides
(autocommit) and a session per read, as a web request has, replpool against
psycopg_pool. Unpinned, throughput moves by a third from one quarter second to the next
as the scheduler places threads and server processes, so these rounds are short (a
quarter of ``--seconds``), six times as many, in random order, and a second
psycopg_pool variant, the same code as the first, is measured alongside: how far it
lands from 1.0 is how far this measurement can be trusted (the mean over all rounds is
printed too). Then, with the client pinned to one CPU and the servers to the others
(ratios that hold still from run to run): the read path, a one-row SELECT on the same
replica (replpool routes to it: it is the only replica and the session wrote nothing),
and the write path, a one-row UPDATE on the primary, including what replpool records for
read-your-writes. Throughput is the median over interleaved rounds; ratios > 1 mean
faster than the raw pool.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ThreadSlots,
    interleaved,
    mean_ratios,
    pin_cpus,
    round_arguments,
    table,
)

import replpool  # noqa: E402
from replpool.testing import PostgresLab  # noqa: E402

ROWS = 1000


def main(argv: list[str] | None = None) -> int:
    args = round_arguments(__doc__, argv)

    with PostgresLab(replicas=1) as lab:
        primary, replica = lab.primary, lab.replicas[0]
        with psycopg.connect(primary.dsn, autocommit=True) as c:
            c.execute("CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL)")
            c.execute("INSERT INTO bench SELECT g, 0 FROM generate_series(1, %s) g", (ROWS,))
        lab.wait_until_caught_up()
        read = "SELECT v FROM bench WHERE id = %s"
        print(f"PostgreSQL lab: primary {primary.port}, replica {replica.port}; "
              f"{args.rounds} rounds of {args.seconds:g} s\n")
        for threads in args.threads:
            size = max(2, threads)
            key = _Keys()
            pool = psycopg_pool.ConnectionPool(replica.dsn, min_size=size, max_size=size,
                                               kwargs={"autocommit": True}, open=True)
            pool.wait()
            cluster = replpool.Cluster(primary.url, [replica.url], min_size=size, max_size=size,
                                       pool_options={"kwargs": {"autocommit": True}}, name="unpinned")
            cluster.open()

            def pool_read() -> None:
                with pool.connection() as conn:
                    conn.execute(read, (key.next(),)).fetchall()

            def replpool_read() -> None:
                with replpool.session(), cluster.connection(read_only=True) as conn:
                    conn.execute(read, (key.next(),)).fetchall()

            unpinned = interleaved(
                {
                    "psycopg_pool": pool_read,
                    "psycopg_pool again (A/A)": pool_read,  # the A/A control: the same code
                    "replpool, a session per read": replpool_read,
                },
                rounds=args.rounds * 6, seconds=args.seconds / 4, threads=threads, seed=0,
            )
            routed = cluster.status().routing
            assert set(routed) == {"replica"}, f"replpool reads went elsewhere: {routed}"
            print(table(f"read path, unpinned, autocommit, {threads} thread(s), replica", unpinned, "psycopg_pool"))
            print(mean_ratios(unpinned, "psycopg_pool"))
            cluster.close()
            pool.close()
        print()
        placement = pin_cpus(lab)
        print(f"pinned: {placement}\n")
        for threads in args.threads:
            size = max(2, threads)
            direct = {
                "primary": [psycopg.connect(primary.dsn) for _ in range(threads)],
                "replica": [psycopg.connect(replica.dsn) for _ in range(threads)],
            }
            pools = {
                role: psycopg_pool.ConnectionPool(m.dsn, min_size=size, max_size=size, open=True)
                for role, m in (("primary", primary), ("replica", replica))
            }
            for p in pools.values():
                p.wait()
            cluster = replpool.Cluster(primary.url, [replica.url], min_size=size, max_size=size)
            cluster.open()
            local = ThreadSlots(threads)
            key = _Keys()

            def direct_op(role: str, sql: str) -> Any:
                def op() -> None:
                    conn = direct[role][local.slot()]
                    conn.execute(sql, (key.next(),)).fetchall() if "SELECT" in sql else conn.execute(sql, (key.next(),))
                    conn.commit()
                return op

            def pool_op(role: str, sql: str) -> Any:
                pool = pools[role]

                def op() -> None:
                    with pool.connection() as conn:
                        cur = conn.execute(sql, (key.next(),))
                        if cur.description:
                            cur.fetchall()
                return op

            def replpool_op(read_only: bool, sql: str) -> Any:
                def op() -> None:
                    with cluster.connection(read_only=read_only) as conn:
                        cur = conn.execute(sql, (key.next(),))
                        if cur.description:
                            cur.fetchall()
                return op

            write = "UPDATE bench SET v = v + 1 WHERE id = %s"
            with replpool.session():
                reads = interleaved(
                    {
                        "direct connection": direct_op("replica", read),
                        "psycopg_pool": pool_op("replica", read),
                        "replpool read_only=True": replpool_op(True, read),
                    },
                    rounds=args.rounds, seconds=args.seconds, threads=threads,
                )
            routed = cluster.status().routing
            assert set(routed) == {"replica"}, f"replpool reads went elsewhere: {routed}"
            writes = interleaved(
                {
                    "direct connection": direct_op("primary", write),
                    "psycopg_pool": pool_op("primary", write),
                    "replpool (primary)": replpool_op(False, write),
                },
                rounds=args.rounds, seconds=args.seconds, threads=threads,
            )
            print(table(f"read path, {threads} thread(s), replica", reads, "psycopg_pool"))
            print(table(f"write path, {threads} thread(s), primary", writes, "psycopg_pool"))
            print()
            cluster.close()
            for p in pools.values():
                p.close()
            for conns in direct.values():
                for c in conns:
                    c.close()
    return 0


class _Keys:
    def __init__(self) -> None:
        import itertools

        self._it = itertools.count()

    def next(self) -> int:
        return next(self._it) % ROWS + 1


if __name__ == "__main__":
    sys.exit(main())
