"""Request throughput of Django views: Django's own PostgreSQL backend with its pool
option, against replpool.backends.postgresql on one database and with two replicas,
side by side on the same lab in one process.

    python benchmarks/django_views.py [--seconds 1] [--rounds 5] [--threads 1 4] [--report-ms 20]

Each request is a view called the way a server calls it, then the end-of-request
connection cleanup (close_old_connections). The read view fetches one item and a page
of ten (two queries); the write view creates an item (one INSERT). replpool's views run
behind ReadYourWritesMiddleware, as a replpool site would (which makes a token for every
request that wrote: a signed cookie and a header); the baseline without it, and
"engine" is replpool's engine without the middleware. The baseline runs twice, the
second time as "django pool again (A/A)": how far that row is from 1.000 is how far
apart this machine puts two runs of the same code.

Last, a report view (one query that keeps its server busy for a few milliseconds) at the
largest thread count, with one replica moved to the client's CPU so that it has a CPU
the primary does not: what replicas are for, at the scale of a two-CPU machine.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, move_to_client_cpu, pin_cpus, table  # noqa: E402

from replpool.testing import PostgresLab  # noqa: E402

ROWS = 1000


def configure(lab: PostgresLab, pool_size: int) -> None:
    import django
    from django.conf import settings

    def db(engine: str, replicas: bool) -> dict[str, Any]:
        options: dict[str, Any] = {"pool": {"min_size": pool_size, "max_size": pool_size}}
        if replicas:
            options["replicas"] = [{"PORT": str(r.port)} for r in lab.replicas]
        return {
            "ENGINE": engine, "NAME": "app", "USER": "app", "PASSWORD": lab.password,
            "HOST": lab.primary.host, "PORT": str(lab.primary.port), "OPTIONS": options,
        }

    settings.configure(
        SECRET_KEY="bench", DEBUG=False, USE_TZ=True, ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["benchapp"], DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        DATABASES={
            "default": db("django.db.backends.postgresql", False),
            "replpool_one": db("replpool.backends.postgresql", False),
            "replpool_replicas": db("replpool.backends.postgresql", True),
        },
    )
    django.setup()


def calibrate(lab: PostgresLab, ms: float) -> int:
    """How many rows of generate_series the report's query sums to take about ``ms``
    of server time on this machine."""
    import time

    import psycopg

    n, best = 100_000, float("inf")
    with psycopg.connect(lab.primary.dsn, autocommit=True) as conn:
        for _ in range(3):  # the best of three
            start = time.perf_counter()
            conn.execute("SELECT sum(g) FROM generate_series(1, %s) AS g", [n])
            best = min(best, time.perf_counter() - start)
    return max(1000, int(n * ms / 1000 / best))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--report-ms", type=float, default=20.0,
                        help="server time of the report view's query, roughly (20)")
    args = parser.parse_args(argv)
    with PostgresLab(replicas=2) as lab:
        configure(lab, max(2, max(args.threads)))
        from django.db import close_old_connections, connections

        try:
            from django.http import HttpResponse, HttpResponseRedirect
            from django.test import RequestFactory

            from benchapp.models import Item
            from replpool.django.middleware import ReadYourWritesMiddleware

            with connections["default"].schema_editor() as editor:
                editor.create_model(Item)
            Item.objects.bulk_create([Item(name=f"item {i}", price=i) for i in range(ROWS)])
            lab.wait_until_caught_up()
            keys = itertools.count()

            def read_view(alias: str) -> Any:
                def view(request: Any) -> HttpResponse:
                    k = next(keys) % ROWS + 1
                    item = Item.objects.using(alias).filter(pk=k).first()
                    page = list(Item.objects.using(alias).filter(pk__gte=k).order_by("pk")[:10])
                    return HttpResponse(f"{item.name if item else '-'} {len(page)}")
                return view

            def write_view(alias: str) -> Any:
                def view(request: Any) -> HttpResponse:
                    item = Item.objects.using(alias).create(name="new", price=1)
                    return HttpResponseRedirect(f"/items/{item.pk}/")
                return view

            factory = RequestFactory()

            def serve(view: Any, middleware: bool) -> Any:
                handler = ReadYourWritesMiddleware(view) if middleware else view

                def request() -> None:
                    response = handler(factory.get("/") if view.__name__ == "view" else factory.post("/"))
                    assert response.status_code in (200, 302), response.status_code
                    close_old_connections()
                return request

            # "again (A/A)": the baseline measured a second time, as a variant: how far
            # apart this machine puts two runs of the same code is the benchmark's noise.
            variants_read = {
                "django pool (primary)": serve(read_view("default"), False),
                "django pool again (A/A)": serve(read_view("default"), False),
                "replpool, one db, engine": serve(read_view("replpool_one"), False),
                "replpool, one database": serve(read_view("replpool_one"), True),
                "replpool, 2 replicas": serve(read_view("replpool_replicas"), True),
            }
            variants_write = {
                "django pool (primary)": serve(write_view("default"), False),
                "django pool again (A/A)": serve(write_view("default"), False),
                "replpool, one db, engine": serve(write_view("replpool_one"), False),
                "replpool, one database": serve(write_view("replpool_one"), True),
                "replpool, 2 replicas": serve(write_view("replpool_replicas"), True),
            }
            placement = pin_cpus(lab)
            print(f"Django views on a PostgreSQL lab (primary {lab.primary.port}, replicas "
                  f"{', '.join(str(r.port) for r in lab.replicas)}); {args.rounds} rounds of "
                  f"{args.seconds:g} s; {placement}\n")
            for threads in args.threads:
                reads = interleaved(variants_read, rounds=args.rounds, seconds=args.seconds, threads=threads)
                writes = interleaved(variants_write, rounds=args.rounds, seconds=args.seconds, threads=threads)
                print(table(f"read view, {threads} thread(s)", reads, "django pool (primary)"))
                print(table(f"write view, {threads} thread(s)", writes, "django pool (primary)"))
                print()
            # Replicas add throughput only where they bring CPUs of their own, and where the
            # primary's CPU is what runs out: a report view whose query keeps its server
            # busy. The primary and its replicas share CPU 1 above; now one replica moves
            # to the client's CPU, as if each database server had one CPU.
            series = calibrate(lab, args.report_ms)

            def report_view(alias: str) -> Any:
                def view(request: Any) -> HttpResponse:
                    with connections[alias].cursor() as cursor:
                        cursor.execute("SELECT sum(g) FROM generate_series(1, %s) AS g", [series])
                        return HttpResponse(str(cursor.fetchone()[0]))
                return view

            moved = move_to_client_cpu(lab, lab.replicas[0])
            reports = interleaved(
                {
                    "django pool (primary)": serve(report_view("default"), False),
                    "replpool, 2 replicas": serve(report_view("replpool_replicas"), True),
                },
                rounds=args.rounds, seconds=args.seconds, threads=max(args.threads),
            )
            print(table(f"report view ({args.report_ms:g} ms query), {max(args.threads)} thread(s); "
                        f"{moved}", reports, "django pool (primary)"))
            print()
            routing = connections["replpool_replicas"].replpool_cluster().status().routing
            print(f"replpool (2 replicas) routing: {routing}")
        finally:
            # Close every alias's connections and pools, replpool's clusters (and their
            # monitors) included, while the lab still runs: a monitor still running
            # when the lab stops would report its servers down.
            for alias in list(connections):
                connections[alias].close()
                connections[alias].close_pool()
    return 0


if __name__ == "__main__":
    sys.exit(main())
