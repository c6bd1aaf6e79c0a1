"""The Django engines, through a real Django project (tests/djangoproject) on a lab with
two replicas, PostgreSQL (``replpool.backends.postgresql``) and MariaDB
(``replpool.backends.mysql``): its own test suite run by ``manage.py test``, and the
management commands users rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROJECT = Path(__file__).parent / "djangoproject"


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def django_lab(request: pytest.FixtureRequest, replpool_shared_labs: Any) -> Any:
    """A lab of the engine's own for this module; the app user may create and drop the
    test databases Django's test runner makes, and a ``legacy`` database exists."""
    if request.param == "postgresql":
        from replpool.testing import PostgresLab

        lab = PostgresLab(replicas=2).start()
    else:
        from replpool.testing import MariaDBLab

        lab = MariaDBLab(replicas=2).start()
    try:
        if lab.engine == "postgresql":
            lab.query(lab.primary, "ALTER ROLE app CREATEDB")
            lab.query(lab.primary, "CREATE DATABASE legacy OWNER app")
        else:
            # Run on the primary and replicated, as the application's own grants are.
            # Database-level privileges only: no global one that read_only would spare.
            lab.query(lab.primary, "CREATE DATABASE legacy")
            lab.query(lab.primary, "GRANT ALL ON `legacy`.* TO 'app'@'%'")
            lab.query(lab.primary, "GRANT ALL ON `test\\_%`.* TO 'app'@'%'")
            # The app user may create its own SQL functions (a binary-logging server
            # otherwise asks for SUPER): the project's tests make one.
            lab.query(lab.primary, "SET GLOBAL log_bin_trust_function_creators = 1")
        lab.wait_until_caught_up()
        yield lab
    finally:
        lab.stop()


def lab_env(lab: Any) -> dict[str, str]:
    if lab.engine == "postgresql":
        admin = {m.name: m.admin_dsn for m in lab.members}
    else:
        admin = {m.name: m.admin_connect_kwargs() for m in lab.members}
    description = {
        "engine": lab.engine,
        "host": lab.primary.host,
        "password": lab.password,
        "primary": lab.primary.port,
        "replicas": [r.port for r in lab.replicas],
        "primary_name": lab.primary.name,
        "replica_names": [r.name for r in lab.replicas],
        "admin": admin,
    }
    return {
        **os.environ,
        "REPLPOOL_TEST_LAB": json.dumps(description),
        "REPLPOOL_TEST_ENGINE": lab.engine,
        "PYTHONWARNINGS": "error",
    }


def manage(
    lab: Any, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT, env={**lab_env(lab), **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )


def table_names(lab: Any, member: Any, database: str) -> set[str]:
    """The tables of ``database`` on one member, asked of that member directly."""
    if lab.engine == "postgresql":
        assert database == "app"  # the lab's superuser DSNs name it
        rows = lab.query(member, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = lab.query(
            member, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (database,),
        )
    return {r[0] for r in rows}


def test_the_projects_own_tests_pass_with_manage_py_test(django_lab):
    proc = manage(django_lab, "test", "--noinput", "-v", "2", "shop")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "OK" in output and "FAILED" not in output
    ran = [line for line in output.splitlines() if line.startswith("Ran ")]
    assert ran and int(ran[0].split()[1]) >= 18, ran
    assert django_lab.password not in output


def test_parallel_test_workers_leave_the_parents_connections_alone(django_lab):
    """``manage.py test --parallel`` forks workers that inherit the parent's clusters and
    close them: the parent's connections must keep working, and nothing be reported
    down (issue 13, item 7: expected events are not warnings)."""
    # Classes that do not pause or break the lab's servers (workers run side by side).
    proc = manage(django_lab, "test", "--noinput", "--parallel", "2", "shop.tests.TaskTests",
                  "shop.tests.TokenTests", "shop.tests.TestDatabaseTests", "shop.tests.LegacyDatabaseTests",
                  env={"REPLPOOL_TEST_LOG_LEVEL": "WARNING"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for unexpected in ("is down", "no primary is reachable", "Lost connection", "WARNING"):
        assert unexpected not in output, output


def test_migrate_inspectdb_and_dbshell_work(django_lab):
    for args in (("migrate", "--noinput"), ("migrate", "--noinput", "--database", "legacy_db")):
        proc = manage(django_lab, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    django_lab.wait_until_caught_up()
    for replica in django_lab.replicas:
        assert {"shop_item", "auth_user", "django_migrations"} <= table_names(django_lab, replica, "app")
    if django_lab.engine == "postgresql":
        inspect = manage(django_lab, "inspectdb", "shop_item")
        assert inspect.returncode == 0, inspect.stderr
        assert "class ShopItem(models.Model):" in inspect.stdout
        who = ("-Atc", "SELECT current_user || ' on ' || current_database()")
        broken = ("-c", "SELECT no_such_column")
    else:
        legacy = table_names(django_lab, django_lab.replicas[1], "legacy")
        assert "legacy_customer" in legacy and "shop_item" not in legacy, legacy
        # No inspectdb: mysql-connector-python's backend (26.x) cannot run it under
        # Django 5.2, replpool or not (its FieldInfo has no "comment", which it reads).
        who = ("-N", "-B", "-e", "SELECT CONCAT(SUBSTRING_INDEX(CURRENT_USER(), '@', 1), ' on ', DATABASE())")
        broken = ("-e", "SELECT no_such_column")
    shell = manage(django_lab, "dbshell", "--", *who)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == "app on app"
    # A failing client: Django's error names the command it ran, without the password.
    failed = manage(django_lab, "dbshell", "--", *broken)
    assert failed.returncode != 0
    assert "no_such_column" in failed.stdout + failed.stderr
    assert django_lab.password not in failed.stdout + failed.stderr
    check = manage(django_lab, "check", "--database", "default")
    assert check.returncode == 0, check.stderr


def test_migrate_twice_in_a_row_with_lagging_replicas(django_lab):
    """Each migrate is a process of its own: the second must see what the first
    recorded, though no replica has applied it yet (the cluster's floor is the primary's
    position when the process opened it)."""
    first = manage(django_lab, "migrate", "--noinput")
    assert first.returncode == 0, first.stdout + first.stderr
    unapply = manage(django_lab, "migrate", "--noinput", "shop", "zero")
    assert unapply.returncode == 0, unapply.stdout + unapply.stderr
    django_lab.wait_until_caught_up()
    paused, delayed = django_lab.replicas
    django_lab.pause_replication(paused)
    django_lab.set_apply_delay(delayed, 5)
    try:
        for _ in range(2):
            proc = manage(django_lab, "migrate", "--noinput", "shop")
            assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "No migrations to apply" in proc.stdout, proc.stdout
    finally:
        django_lab.heal()


def test_djangos_own_tests_pass_as_with_djangos_backend() -> None:
    """A few modules of Django's own test suite (scripts/django_suite.py runs more), and
    the tests of its backends module that look at the connection object most closely:
    cursors, threads, health checks, pools, the PostgreSQL backend's own."""
    proc = subprocess.run(
        [sys.executable, "scripts/django_suite.py", "basic", "transactions", "select_for_update",
         "backends.postgresql.tests", "backends.tests.BackendTestCase", "backends.tests.ThreadTests",
         "backends.base.test_base.ConnectionHealthChecksTests"],
        cwd=PROJECT.parent.parent, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "replpool passes every test django.db.backends.postgresql passes" in proc.stdout
