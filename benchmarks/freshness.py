"""How soon a session's reads return to a replica after its write, and how often a
read that may wait (causal_wait) ends on a replica.

    python benchmarks/freshness.py [--trials 200] [--engine postgresql|mariadb]

One healthy replica. Each trial is a new session that writes one row, then reads every
millisecond until a read is served by a replica; the time from the write's return to
that read is recorded. Then each trial writes and makes one read with
``causal_wait=0.02``. Both run side by side, trial by trial, for two ways of learning
freshness:

- "schedule only": the monitor's polls every 0.1 s, busy or idle, nothing else (what
  replpool did before reads could ask for a poll);
- "on demand" (replpool now): a read that finds no replica known to be fresh enough asks
  for a poll round at once (coalesced, at most one every 5 ms).

The distribution is printed (median, p90, p99, max); ratios need no pinning here.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from typing import Any

import replpool
from replpool.testing import MariaDBLab, PostgresLab


def quantiles(values: list[float]) -> str:
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * len(v)))]

    return (f"median {statistics.median(v):6.1f}  p90 {q(0.9):6.1f}  p99 {q(0.99):6.1f}  "
            f"max {v[-1]:6.1f} ms")


def first_replica_read(cluster: replpool.Cluster, table: str, is_replica: str, n: int) -> float:
    """Milliseconds from a write's return to the first read a replica served."""
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (%s)", (n,))
        wrote = time.monotonic()
        while True:
            with cluster.connection(read_only=True) as conn:
                cur = conn.cursor()
                cur.execute(is_replica)
                on_replica = bool(cur.fetchall()[0][0])
                cur.close()
            if on_replica:
                return (time.monotonic() - wrote) * 1000
            time.sleep(0.001)


def waited_read(cluster: replpool.Cluster, table: str, n: int) -> None:
    """Write, then one read that may wait (the cluster's causal_wait); never stale."""
    with replpool.session():
        cluster.query(f"INSERT INTO {table} VALUES (%s)", (n,))
        with cluster.connection(read_only=True) as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT count(*) FROM {table} WHERE id = %s", (n,))
            assert cur.fetchall()[0][0] == 1, "a stale read"
            cur.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--engine", choices=["postgresql", "mariadb"], default="postgresql")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    lab_class: Any = PostgresLab if args.engine == "postgresql" else MariaDBLab
    is_replica = "SELECT pg_is_in_recovery()" if args.engine == "postgresql" else "SELECT @@read_only"
    with lab_class(replicas=1) as lab:
        make = "CREATE TABLE fresh (id integer PRIMARY KEY)"
        lab.query(lab.primary, make)
        lab.query(lab.primary, make.replace("fresh", "waited"))
        if args.engine == "postgresql":
            lab.query(lab.primary, "ALTER TABLE fresh OWNER TO app")
            lab.query(lab.primary, "ALTER TABLE waited OWNER TO app")
        lab.wait_until_caught_up()
        urls = (lab.primary.url, [r.url for r in lab.replicas])
        variants = {
            "schedule only": replpool.Cluster(*urls, name="schedule", monitor_idle_interval=0.1,
                                              monitor_demand_interval=None),
            "on demand": replpool.Cluster(*urls, name="demand"),
        }
        waiting = {
            "schedule only": replpool.Cluster(*urls, name="schedule_w", causal_wait=0.02,
                                              monitor_idle_interval=0.1, monitor_demand_interval=None),
            "on demand": replpool.Cluster(*urls, name="demand_w", causal_wait=0.02),
        }
        for c in [*variants.values(), *waiting.values()]:
            c.open()
        first: dict[str, list[float]] = {name: [] for name in variants}
        on_replica: dict[str, int] = {name: 0 for name in variants}
        n = 0
        for trial in range(args.trials):
            order = list(variants) if trial % 2 == 0 else list(reversed(variants))
            for name in order:
                n += 1
                first[name].append(first_replica_read(variants[name], "fresh", is_replica, n))
                c = waiting[name]
                before = c.status().routing.get("replica", {}).get("waited_replica", 0)
                waited_read(c, "waited", n)
                on_replica[name] += c.status().routing.get("replica", {}).get("waited_replica", 0) > before
                time.sleep(0.005)
        print(f"{args.engine} lab, one healthy replica, {args.trials} trials per variant\n")
        print("first read served by a replica after a write (reads every 1 ms):")
        for name, values in first.items():
            print(f"  {name:<14} {quantiles(values)}")
        print("\nreads with causal_wait=0.02 right after a write, served by a replica:")
        for name, count in on_replica.items():
            print(f"  {name:<14} {count} of {args.trials} ({100 * count / args.trials:.0f}%)")
        for c in [*variants.values(), *waiting.values()]:
            c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
