"""Django sharding through a real project (tests/shardproject) on the shared shard lab
(three PostgreSQL clusters, a primary and a replica each): its own tests run by
``manage.py test`` (which creates every shard's test database), ``migrate`` on every
shard at once with a failure naming its shard, and ``check_shards``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import replpool

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROJECT = Path(__file__).parent / "shardproject"
LOGICAL = 48  # the project's REPLPOOL_SHARDING["logical_shards"]


def admin(shard: Any, member: Any, dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(member.admin_dsn, dbname=dbname, autocommit=True)


@pytest.fixture(scope="module")
def lab(replpool_shared_labs: Any) -> Iterator[Any]:
    """The shared shard lab, with a ``main`` database (default) on the first shard's
    servers and a ``shards`` database on every shard; the app user may create the
    test databases."""
    lab = replpool_shared_labs.get_shards()
    for i, shard in enumerate(lab.shards):
        shard.query(shard.primary, "ALTER ROLE app CREATEDB")
        for name in ("shards", "main") if i == 0 else ("shards",):
            shard.query(shard.primary, f"DROP DATABASE IF EXISTS {name}")
            shard.query(shard.primary, f"CREATE DATABASE {name} OWNER app")
    lab.each(lambda shard: shard.wait_until_caught_up())
    try:
        yield lab
    finally:
        for i, shard in enumerate(lab.shards):
            for name in ("shards", "main") if i == 0 else ("shards",):
                shard.query(shard.primary, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def lab_env(lab: Any) -> dict[str, str]:
    description = {
        "host": lab.shards[0].primary.host,
        "password": lab.password,
        "shards": [
            {
                "primary": shard.primary.port,
                "replicas": [r.port for r in shard.replicas],
                "primary_name": shard.primary.name,
                "replica_names": [r.name for r in shard.replicas],
                "admin": {m.name: m.admin_dsn for m in shard.members},
            }
            for shard in lab.shards
        ],
    }
    return {**os.environ, "REPLPOOL_TEST_SHARDS": json.dumps(description), "PYTHONWARNINGS": "error"}


def manage(lab: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT, env=lab_env(lab), capture_output=True, text=True, timeout=timeout,
    )


def tables(shard: Any, dbname: str) -> set[str]:
    with admin(shard, shard.primary, dbname) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_the_shard_projects_own_tests_pass_with_manage_py_test(lab):
    proc = manage(lab, "test", "--noinput", "-v", "2", "tenants")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    for alias in ("default", "shard1", "shard2", "shard3"):
        assert f"Creating test database for alias '{alias}'" in output, output[-3000:]
    ran = [line for line in output.splitlines() if line.startswith("Ran ")]
    assert ran and int(ran[0].split()[1]) >= 25, ran


def test_migrate_runs_on_every_shard_and_a_failure_names_its_shard(lab):
    # A table in the way on shard2 only: its migration fails, the others go through.
    with admin(lab.shards[1], lab.shards[1].primary, "shards") as conn:
        conn.execute("CREATE TABLE tenants_customer (blocking int)")
    failed = manage(lab, "migrate", "--noinput")
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "migrate failed on 1 of 3 shards ('shard2': ProgrammingError" in output, output[-3000:]
    assert 'relation "tenants_customer" already exists' in output
    assert "2 migrated" in output
    assert {"tenants_customer", "tenants_order", "tenants_orderline"} <= tables(lab.shards[0], "shards")
    assert {"tenants_customer", "tenants_order", "tenants_orderline"} <= tables(lab.shards[2], "shards")

    with admin(lab.shards[1], lab.shards[1].primary, "shards") as conn:
        conn.execute("DROP TABLE tenants_customer")
    done = manage(lab, "migrate", "--noinput")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Migrating 3 shards at once: shard1, shard2, shard3" in done.stdout
    for shard in lab.shards:
        on_shard = tables(shard, "shards")
        assert {"tenants_customer", "tenants_order", "tenants_orderline", "django_migrations"} <= on_shard
        assert not on_shard & {"catalog_product", "auth_user", "django_content_type"}
    on_default = tables(lab.shards[0], "main")
    assert {"catalog_product", "auth_user", "django_content_type"} <= on_default
    assert not on_default & {"tenants_customer", "tenants_order"}
    # The shards got the id function; default did not.
    with admin(lab.shards[2], lab.shards[2].primary, "shards") as conn:
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'replpool_shard_id'").fetchone() == (1,)
    with admin(lab.shards[0], lab.shards[0].primary, "main") as conn:
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'replpool_shard_id'").fetchone() == (0,)


def test_check_shards_reports_rows_on_the_wrong_shard(lab):
    migrated = manage(lab, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    import uuid

    shard_map = replpool.ShardMap(replpool.HashPlacement(LOGICAL), ["shard1", "shard2", "shard3"])
    home = next(u for u in (uuid.uuid4() for _ in range(1000)) if shard_map.cluster_of(u) == "shard1")
    stray = next(u for u in (uuid.uuid4() for _ in range(1000)) if shard_map.cluster_of(u) == "shard2")
    with admin(lab.shards[0], lab.shards[0].primary, "shards") as conn:
        conn.execute("INSERT INTO tenants_customer (id, name) VALUES (%s, 'home'), (%s, 'stray')", (home, stray))
    try:
        proc = manage(lab, "check_shards")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "tenants.Customer (tenants_customer.id): 1 rows on the wrong shard" in proc.stdout
        assert "shard1 holds 1 rows of other shards:" in proc.stdout
        logical = replpool.shard_for(stray, LOGICAL)
        assert f"id=UUID('{stray}') -> logical shard {logical}, belongs on shard2" in proc.stdout
        assert "tenants.Order (tenants_order.customer_id): every row on its shard" in proc.stdout
        assert "1 rows are stored on the wrong shard" in proc.stderr
    finally:
        with admin(lab.shards[0], lab.shards[0].primary, "shards") as conn:
            conn.execute("DELETE FROM tenants_customer")
    clean = manage(lab, "check_shards")
    assert clean.returncode == 0, clean.stdout + clean.stderr
