"""Capture the SQL Django's ORM sends while Django's own test modules run, for the
statement classifier's corpus test (tests/test_sql_orm.py).

    python scripts/capture_orm_sql.py [MODULE ...]

Runs the modules with Django's PostgreSQL backend on a PostgreSQL lab and with
mysql.connector's Django backend on a MariaDB lab (no replicas: only the text matters),
and writes tests/data/orm_sql_<dialect>.txt.gz: every distinct statement, each with what
produced it, so the test knows which ones must read as plain reads:

    read <TAB> sql      compiled by the ORM for a read (SQLCompiler, SQLAggregateCompiler)
    lock <TAB> sql      the same with select_for_update()
    other <TAB> sql     anything else (writes, schema changes, raw SQL, transactions)

Each statement is written as a JSON string, one a line.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from django_suite import django_source, run_suite  # noqa: E402

from replpool.testing import MariaDBLab, PostgresLab  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
DEFAULT_MODULES = [
    "basic", "lookup", "queries", "ordering", "aggregation", "aggregation_regress",
    "annotations", "expressions", "expressions_case", "expressions_window", "db_functions",
    "select_for_update", "prefetch_related", "many_to_one", "model_fields", "datetimes",
    "timezones", "custom_lookups", "filtered_relation", "update", "delete",
]

# Installed through TEST_RUNNER: tags every statement with the compiler running it.
RUNNER = '''
import contextvars, json, os, re
from django.db.backends import utils
from django.db.models.sql import compiler
from django.test.runner import DiscoverRunner

_current = contextvars.ContextVar("compiler", default=None)
_seen = {}


def _execute_sql(original):
    def execute_sql(self, *args, **kwargs):
        tag = "other"
        if type(self).__name__ in ("SQLCompiler", "SQLAggregateCompiler"):
            tag = "lock" if self.query.select_for_update else "read"
        token = _current.set(tag)
        try:
            return original(self, *args, **kwargs)
        finally:
            _current.reset(token)
    return execute_sql


def _execute(original):
    def execute(self, sql, *args, **kwargs):
        if isinstance(sql, str):
            # Savepoint names differ in every test: one of each form is enough.
            _seen.setdefault(re.sub(r"s\\d+_x\\d+", "s1_x1", sql), _current.get() or "other")
        return original(self, sql, *args, **kwargs)
    return execute


class CaptureRunner(DiscoverRunner):
    def setup_test_environment(self, **kwargs):
        super().setup_test_environment(**kwargs)
        compiler.SQLCompiler.execute_sql = _execute_sql(compiler.SQLCompiler.execute_sql)
        utils.CursorWrapper._execute = _execute(utils.CursorWrapper._execute)
        utils.CursorWrapper._executemany = _execute(utils.CursorWrapper._executemany)

    def teardown_test_environment(self, **kwargs):
        super().teardown_test_environment(**kwargs)
        with open(os.environ["REPLPOOL_CAPTURE"], "w") as out:
            for sql, tag in _seen.items():
                out.write(tag + "\\t" + json.dumps(sql) + "\\n")
'''


def settings(directory: Path, engine: str, databases: dict[str, dict[str, object]]) -> str:
    name = f"capture_{engine.replace('.', '_')}"
    (directory / "capture_runner.py").write_text(RUNNER)
    (directory / f"{name}.py").write_text(textwrap.dedent(f"""
        DATABASES = {databases!r}
        SECRET_KEY = "django_tests_secret_key"
        PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
        USE_TZ = False
        TEST_RUNNER = "capture_runner.CaptureRunner"
    """))
    return name


def capture(engine: str, databases: dict[str, dict[str, object]], modules: list[str], out: Path) -> int:
    tests = django_source()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        raw = directory / "captured.txt"
        import os

        os.environ["REPLPOOL_CAPTURE"] = str(raw)
        result = run_suite(tests, settings(directory, engine, databases), directory, modules, 1)
        if not raw.exists():
            print(str(result["output"])[-3000:])
            raise SystemExit(f"{engine}: nothing captured")
        lines = sorted(set(raw.read_text().splitlines()))
    with gzip.open(out, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{engine}: {result['ran']} tests, {len(lines)} distinct statements -> {out}")
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=DEFAULT_MODULES)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with PostgresLab(replicas=0) as lab:
        lab.query(lab.primary, "ALTER ROLE app CREATEDB")
        m = lab.primary
        db = {"ENGINE": "django.db.backends.postgresql", "USER": "app", "PASSWORD": lab.password,
              "HOST": m.host, "PORT": str(m.port)}
        capture("django.db.backends.postgresql", {"default": {**db, "NAME": "app"}, "other": {**db, "NAME": "other"}},
                args.modules, OUT / "orm_sql_postgresql.txt.gz")
    with MariaDBLab(replicas=0) as lab:
        lab.query(lab.primary, "GRANT ALL ON *.* TO 'app'@'%'")
        m = lab.primary
        db = {"ENGINE": "mysql.connector.django", "USER": "app", "PASSWORD": lab.password,
              "HOST": m.host, "PORT": str(m.port), "OPTIONS": {"use_pure": True}}
        capture("mysql.connector.django", {"default": {**db, "NAME": "app"}, "other": {**db, "NAME": "other"}},
                args.modules, OUT / "orm_sql_mysql.txt.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
