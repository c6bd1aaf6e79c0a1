"""What replpool costs on each request on MariaDB: the plain driver (a direct connection,
and mysql-connector's own pool) and replpool, side by side on the same lab in one process.

    python benchmarks/overhead_mariadb.py [--seconds 1] [--rounds 5] [--threads 1 4]

Every variant uses mysql-connector-python's pure-Python implementation (replpool always
does; the C extension does not load on Debian 12, see replpool/_mysqlpool.py).

Read path: a one-row SELECT on the same replica (replpool routes to it: it is the only
replica and the session wrote nothing), committed (autocommit is off, as by default).
Write path: a one-row UPDATE on the primary, committed, including what replpool records
for read-your-writes. Variants:

- ``direct, one cursor``: one connection and one cursor per thread, reused: the least
  the driver can do per statement (the baseline of the ratios).
- ``direct, cursor per op``: the same with a new cursor per request, as code usually
  does; the driver pings the server for every new cursor (``is_connected()``).
- ``mysql.connector pool``: the driver's pool (``get_connection()``, ``close()``), which
  resets the session on every return (``pool_reset_session=True``, its default).
- ``replpool``: ``with cluster.connection(read_only=...) as conn`` and a new cursor per
  request (replpool's connections answer ``is_connected()`` without a round trip).

Throughput is the median over interleaved rounds.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import mysql.connector
from mysql.connector import pooling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ThreadSlots, interleaved, pin_cpus, round_arguments, table  # noqa: E402

import replpool  # noqa: E402
from replpool.testing import MariaDBLab  # noqa: E402

ROWS = 1000
BASELINE = "direct, one cursor"


def main(argv: list[str] | None = None) -> int:
    args = round_arguments(__doc__, argv)

    with MariaDBLab(replicas=1) as lab:
        primary, replica = lab.primary, lab.replicas[0]
        lab.query(primary, "CREATE TABLE bench (id int PRIMARY KEY, v int NOT NULL)")
        lab.query(
            primary,
            f"INSERT INTO bench SELECT seq, 0 FROM seq_1_to_{ROWS}",  # MariaDB's sequence engine
        )
        lab.wait_until_caught_up()
        placement = pin_cpus(lab)
        print(f"MariaDB lab: primary {primary.port}, replica {replica.port}; "
              f"{args.rounds} rounds of {args.seconds:g} s; {placement}\n")

        def connect(member: Any) -> Any:
            return mysql.connector.connect(**member.connect_kwargs(), use_pure=True)

        for threads in args.threads:
            size = max(2, threads)
            direct = {
                "primary": [connect(primary) for _ in range(threads)],
                "replica": [connect(replica) for _ in range(threads)],
            }
            cursors = {role: [c.cursor() for c in conns] for role, conns in direct.items()}
            pools = {
                role: pooling.MySQLConnectionPool(
                    pool_name=f"bench-{role}-{threads}", pool_size=size,
                    **m.connect_kwargs(), use_pure=True,
                )
                for role, m in (("primary", primary), ("replica", replica))
            }
            cluster = replpool.Cluster(primary.url, [replica.url], min_size=size, max_size=size)
            cluster.open()
            local = ThreadSlots(threads)
            keys = itertools.count()

            def key() -> int:
                return next(keys) % ROWS + 1

            def one_cursor(role: str, sql: str) -> Any:
                def op() -> None:
                    slot = local.slot()
                    cur = cursors[role][slot]
                    cur.execute(sql, (key(),))
                    if cur.with_rows:
                        cur.fetchall()
                    direct[role][slot].commit()
                return op

            def cursor_per_op(role: str, sql: str) -> Any:
                def op() -> None:
                    conn = direct[role][local.slot()]
                    cur = conn.cursor()
                    cur.execute(sql, (key(),))
                    if cur.with_rows:
                        cur.fetchall()
                    cur.close()
                    conn.commit()
                return op

            def driver_pool(role: str, sql: str) -> Any:
                pool = pools[role]

                def op() -> None:
                    conn = pool.get_connection()
                    try:
                        cur = conn.cursor()
                        cur.execute(sql, (key(),))
                        if cur.with_rows:
                            cur.fetchall()
                        cur.close()
                        conn.commit()
                    finally:
                        conn.close()
                return op

            def replpool_op(read_only: bool, sql: str) -> Any:
                def op() -> None:
                    with cluster.connection(read_only=read_only) as conn:
                        cur = conn.cursor()
                        cur.execute(sql, (key(),))
                        if cur.with_rows:
                            cur.fetchall()
                        cur.close()
                return op

            read = "SELECT v FROM bench WHERE id = %s"
            write = "UPDATE bench SET v = v + 1 WHERE id = %s"
            with replpool.session():
                reads = interleaved(
                    {
                        BASELINE: one_cursor("replica", read),
                        "direct, cursor per op": cursor_per_op("replica", read),
                        "mysql.connector pool": driver_pool("replica", read),
                        "replpool read_only=True": replpool_op(True, read),
                    },
                    rounds=args.rounds, seconds=args.seconds, threads=threads,
                )
            routed = cluster.status().routing
            assert set(routed) == {"replica"}, f"replpool reads went elsewhere: {routed}"
            writes = interleaved(
                {
                    BASELINE: one_cursor("primary", write),
                    "direct, cursor per op": cursor_per_op("primary", write),
                    "mysql.connector pool": driver_pool("primary", write),
                    "replpool (primary)": replpool_op(False, write),
                },
                rounds=args.rounds, seconds=args.seconds, threads=threads,
            )
            print(table(f"read path, {threads} thread(s), replica", reads, BASELINE))
            print(table(f"write path, {threads} thread(s), primary", writes, BASELINE))
            print()
            cluster.close()
            for p in pools.values():
                p._remove_connections()
            for conns in direct.values():
                for c in conns:
                    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
