"""What replpool costs a fleet of processes: statements a second and connections on
each member, counted by the servers themselves.

    python benchmarks/monitor_cost.py [--processes 10] [--seconds 5] [--engine postgresql|mariadb]

A lab with a primary and one replica. First N idle processes, each with a Cluster open
and nothing to do (a web worker between requests); then N more, busy ones, each doing a
session with a write and three reads in a loop (a request), beside the idle ones. For
each phase and member: statements a second as the server counts them (PostgreSQL:
``pg_stat_statements``, the user's calls; MariaDB: ``Questions``), the busy processes'
own statements, what remains (the monitors' polls), and the connections open on the
member (``pg_stat_activity``, ``Threads_connected``), per process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import replpool
from replpool.testing import MariaDBLab, PostgresLab


def worker(mode: str, primary: str, replica: str, seconds: float) -> int:
    """One process of the fleet: prints how many statements it ran itself."""
    logging.basicConfig(level=logging.ERROR)
    own = 0
    with replpool.Cluster(primary, [replica], name="fleet") as cluster:
        print("ready", flush=True)
        started = time.monotonic()
        deadline = started + seconds
        if mode == "idle":
            time.sleep(seconds)
        else:
            n = os.getpid() * 1000
            while time.monotonic() < deadline:
                with replpool.session():
                    n += 1
                    cluster.query("UPDATE fleet SET v = v + 1 WHERE id = %s", (n % 100,))
                    for _ in range(3):
                        cluster.query("SELECT v FROM fleet WHERE id = %s", (n % 100,), read_only=True)
                    own += 4
                time.sleep(0.01)
    print(json.dumps({"own": own, "seconds": time.monotonic() - started}), flush=True)
    return 0


def counters(lab: Any, engine: str) -> dict[str, tuple[int, int | None, int]]:
    """Per member: (statements so far, of which the monitors' polls (PostgreSQL only),
    connections open now), as the server counts them."""
    out: dict[str, tuple[int, int | None, int]] = {}
    for m in lab.members:
        if engine == "postgresql":
            # pg_stat_statements counts each call as it ends (pg_stat_database's counters
            # reach the view up to seconds late from idle connections), and tells the
            # monitor's poll by its text.
            (stmts, polls, conns), = lab.query(
                m, "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER ("
                   "WHERE query LIKE '%pg_postmaster_start_time()%'), 0),"
                   " (SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' AND usename = 'app')"
                   " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'app'")
            out[m.name] = (int(stmts), int(polls), int(conns))
        else:
            rows = dict(lab.query(m, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Threads_connected')"))
            out[m.name] = (int(rows["Questions"]), None, int(rows["Threads_connected"]) - 1)  # -1: ours
    return out


def phase(lab: Any, engine: str, procs: list[subprocess.Popen[str]], seconds: float, title: str,
          per_process: int) -> list[subprocess.Popen[str]]:
    time.sleep(1.5)  # past the processes' start
    first = counters(lab, engine)
    before, t0 = counters(lab, engine), time.monotonic()
    # What asking costs (MariaDB counts our own statements too): taken off the count.
    own = {name: before[name][0] - first[name][0] for name in before}
    time.sleep(seconds)
    after, elapsed = counters(lab, engine), time.monotonic() - t0
    print(f"{title}:")
    print(f"  {'member':<8} {'stmts/s':>9} {'polls/s':>9} {'polls/s/process':>16} {'connections':>12} "
          f"{'per process':>12}")
    for name in after:
        rate = (after[name][0] - before[name][0] - own[name]) / elapsed
        polls = after[name][1]
        poll_rate = (polls - before[name][1]) / elapsed if polls is not None else None  # type: ignore[operator]
        if poll_rate is None:
            shown = f"{'-':>9} {'-':>16}"
        else:
            shown = f"{poll_rate:>9.1f} {poll_rate / per_process:>16.2f}"
        conns = after[name][2]
        print(f"  {name:<8} {rate:>9.1f} {shown} {conns:>12} {conns / per_process:>12.2f}")
    return procs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=10, help="idle processes, and as many busy ones (10)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (5)")
    parser.add_argument("--engine", choices=["postgresql", "mariadb"], default="postgresql")
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "PRIMARY", "REPLICA", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        mode, primary, replica, seconds = args.worker
        return worker(mode, primary, replica, float(seconds))
    if args.engine == "postgresql":
        lab = PostgresLab(replicas=1, settings={"shared_preload_libraries": "pg_stat_statements"})
    else:
        lab = MariaDBLab(replicas=1)
    with lab:
        lab.query(lab.primary, "CREATE TABLE fleet (id integer PRIMARY KEY, v integer NOT NULL)")
        if args.engine == "postgresql":
            lab.query(lab.primary, "ALTER TABLE fleet OWNER TO app")
            lab.query(lab.primary, "CREATE EXTENSION pg_stat_statements")
        for i in range(100):
            lab.query(lab.primary, f"INSERT INTO fleet VALUES ({i}, 0)")
        lab.wait_until_caught_up()
        n, seconds = args.processes, args.seconds
        life = 2 * seconds + 8

        def spawn(mode: str) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, __file__, "--worker", mode, lab.primary.url, lab.replicas[0].url, str(life)],
                stdout=subprocess.PIPE, text=True,
            )

        print(f"{args.engine} lab: {n} idle processes, then {n} busy ones beside them; "
              f"{seconds:g} s per measurement\n")
        idle = [spawn("idle") for _ in range(n)]
        for p in idle:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        phase(lab, args.engine, idle, seconds, f"{n} idle processes", n)
        busy = [spawn("busy") for _ in range(n)]
        for p in busy:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        phase(lab, args.engine, busy, seconds, f"{n} idle and {n} busy processes", 2 * n)
        own_rate = 0.0
        for p in idle + busy:
            out, _ = p.communicate(timeout=life + 30)
            report = json.loads(out.strip().splitlines()[-1])
            own_rate += report["own"] / report["seconds"]
        print(f"\nthe busy processes' own statements: {own_rate:.0f}/s over all members "
              "(the rest of the busy phase's count is the monitors')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
