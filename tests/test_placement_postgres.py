"""replpool.shard_for against a real PostgreSQL: for random and edge keys of every
supported column type and many moduli, the server's own satisfies_hash_partition
agrees with the remainder replpool computes, and rows inserted into a real hash
partitioned table land in the partition replpool predicts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import replpool

pytestmark = pytest.mark.lab

TYPES = ("int2", "int4", "int8", "text", "varchar", "uuid", "bytea")
INT_RANGES = {"int2": 15, "int4": 31, "int8": 63}
server = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pg(replpool_shared_labs: Any) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the session's PostgreSQL lab, with one hash
    partitioned table per key type in a schema of this module's own."""
    lab = replpool_shared_labs.get("postgresql")
    with psycopg.connect(lab.primary.admin_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS placement CASCADE")
        conn.execute("CREATE SCHEMA placement")
        for t in TYPES:
            conn.execute(f"CREATE TABLE placement.h_{t} (k {t}) PARTITION BY HASH (k)")
        try:
            yield conn
        finally:
            conn.execute("DROP SCHEMA placement CASCADE")


def wrong(conn: psycopg.Connection[Any], column_type: str, keys: list[Any], moduli: list[int]) -> list[Any]:
    """The (key, modulus, remainder) triples, with replpool's remainders, that the
    server's satisfies_hash_partition rejects (one round trip for all of them)."""
    remainders = [replpool.shard_for(k, m) for k, m in zip(keys, moduli)]
    rows = conn.execute(
        f"""SELECT i FROM unnest(%s::{column_type}[], %s::int[], %s::int[]) WITH ORDINALITY AS t(k, m, r, i)
            WHERE NOT satisfies_hash_partition('placement.h_{column_type}'::regclass, m, r, k)""",
        (keys, moduli, remainders),
    ).fetchall()
    return [(keys[i - 1], moduli[i - 1], remainders[i - 1]) for (i,) in rows]


moduli = st.one_of(st.integers(1, 64), st.integers(1, (1 << 31) - 1))
# Text PostgreSQL can store: no NUL, no lone surrogate.
pg_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def int_keys(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(1 << bits), (1 << bits) - 1
    return st.one_of(st.integers(lo, hi), st.sampled_from([0, -1, 1, lo, hi, lo + 1, hi - 1]))


@pytest.mark.parametrize("column_type", ["int2", "int4", "int8"])
def test_integer_keys_land_where_postgresql_puts_them(pg, column_type):
    @server
    @given(st.lists(st.tuples(int_keys(INT_RANGES[column_type]), moduli), min_size=1, max_size=50))
    def check(pairs):
        keys, mods = [k for k, _ in pairs], [m for _, m in pairs]
        assert wrong(pg, column_type, keys, mods) == []

    check()


@pytest.mark.parametrize("column_type", ["text", "varchar"])
def test_string_keys_land_where_postgresql_puts_them(pg, column_type):
    edge = ["", "a", "é", "☃", "😀", "x" * 11, "x" * 12, "x" * 13, "y" * 24, "y" * 25, "naïve café 日本"]

    @server
    @given(st.lists(st.tuples(st.one_of(pg_text, st.sampled_from(edge)), moduli), min_size=1, max_size=50))
    def check(pairs):
        keys, mods = [k for k, _ in pairs], [m for _, m in pairs]
        assert wrong(pg, column_type, keys, mods) == []

    check()


def test_uuid_keys_land_where_postgresql_puts_them(pg):
    edge = [uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1), uuid.UUID(int=1)]

    @server
    @given(st.lists(st.tuples(st.one_of(st.uuids(), st.sampled_from(edge)), moduli), min_size=1, max_size=50))
    def check(pairs):
        keys, mods = [k for k, _ in pairs], [m for _, m in pairs]
        assert wrong(pg, "uuid", keys, mods) == []

    check()


def test_bytea_keys_land_where_postgresql_puts_them(pg):
    @server
    @given(st.lists(st.tuples(st.binary(max_size=40), moduli), min_size=1, max_size=50))
    @example([(b"", 1), (b"\x00", 7), (b"\xff" * 12, 1000), (bytes(range(256)), 97)])
    def check(pairs):
        keys, mods = [k for k, _ in pairs], [m for _, m in pairs]
        assert wrong(pg, "bytea", keys, mods) == []

    check()


def test_rows_inserted_into_a_partitioned_table_land_in_the_predicted_partition(pg):
    """Not only satisfies_hash_partition: the server's own tuple routing."""
    keys = list(range(-50, 50)) + [(1 << 63) - 1, -(1 << 63)]
    pg.execute("CREATE TABLE placement.orders (customer bigint, n int) PARTITION BY HASH (customer)")
    for r in range(5):
        pg.execute(
            f"CREATE TABLE placement.orders_{r} PARTITION OF placement.orders "
            f"FOR VALUES WITH (MODULUS 5, REMAINDER {r})"
        )
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO placement.orders VALUES (%s, 0)", [(k,) for k in keys])
    rows = pg.execute("SELECT customer, tableoid::regclass::text FROM placement.orders").fetchall()
    assert len(rows) == len(keys)
    for customer, partition in rows:
        assert partition == f"placement.orders_{replpool.shard_for(customer, 5)}", customer


# (the column's type, the name postgresql_remainder_sql is given, keys): every type,
# some by their short names (int, int4, varchar...), bytea through hash_array_extended.
SQL_TYPES = [
    ("int2", "int2", int_keys(15)),
    ("int4", "int", int_keys(31)),
    ("int4", "integer", int_keys(31)),
    ("int8", "int8", int_keys(63)),
    ("text", "text", pg_text),
    ("varchar", "varchar", pg_text),
    ("varchar", "character varying(40)", pg_text),
    ("uuid", "uuid", st.uuids()),
    ("bytea", "bytea", st.binary(max_size=40)),
]


@pytest.mark.parametrize("column_type, type_name, keys", SQL_TYPES, ids=[f"{c}-{n}" for c, n, _ in SQL_TYPES])
def test_the_servers_hash_functions_give_the_same_remainders_in_sql(pg, column_type, type_name, keys):
    """postgresql_remainder_sql (what the shard verifier runs) agrees with shard_for,
    and gives NULL for a NULL key."""
    from replpool._placement import postgresql_remainder_sql

    @server
    @given(st.lists(st.one_of(keys, st.none()), min_size=1, max_size=30), moduli)
    def check(values, modulus):
        expr = postgresql_remainder_sql("k", type_name, modulus)
        rows = pg.execute(
            f"SELECT {expr} FROM unnest(%s::{column_type}[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
            (values,),
        ).fetchall()
        assert [r for (r,) in rows] == [None if v is None else replpool.shard_for(v, modulus) for v in values]

    check()


def test_postgresql_refuses_the_moduli_shard_for_refuses(pg):
    """The bound shard_for checks is the server's: MODULUS 2**31 - 1 is taken, 2**31 is not."""
    pg.execute("CREATE TABLE placement.bound (k bigint) PARTITION BY HASH (k)")
    try:
        pg.execute(
            "CREATE TABLE placement.bound_top PARTITION OF placement.bound "
            f"FOR VALUES WITH (MODULUS {(1 << 31) - 1}, REMAINDER 0)"
        )
        with pytest.raises(psycopg.errors.SyntaxError, match="2147483648"):
            pg.execute(
                "CREATE TABLE placement.bound_over PARTITION OF placement.bound "
                f"FOR VALUES WITH (MODULUS {1 << 31}, REMAINDER 1)"
            )
        with pytest.raises(ValueError, match="modulus must be a whole number from 1 to 2147483647"):
            replpool.shard_for(1, 1 << 31)
    finally:
        pg.execute("DROP TABLE placement.bound")


def test_postgresql_refuses_the_text_keys_shard_for_refuses(pg):
    """A text column cannot store a NUL character; shard_for refuses to place one."""
    with pytest.raises(psycopg.errors.CharacterNotInRepertoire, match="0x00"):
        pg.execute(r"SELECT E'a\x00b'::text")
    with pytest.raises(ValueError, match="NUL character"):
        replpool.shard_for("a\x00b", 7)
