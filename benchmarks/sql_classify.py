"""What the statement classifier costs per statement: uncached (a statement seen for the
first time) and cached (Django repeats its statements), over the SQL Django's ORM wrote in
its own test modules (tests/data/orm_sql_<dialect>.txt.gz) and over one typical ORM SELECT.

    python benchmarks/sql_classify.py [--repeat 5]

No server needed. Times are the best of ``--repeat`` runs, in microseconds per statement.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replpool._sql import classify  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
TYPICAL = (
    'SELECT "shop_item"."id", "shop_item"."name", "shop_item"."created", COUNT("shop_review"."id")'
    ' AS "n", LOWER("shop_item"."name") AS "lname" FROM "shop_item" LEFT OUTER JOIN "shop_review"'
    ' ON ("shop_item"."id" = "shop_review"."item_id") WHERE ("shop_item"."created" >= %s AND'
    ' "shop_item"."name"::text LIKE %s) GROUP BY "shop_item"."id", 5 ORDER BY'
    ' "shop_item"."created" DESC LIMIT 21'
)
UNCACHED = classify.__wrapped__  # type: ignore[attr-defined]
NONE: frozenset[str] = frozenset()


def per_statement(statements: list[str], dialect: str, cached: bool, repeat: int) -> list[float]:
    """Microseconds for each statement, best of ``repeat``."""
    best = [float("inf")] * len(statements)
    for _ in range(repeat):
        for i, sql in enumerate(statements):
            start = time.perf_counter()
            if cached:
                classify(sql, dialect)
            else:
                UNCACHED(sql, dialect, NONE)
            best[i] = min(best[i], (time.perf_counter() - start) * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'statements':<34} {'n':>6} {'chars':>6} {'uncached us':>12} {'p95':>7} {'cached us':>10}")
    for dialect in ("postgresql", "mysql"):
        typical = TYPICAL if dialect == "postgresql" else TYPICAL.replace('"', "`").replace("::text", "")
        with gzip.open(DATA / f"orm_sql_{dialect}.txt.gz", "rt", encoding="utf-8") as f:
            reads = [json.loads(line.split("\t", 1)[1]) for line in f.read().splitlines() if line.startswith("read\t")]
        for name, statements in ((f"{dialect}: one ORM SELECT", [typical]), (f"{dialect}: ORM reads", reads)):
            uncached = per_statement(statements, dialect, False, args.repeat)
            classify(statements[0], dialect)
            cached = per_statement(statements[:1000], dialect, True, args.repeat)
            p95 = sorted(uncached)[int(len(uncached) * 0.95)] if len(uncached) > 1 else uncached[0]
            print(
                f"{name:<34} {len(statements):>6} {statistics.median(map(len, statements)):>6.0f}"
                f" {statistics.median(uncached):>12.1f} {p95:>7.1f} {statistics.median(cached):>10.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
