"""What deciding a MariaDB member's role costs per monitor poll: the ways of reading it,
side by side on one lab replica, in one process, in interleaved rounds.

    python benchmarks/poll_mariadb.py [--polls 2000] [--rounds 5]

Variants (each one poll's round trip on the monitor's own connection):

- ``poll``: what every poll reads (read_only, GTID positions, log_bin, server_id).
- ``poll + SHOW ALL SLAVES STATUS``: the replication status in the same round trip
  (whom the member replicates from: its role), as the monitor sends it once a second,
  and at once when the poll hints at a change of role or no primary is known.
- ``poll + status counters``: the counters of replication statements (CHANGE MASTER,
  RESET, START/STOP SLAVE) from information_schema.GLOBAL_STATUS, a cheap-looking
  way to notice a change of replication at every poll.

For each: client CPU (this process), server CPU (the mariadbd process) and wall time,
per poll, median over rounds. The choice in replpool._mysql follows from these.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replpool._mysql import _MARIADB_POLL, _MARIADB_STATUS, MySQLEngine, _results  # noqa: E402
from replpool.testing import MariaDBLab  # noqa: E402

COUNTERS = (
    "SELECT SUM(VARIABLE_VALUE) FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN"
    " ('COM_CHANGE_MASTER', 'COM_RESET', 'COM_START_SLAVE', 'COM_STOP_SLAVE',"
    " 'COM_START_ALL_SLAVES', 'COM_STOP_ALL_SLAVES')"
)
VARIANTS = {
    "poll": _MARIADB_POLL,
    "poll + SHOW ALL SLAVES STATUS": f"{_MARIADB_POLL}; {_MARIADB_STATUS}",
    "poll + status counters": f"{_MARIADB_POLL}, ({COUNTERS})",
}


def server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=2000, help="polls per variant and round (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    args = parser.parse_args(argv)
    with MariaDBLab(replicas=1) as lab:
        replica = lab.replicas[0]
        engine = MySQLEngine()
        conn = engine.monitor_connect(engine.member_spec(replica.url, "replica"), 1.0)
        pid = lab._server_pid(replica)
        assert pid is not None
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
        names = list(VARIANTS)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                query = VARIANTS[name]
                c0, s0, w0 = time.process_time(), server_cpu(pid), time.perf_counter()
                for _ in range(args.polls):
                    _results(conn, query)
                c1, s1, w1 = time.process_time(), server_cpu(pid), time.perf_counter()
                n = args.polls
                results[name].append(((c1 - c0) / n * 1e6, (s1 - s0) / n * 1e6, (w1 - w0) / n * 1e6))
        engine.close_quietly(conn)
    print(f"per poll, median of {args.rounds} rounds of {args.polls} polls (microseconds)\n")
    print(f"{'variant':32s} {'client CPU':>10s} {'server CPU':>10s} {'wall':>8s}")
    for name, rows in results.items():
        client, server, wall = (statistics.median(col) for col in zip(*rows))
        print(f"{name:32s} {client:10.0f} {server:10.0f} {wall:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
