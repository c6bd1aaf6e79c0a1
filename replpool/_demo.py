"""``python -m replpool demo``: replpool's main job, watched live on a real lab.

A PostgreSQL primary and two streaming replicas start on loopback. Simulated users
write their own profile and read it back at once (the read that goes stale behind a
lagging replica), and readers browse without writing. Halfway through, one replica gets
an apply delay and the other stops applying. Every second a line shows where reads went
and why, each replica's lag, and the stale reads seen (there are none); ``/metrics``
serves the Prometheus metrics meanwhile. A short report closes the run.
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import _session, metrics
from ._cluster import Cluster

PROFILES = 200


@dataclass
class Tally:
    """What the workload saw (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: int = 0
    own_reads: int = 0
    own_on_replica: int = 0  # reads of one's own writes that a replica served
    browse_reads: int = 0
    stale: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)


def _read_own(cluster: Cluster, user_id: int) -> tuple[int, bool]:
    """Read my profile's version: (version, whether a replica served it)."""
    checkout = cluster.connection(read_only=True)
    with checkout as conn:
        on_replica = checkout.lease is not None and checkout.lease.on_replica
        version = conn.execute("SELECT version FROM profiles WHERE id = %s", (user_id,)).fetchone()[0]
    return version, on_replica


def _user(cluster: Cluster, user_id: int, tally: Tally, stop: threading.Event) -> None:
    """Write my profile, read it back at once, then carry on in a new request that
    resumes from a token (a redirect, a task) and read it there again."""
    rng = random.Random(user_id)
    while not stop.is_set():
        start = time.perf_counter()
        try:
            with _session.session():
                rows = cluster.query(
                    "UPDATE profiles SET version = version + 1 WHERE id = %s RETURNING version",
                    (user_id,),
                )
                written = rows[0][0]
                seen, first_on_replica = _read_own(cluster, user_id)
                token = _session.current_token()
            with _session.session(after=token):
                again, second_on_replica = _read_own(cluster, user_id)
            stale = int(seen < written) + int(again < written)
            tally.add(writes=1, own_reads=2, stale=stale, own_on_replica=first_on_replica + second_on_replica)
            with tally.lock:
                tally.latencies.append(time.perf_counter() - start)
        except Exception as exc:  # the demo reports errors instead of dying
            with tally.lock:
                tally.errors[type(exc).__name__] += 1
        stop.wait(rng.uniform(0.01, 0.05))


def _browser(cluster: Cluster, seed: int, tally: Tally, stop: threading.Event) -> None:
    """Read other people's profiles, writing nothing: any fresh replica will do."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with _session.session():
                cluster.query(
                    "SELECT id, version FROM profiles WHERE id BETWEEN %s AND %s",
                    (n := rng.randrange(1, PROFILES), n + 10), read_only=True,
                )
            tally.add(browse_reads=1)
        except Exception as exc:
            with tally.lock:
                tally.errors[type(exc).__name__] += 1
        stop.wait(rng.uniform(0.002, 0.01))


def _progress_line(
    elapsed: float, cluster: Cluster, tally: Tally, previous: Counter[str], names: dict[str, str]
) -> str:
    """One second of the run: reads by target, the share of read-backs of one's own
    writes that replicas served, why reads went to the primary, lag."""
    status = cluster.status()
    now: Counter[str] = Counter()
    for target, reasons in status.routing.items():
        for reason, n in reasons.items():
            if reason != "write":
                now[f"{target}:{reason}"] = n
    with tally.lock:
        now["own"], now["own_on_replica"] = tally.own_reads, tally.own_on_replica
    delta = now - previous
    previous.clear()
    previous.update(now)
    on_replicas = sum(n for k, n in delta.items() if k.startswith("replica:"))
    on_primary = sum(n for k, n in delta.items() if k.startswith("primary:"))
    why = ", ".join(f"{k.split(':')[1]} {n}" for k, n in sorted(delta.items()) if k.startswith("primary:"))
    lags = "  ".join(
        f"{names.get(m.name, m.name)} {'down' if not m.up else f'{m.lag_seconds or 0:4.1f}s'}"
        f"{'' if m.eligible else '*'}"
        for m in status.members if m.role == "replica"
    )
    share = 100 * on_replicas / max(1, on_replicas + on_primary)
    own_share = 100 * delta["own_on_replica"] / max(1, delta["own"])
    return (
        f"{elapsed:5.1f}s  reads/s {on_replicas:4d} on replicas, {on_primary:4d} on the primary "
        f"({share:3.0f}%); read-backs of own writes on replicas {own_share:3.0f}%  lag: {lags}  "
        f"stale: {tally.stale}  | primary because: {why or '-'}"
    )


def run(seconds: float = 30.0, users: int = 8, browsers: int = 4, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the demo; return the figures of its report (tests use them)."""
    from .testing import PostgresLab

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("Starting a PostgreSQL lab: a primary and two streaming replicas on loopback...")
    with PostgresLab(replicas=2) as lab:
        lab.query(lab.primary, "CREATE TABLE profiles (id int PRIMARY KEY, version int NOT NULL)")
        lab.query(lab.primary, f"ALTER TABLE profiles OWNER TO {lab.primary.user}")
        lab.query(lab.primary, "INSERT INTO profiles SELECT g, 0 FROM generate_series(1, %s) g", (PROFILES,))
        lab.wait_until_caught_up()
        delayed, paused = lab.replicas
        server, _thread = metrics.start_http_server(0)
        cluster = Cluster(
            lab.primary.url, [r.url for r in lab.replicas], name="demo",
            max_size=users + browsers, max_replica_lag=5.0, causal_wait=0.02,
        )
        names = {f"{m.host}:{m.port}": m.name for m in lab.members}
        for m in lab.members:
            say(f"  {m.name}  {m.role:<8} {m.host}:{m.port}")
        say(f"\nPrometheus metrics: http://127.0.0.1:{server.server_port}/metrics")
        say(f"Workload: {users} users who write and read back at once, {browsers} readers; "
            f"{seconds:g} s.\nA read-back may wait up to 20 ms (causal_wait) for a replica to "
            f"apply the write, which a healthy one does in a millisecond or two.\n"
            f"At {seconds / 2:g} s {delayed.name} gets a 1 s apply delay and {paused.name} stops "
            f"applying: read-backs then wait in vain and go to the primary.\n"
            f"(* = replica over max_replica_lag, 5 s: no reads)\n")
        tally = Tally()
        stop = threading.Event()
        with cluster:
            threads = [threading.Thread(target=_user, args=(cluster, 1 + i, tally, stop)) for i in range(users)]
            threads += [threading.Thread(target=_browser, args=(cluster, i, tally, stop)) for i in range(browsers)]
            for t in threads:
                t.start()
            start = time.monotonic()
            previous: Counter[str] = Counter()
            faulted = False
            try:
                while (elapsed := time.monotonic() - start) < seconds:
                    time.sleep(max(0.0, 1.0 - (elapsed % 1.0)))
                    elapsed = time.monotonic() - start
                    if not faulted and elapsed >= seconds / 2:
                        lab.set_apply_delay(delayed, 1.0)
                        lab.pause_replication(paused)
                        faulted = True
                        say(f"{elapsed:5.1f}s  >>> {delayed.name}: apply delay 1 s; {paused.name}: paused")
                    say(_progress_line(elapsed, cluster, tally, previous, names))
            finally:
                stop.set()
                for t in threads:
                    t.join()
            status = cluster.status()
        server.shutdown()
        metrics.disable()
    replica_reads = sum(status.routing.get("replica", {}).values())
    primary_reads = sum(v for k, v in status.routing.get("primary", {}).items() if k != "write")
    report: dict[str, Any] = {
        "writes": tally.writes,
        "own_reads": tally.own_reads,
        "browse_reads": tally.browse_reads,
        "stale_reads": tally.stale,
        "own_on_replica": tally.own_on_replica,
        "errors": dict(tally.errors),
        "replica_share": replica_reads / max(1, replica_reads + primary_reads),
        "routing": status.routing,
        "p50_ms": 1000 * statistics.median(tally.latencies) if tally.latencies else None,
    }
    say("\nReport")
    say(f"  writes: {tally.writes}, reads of one's own writes: {tally.own_reads}, other reads: "
        f"{tally.browse_reads}")
    say(f"  stale reads of one's own writes: {tally.stale}")
    say(f"  reads of one's own writes served by replicas: {tally.own_on_replica} of {tally.own_reads} "
        f"({100 * tally.own_on_replica / max(1, tally.own_reads):.0f}%; the replicas had applied "
        "each write by then)")
    say(f"  reads served by replicas: {100 * report['replica_share']:.0f}% "
        f"(the rest went to the primary, by reason: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(status.routing.get('primary', {}).items()) if k != 'write')})")
    if report["p50_ms"] is not None:
        say(f"  a user's write + two reads: median {report['p50_ms']:.1f} ms")
    if tally.errors:
        say(f"  errors: {dict(tally.errors)}")
    say("The lab is stopped and removed.")
    return report
