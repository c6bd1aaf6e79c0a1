"""How many reads can leave the primary without showing users stale data: the same
read-after-write workload under three policies, side by side on one lab with one
replica delayed.

    python benchmarks/offload.py [--seconds 20] [--users 4] [--delay 1.0] [--plot offload.png]

Policies (each runs its own users and its own cluster, all at the same time):

replicas always
    every read goes to a replica (no read-your-writes at all);
time-based pinning
    after a write, the user's reads go to the primary for ``--pin`` seconds (Rails
    pins for 2 s; Django routers for 5-15 s), then to replicas;
replpool
    each user keeps a replpool session: a read goes to a replica that has applied the
    user's last write, else to the primary.

A user writes their profile, then over the next half second reads it back a few times
(it must show what they wrote) and reads other profiles. A read of one's own profile
showing an older version than written is a stale read.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import replpool
from replpool.testing import PostgresLab

PROFILES = 500
POLICIES = ("replicas always", "time-based pinning", "replpool")


@dataclass
class Counts:
    lock: threading.Lock = field(default_factory=threading.Lock)
    own_reads: int = 0
    stale: int = 0
    writes: int = 0

    def add(self, own: int = 0, stale: int = 0, writes: int = 0) -> None:
        with self.lock:
            self.own_reads += own
            self.stale += stale
            self.writes += writes


def read_own(cluster: replpool.Cluster, user: int) -> int:
    return cluster.query("SELECT version FROM profiles WHERE id = %s", (user,), read_only=True)[0][0]


def user_loop(policy: str, cluster: replpool.Cluster, user: int, pin: float, counts: Counts,
              stop: threading.Event) -> None:
    rng = random.Random(user)
    last_write = -1e9

    def read(fn: Callable[[], Any]) -> Any:
        if policy == "replicas always":
            with replpool.consistency("eventual"):  # any replica
                return fn()
        if policy == "time-based pinning":
            if time.monotonic() - last_write < pin:
                with replpool.pinned_to_master():
                    return fn()
            with replpool.consistency("eventual"):
                return fn()
        return fn()  # replpool: the user's own session

    with replpool.session():
        while not stop.is_set():
            written = cluster.query(
                "UPDATE profiles SET version = version + 1 WHERE id = %s RETURNING version", (user,)
            )[0][0]
            last_write = time.monotonic()
            counts.add(writes=1)
            stop.wait(0.02)  # the redirect after the form
            for _ in range(6):
                seen = read(lambda: read_own(cluster, user))
                counts.add(own=1, stale=int(seen < written))
                other = rng.randrange(1, PROFILES + 1)
                read(lambda: cluster.query("SELECT version FROM profiles WHERE id = %s", (other,), read_only=True))
                stop.wait(rng.uniform(0.05, 0.12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=4, help="users per policy (4)")
    parser.add_argument("--delay", type=float, default=1.0, help="apply delay of one replica, s (1.0)")
    parser.add_argument("--pin", type=float, default=2.0, help="time-based pinning window, s (2.0)")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/out/offload.png"))
    args = parser.parse_args(argv)

    with PostgresLab(replicas=2) as lab:
        lab.query(lab.primary, "CREATE TABLE profiles (id int PRIMARY KEY, version int NOT NULL)")
        lab.query(lab.primary, "ALTER TABLE profiles OWNER TO app")
        lab.query(lab.primary, "INSERT INTO profiles SELECT g, 0 FROM generate_series(1, %s) g", (PROFILES,))
        lab.wait_until_caught_up()
        delayed = lab.replicas[0]
        lab.set_apply_delay(delayed, args.delay)
        delayed = lab.member(delayed.name)
        clusters = {
            p: replpool.Cluster(lab.primary.url, [r.url for r in lab.replicas], name=p.replace(" ", "_"),
                                replica_selection="round_robin", max_size=args.users + 2)
            for p in POLICIES
        }
        counts = {p: Counts() for p in POLICIES}
        stop = threading.Event()
        timeline: list[dict[str, Any]] = []
        for c in clusters.values():
            c.open()
        threads = [
            threading.Thread(target=user_loop, args=(p, clusters[p], 1 + i + 100 * k, args.pin, counts[p], stop))
            for k, p in enumerate(POLICIES) for i in range(args.users)
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        previous = {p: (0, 0) for p in POLICIES}
        while time.monotonic() - start < args.seconds:
            time.sleep(0.25)
            point: dict[str, Any] = {"t": time.monotonic() - start}
            status = clusters["replpool"].status()
            for m in status.members:
                if m.role == "replica":
                    point[m.name] = m.lag_seconds or 0.0
            for p, c in clusters.items():
                r, total = _reads(c)
                dr, dt = r - previous[p][0], total - previous[p][1]
                previous[p] = (r, total)
                point[p] = dr / dt if dt else None
            timeline.append(point)
        stop.set()
        for t in threads:
            t.join()
        results = {p: (*_reads(clusters[p]), counts[p]) for p in POLICIES}
        names = {f"{m.host}:{m.port}": m.name for m in lab.members}
        for c in clusters.values():
            c.close()

    print(f"Read-after-write workload, {args.users} users per policy, {args.seconds:g} s; "
          f"one of two replicas applies {args.delay:g} s late.\n")
    print(f"  {'policy':<22} {'writes':>7} {'own reads':>10} {'stale':>7} {'stale %':>8} {'reads on replicas':>18}")
    for p, (on_replicas, total, c) in results.items():
        print(f"  {p:<22} {c.writes:>7} {c.own_reads:>10} {c.stale:>7} {100 * c.stale / max(1, c.own_reads):>7.1f}% "
              f"{100 * on_replicas / max(1, total):>17.1f}%")
    if args.plot:
        _plot(timeline, args.plot, names, names[f"{delayed.host}:{delayed.port}"], args)
        print(f"\nplot: {args.plot}")
    return 0


def _reads(cluster: replpool.Cluster) -> tuple[int, int]:
    routing = cluster.status().routing
    on_replicas = sum(routing.get("replica", {}).values())
    on_primary = sum(n for reason, n in routing.get("primary", {}).items() if reason != "write")
    return on_replicas, on_replicas + on_primary


def _plot(
    timeline: list[dict[str, Any]], path: Path, names: dict[str, str], delayed: str,
    args: argparse.Namespace,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (lag_ax, share_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ts = [p["t"] for p in timeline]
    replicas = [k for k in timeline[0] if ":" in k] if timeline else []
    for name in replicas:
        label = f"{names[name]} (applies {args.delay:g} s late)" if names[name] == delayed else names[name]
        lag_ax.plot(ts, [p.get(name, 0) for p in timeline], label=label)
    lag_ax.set_ylabel("replica lag (s)")
    lag_ax.legend(loc="upper right")
    for policy in POLICIES:
        share_ax.plot(ts, [100 * p[policy] if p[policy] is not None else None for p in timeline], label=policy)
    share_ax.set_ylabel("reads on replicas (%)")
    share_ax.set_xlabel("seconds")
    share_ax.set_ylim(0, 105)
    share_ax.legend(loc="lower right")
    fig.suptitle("Offload and staleness: replicas always vs time-based pinning vs replpool")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
