"""Django's ORM keeps its offload: every plain read it writes classifies as READ, every
select_for_update() as LOCKING, on both servers.

The corpus (tests/data/orm_sql_<dialect>.txt.gz) is the SQL Django 5.2 sent while its own
test modules ran (db_functions, aggregation, expressions, queries, lookup, model_fields...:
every database function Django offers, and most query shapes), each statement tagged with
what compiled it; scripts/capture_orm_sql.py captures it again."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from replpool._sql import Kind, classify

DATA = Path(__file__).resolve().parent / "data"


def corpus(dialect: str) -> list[tuple[str, str]]:
    with gzip.open(DATA / f"orm_sql_{dialect}.txt.gz", "rt", encoding="utf-8") as f:
        rows = [line.split("\t", 1) for line in f.read().splitlines()]
    return [(tag, json.loads(sql)) for tag, sql in rows]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_every_read_djangos_orm_writes_stays_a_replica_read(dialect: str) -> None:
    rows = corpus(dialect)
    reads = [sql for tag, sql in rows if tag == "read"]
    assert len(reads) > 2000  # the corpus is there, and large
    wrong = [(classify(sql, dialect), sql) for sql in reads if classify(sql, dialect) is not Kind.READ]
    assert wrong == []


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_every_select_for_update_djangos_orm_writes_is_a_locking_read(dialect: str) -> None:
    locks = [sql for tag, sql in corpus(dialect) if tag == "lock"]
    assert len(locks) > 20
    wrong = [(classify(sql, dialect), sql) for sql in locks if classify(sql, dialect) is not Kind.LOCKING]
    assert wrong == []
