"""The Django engine, through a real Django project (tests/djangoproject) on a lab with
two replicas: its own test suite run by ``manage.py test``, and the management commands
users rely on."""

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


@pytest.fixture(scope="module")
def django_lab(replpool_shared_labs: Any) -> Any:
    from replpool.testing import PostgresLab

    lab = PostgresLab(replicas=2).start()
    try:
        lab.query(lab.primary, "ALTER ROLE app CREATEDB")
        lab.query(lab.primary, "CREATE DATABASE legacy OWNER app")
        lab.wait_until_caught_up()
        yield lab
    finally:
        lab.stop()


def lab_env(lab: Any) -> dict[str, str]:
    description = {
        "host": lab.primary.host,
        "password": lab.password,
        "primary": lab.primary.port,
        "replicas": [r.port for r in lab.replicas],
        "primary_name": lab.primary.name,
        "replica_names": [r.name for r in lab.replicas],
        "admin": {m.name: m.admin_dsn for m in lab.members},
    }
    return {**os.environ, "REPLPOOL_TEST_LAB": json.dumps(description), "PYTHONWARNINGS": "error"}


def manage(lab: Any, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT, env=lab_env(lab), capture_output=True, text=True, timeout=timeout,
    )


def test_the_projects_own_tests_pass_with_manage_py_test(django_lab):
    proc = manage(django_lab, "test", "--noinput", "-v", "2", "shop")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "OK" in output and "FAILED" not in output
    ran = [line for line in output.splitlines() if line.startswith("Ran ")]
    assert ran and int(ran[0].split()[1]) >= 14, ran
    assert django_lab.password not in output


def test_migrate_inspectdb_and_dbshell_work(django_lab):
    for args in (("migrate", "--noinput"), ("migrate", "--noinput", "--database", "legacy_db")):
        proc = manage(django_lab, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    tables = {
        db: {r[0] for r in django_lab.query(
            django_lab.replicas[0],
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        )} if db == "app" else None
        for db in ("app",)
    }
    django_lab.wait_until_caught_up()
    rows = django_lab.query(
        django_lab.replicas[1], "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert {"shop_item", "auth_user", "django_migrations"} <= {r[0] for r in rows}
    assert tables["app"] is not None
    inspect = manage(django_lab, "inspectdb", "shop_item")
    assert inspect.returncode == 0, inspect.stderr
    assert "class ShopItem(models.Model):" in inspect.stdout
    shell = manage(django_lab, "dbshell", "--", "-Atc", "SELECT current_user || ' on ' || current_database()")
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == "app on app"
    check = manage(django_lab, "check", "--database", "default")
    assert check.returncode == 0, check.stderr


def test_djangos_own_tests_pass_as_with_djangos_backend() -> None:
    """A few modules of Django's own test suite (scripts/django_suite.py runs more)."""
    proc = subprocess.run(
        [sys.executable, "scripts/django_suite.py", "basic", "transactions", "select_for_update"],
        cwd=PROJECT.parent.parent, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "replpool passes every test Django's own PostgreSQL backend passes" in proc.stdout
