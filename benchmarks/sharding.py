"""What sharding costs: routing a query by its shard key against naming the database
(``using()`` / the cluster itself), and a fan-out over every shard against the slowest
shard alone, side by side on one shard lab (4 PostgreSQL clusters) in one process.

    python benchmarks/sharding.py [--seconds 1] [--rounds 5] [--shards 4] [--sleep-ms 5 10 15 20]

1. Routing, per query (one thread, the client on a CPU of its own): a one-row SELECT by
   primary key on the key's shard, through
   - Django: ``Account.objects.filter(id=k)`` (the router finds the shard from the key)
     against ``Account.objects.using("shard1").filter(id=k)``;
   - plain Python: ``shards.query(k, ...)`` against ``cluster.query(...)``.
   Every key lives on shard1, so both variants do the same database work (each Django
   query is followed by the end-of-request close, as in a view). What routing adds is
   the difference of the client's CPU time per query (this thread's, waiting for the
   server excluded: the servers' work is the same); wall-clock time per query is shown
   too. It is also measured without any query: what deciding the shard costs.
2. Fan-out: one statement on every shard at once, each shard sleeping its own time
   (``pg_sleep``, so that the CPUs are not what is measured), against the slowest
   shard's statement alone, and against running the shards one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pin_cpus  # noqa: E402

import replpool  # noqa: E402
from replpool.testing import ShardLab  # noqa: E402

ROWS = 2000
LOGICAL = 480


def configure(lab: ShardLab) -> None:
    import django
    from django.conf import settings

    def db(shard: Any, name: str) -> dict[str, Any]:
        return {
            "ENGINE": "replpool.backends.postgresql", "NAME": name, "USER": "app",
            "PASSWORD": lab.password, "HOST": shard.primary.host, "PORT": str(shard.primary.port),
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 4}},
        }

    aliases = [f"shard{i + 1}" for i in range(len(lab.shards))]
    settings.configure(
        SECRET_KEY="bench", DEBUG=False, USE_TZ=True, INSTALLED_APPS=["benchapp"],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DATABASES={"default": db(lab.shards[0], "app"), **{a: db(s, "app") for a, s in zip(aliases, lab.shards)}},
        DATABASE_ROUTERS=["replpool.django.sharding.ShardRouter"],
        REPLPOOL_SHARDING={"databases": aliases, "logical_shards": LOGICAL, "models": {"benchapp.Account": "id"}},
    )
    django.setup()


def cpu_interleaved(
    variants: dict[str, Any], *, rounds: int, seconds: float
) -> dict[str, tuple[float, float]]:
    """Each variant in turn, round after round (rotating which goes first), in this
    thread: ``{name: (wall us per call, this thread's CPU us per call)}``, medians over
    the rounds. The CPU time is what the client spends on a query, waiting excluded,
    which is where routing adds anything: on a busy machine it holds still where
    wall-clock time does not."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    items = list(variants.items())
    for _, op in items:  # warm up
        for _ in range(50):
            op()
    for r in range(rounds):
        for name, op in items[r % len(items):] + items[: r % len(items)]:
            n, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
            while time.perf_counter() - wall0 < seconds:
                op()
                n += 1
            samples[name].append(((time.perf_counter() - wall0) / n * 1e6, (time.thread_time() - cpu0) / n * 1e6))
    return {
        name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for name, s in samples.items()
    }


class _EveryMember:
    """The members of every shard's lab, as pin_cpus() wants one lab."""

    def __init__(self, lab: ShardLab) -> None:
        self._owners = {id(m): shard for shard in lab.shards for m in shard.members}
        self.members = [m for shard in lab.shards for m in shard.members]

    def _server_pid(self, member: Any) -> int | None:
        return self._owners[id(member)]._server_pid(member)  # type: ignore[no-any-return]


def per_call_us(func: Any, n: int = 20000, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            func()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round (1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (5)")
    parser.add_argument("--shards", type=int, default=4, help="shard clusters (4)")
    parser.add_argument("--sleep-ms", type=float, nargs="+", default=[5, 10, 15, 20],
                        help="what each shard's fan-out statement sleeps, in ms (5 10 15 20)")
    parser.add_argument("--fan-outs", type=int, default=40, help="fan-outs timed per variant and round (40)")
    args = parser.parse_args(argv)
    sleeps = (args.sleep_ms * args.shards)[: args.shards]

    with ShardLab(shards=args.shards, replicas=0) as lab:
        configure(lab)
        from django.db import connections

        from benchapp.models import Account

        shards = replpool.ShardSet(lab.clusters(min_size=2, max_size=4), replpool.HashPlacement(LOGICAL))
        shards.open()
        try:
            for alias in shards.clusters:
                with connections[alias].schema_editor() as editor:
                    editor.create_model(Account)
            keys = [k for k in range(ROWS * args.shards) if shards.cluster_for(k).name == "shard1"][:ROWS]
            Account.objects.bulk_create([Account(id=k, balance=k) for k in keys])
            shard1 = shards.clusters["shard1"]
            placement = pin_cpus(_EveryMember(lab))
            print(f"{args.shards} PostgreSQL shard clusters (primaries only), {LOGICAL} logical shards; "
                  f"{len(keys)} keys on shard1; {args.rounds} rounds of {args.seconds:g} s; {placement}\n")

            # -- 1. routing ------------------------------------------------------------------
            counter = iter(range(10**12))

            def key() -> int:
                return keys[next(counter) % len(keys)]

            # Each operation is a request's worth: the query, then the end-of-request
            # close that hands the connection back to its pool (the benchmark's threads
            # change from round to round; a connection they kept would be lost).
            def django_routed() -> None:
                assert len(list(Account.objects.filter(id=key()))) == 1
                connections["shard1"].close()

            def django_using() -> None:
                assert len(list(Account.objects.using("shard1").filter(id=key()))) == 1
                connections["shard1"].close()

            sql = "SELECT balance FROM benchapp_account WHERE id = %s"

            def python_routed() -> None:
                k = key()
                assert len(shards.query(k, sql, (k,))) == 1

            def python_cluster() -> None:
                assert len(shard1.query(sql, (key(),))) == 1

            with replpool.session():
                dj = cpu_interleaved({"using('shard1')": django_using, "routed by key": django_routed},
                                     rounds=args.rounds, seconds=args.seconds)
                py = cpu_interleaved({"cluster.query()": python_cluster, "shards.query(key)": python_routed},
                                     rounds=args.rounds, seconds=args.seconds)
            for title, results, base in (("Django, one-row SELECT by key", dj, "using('shard1')"),
                                         ("plain Python, one-row SELECT by key", py, "cluster.query()")):
                print(title)
                print(f"  {'variant':<22} {'wall us/query':>14} {'client CPU us/query':>20}")
                for name, (wall, cpu) in results.items():
                    print(f"  {name:<22} {wall:>14.1f} {cpu:>20.1f}")
                other = next(n for n in results if n != base)
                print(f"  routing adds {results[other][1] - results[base][1]:+.1f} us of client CPU per query "
                      f"({results[other][0] - results[base][0]:+.1f} us wall, noisier)\n")

            k0 = keys[0]
            a_uuid = uuid.uuid4()
            prepared = Account.objects.filter(id=k0)

            def route_prepared() -> None:
                prepared._shard_targets = None  # forget the cached answer: decide again
                prepared._targets()

            decide = {
                "ShardRouter: the shard of filter(id=k)": per_call_us(route_prepared),
                "ShardSet.cluster_for(k)": per_call_us(lambda: shards.cluster_for(k0)),
                "replpool.shard_for(int, 480)": per_call_us(lambda: replpool.shard_for(k0, LOGICAL)),
                "replpool.shard_for(uuid, 480)": per_call_us(lambda: replpool.shard_for(a_uuid, LOGICAL)),
                "replpool.shard_for(str, 480)": per_call_us(lambda: replpool.shard_for("customer-12345", LOGICAL)),
            }
            print("Deciding the shard, without a query (best of 5 x 20000 calls; once per query)")
            for name, us in decide.items():
                print(f"  {name:<40} {us:>7.2f} us")
            print()

            # -- 2. fan-out --------------------------------------------------------------------
            slowest = shards.clusters[f"shard{sleeps.index(max(sleeps)) + 1}"]
            sleep_sql = "SELECT pg_sleep(CASE current_setting('port')::int " + " ".join(
                f"WHEN {s.primary.port} THEN {ms / 1000}" for s, ms in zip(lab.shards, sleeps)
            ) + " END)"

            def fan_out() -> None:
                assert len(shards.fan_out(sleep_sql)) == args.shards

            def alone() -> None:
                slowest.query(sleep_sql)

            def one_after_another() -> None:
                for c in shards.clusters.values():
                    c.query(sleep_sql)

            times: dict[str, list[float]] = {"slowest shard alone": [], "fan-out": [], "one after another": []}
            variants = {"slowest shard alone": alone, "fan-out": fan_out, "one after another": one_after_another}
            items = list(variants.items())
            for _, op in items:
                op()  # warm up
            with replpool.session():
                for r in range(args.rounds):
                    for name, op in items[r % 3:] + items[: r % 3]:
                        start = time.perf_counter()
                        for _ in range(args.fan_outs):
                            op()
                        times[name].append((time.perf_counter() - start) / args.fan_outs * 1000)
            base = statistics.median(times["slowest shard alone"])
            print(f"Fan-out over {args.shards} shards sleeping {', '.join(f'{ms:g}' for ms in sleeps)} ms "
                  f"(median of {args.rounds} rounds of {args.fan_outs})")
            print(f"  {'variant':<24} {'ms':>8} {'vs slowest alone':>18}")
            for name, ts in times.items():
                ms = statistics.median(ts)
                print(f"  {name:<24} {ms:>8.2f} {ms / base:>17.3f}x")
        finally:
            shards.close()
            for alias in list(connections):
                connections[alias].close()
                connections[alias].close_pool()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
