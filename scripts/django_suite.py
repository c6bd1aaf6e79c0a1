"""Run Django's own test suite against a replpool engine (a primary and two replicas
from the lab) and against the backend it builds on (the same primary alone), and
compare what passed.

    python scripts/django_suite.py [MODULE ...] [--engine postgresql|mariadb]
                                   [--parallel N] [--keep-output DIR]

``postgresql`` (the default) compares ``replpool.backends.postgresql`` with Django's
PostgreSQL backend; ``mariadb`` compares ``replpool.backends.mysql`` with
mysql-connector-python's backend (``mysql.connector.django``), which it builds on.
Django's source distribution for the installed version is downloaded once into
~/.cache/replpool/ (its tests are not in the wheel). Exit status 0 when every failure or
error of the replpool run is one the other backend has too, or one of the deliberate
differences listed in DELIBERATE (and in the README, with their reasons).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import django

from replpool.testing import MariaDBLab, PostgresLab

DEFAULT_MODULES = [
    "basic", "transactions", "select_for_update", "get_or_create", "bulk_create",
    "queries", "prefetch_related", "update", "delete", "aggregation", "expressions",
    "lookup", "ordering", "many_to_one", "one_to_one", "m2m_through", "timezones",
    "datetimes", "raw_query", "annotations", "db_functions", "model_fields",
    "backends", "servers", "test_utils",
]
# The backend each replpool engine builds on, which the suite compares it with.
ENGINES = {
    "postgresql": ("django.db.backends.postgresql", "replpool.backends.postgresql"),
    "mariadb": ("mysql.connector.django", "replpool.backends.mysql"),
}
# Tests that fail with replpool by design, and why (README, "Django's own test suite").
# A deliberate difference that passes in a run (a race replpool may win) is fine too.
_LAZY = (
    "a connection takes a primary connection from its pool when a statement needs one, "
    "not when Django connects (a request that only reads holds none), so three connect() "
    "calls on a pool of two do not time out"
)
_LIVE_WRITES = (
    "the test reads, in its own session, what the live server's thread wrote in another: "
    "without the server's token it may read a replica that has not replayed that yet"
)
DELIBERATE = {
    "postgresql": {
        "backends.postgresql.tests.Tests.test_connect_pool": _LAZY,
        "servers.tests.LiveServerDatabase.test_database_writes": _LIVE_WRITES,
    },
    "mariadb": {
        "servers.tests.LiveServerDatabase.test_database_writes": _LIVE_WRITES,
    },
}
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "replpool"
# "test_x (module.Class.test_x) ... ok", where a test's own output may come between
# the name and the outcome, on the same line or the next.
RESULT_RE = re.compile(
    r"^(\S+) \((\S+)\)(?:\n.*?)? \.\.\. (?:.*\n)?(ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$",
    re.M,
)
# The report unittest prints for each failure and error, subtests included: the word
# for them, whatever came between a test's name and its outcome.
FAILURE_RE = re.compile(r"^(FAIL|ERROR): (\S+) \((\S+)\)", re.M)


def test_id(test: str, where: str) -> str:
    """``module.Class.test``: Django 5.2 prints ``test (module.Class.test)``, older
    versions ``test (module.Class)``."""
    return where if where.endswith("." + test) else f"{where}.{test}"


def django_source() -> Path:
    """The tests/ folder of Django's source distribution for the installed version."""
    version = django.get_version()
    root = CACHE / f"django-{version}"
    tests = root / f"django-{version}" / "tests"
    if tests.is_dir():
        return tests
    root.mkdir(parents=True, exist_ok=True)
    print(f"downloading Django {version}'s source distribution into {root}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--disable-pip-version-check", f"django=={version}", "-d", str(root)],
        check=True,
    )
    archive = next(root.glob("[dD]jango-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return tests


def settings_module(lab: PostgresLab | MariaDBLab, engine: str, directory: Path) -> str:
    replicas = [{"PORT": str(r.port)} for r in lab.replicas] if engine.startswith("replpool") else None
    name = f"settings_{engine.replace('.', '_')}"

    def db(dbname: str) -> dict[str, object]:
        entry: dict[str, object] = {
            "ENGINE": engine, "NAME": dbname, "USER": "app", "PASSWORD": lab.password,
            "HOST": lab.primary.host, "PORT": str(lab.primary.port),
        }
        if replicas is not None:
            entry["OPTIONS"] = {"replicas": replicas, "monitor_interval": 0.05}
        return entry

    (directory / f"{name}.py").write_text(textwrap.dedent(f"""
        DATABASES = {{"default": {db("app")!r}, "other": {db("other")!r}}}
        SECRET_KEY = "django_tests_secret_key"
        PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
        USE_TZ = False
    """))
    return name


def prepare(lab: PostgresLab | MariaDBLab) -> None:
    """Let the app user create and drop the test databases Django's runner makes."""
    if lab.engine == "postgresql":
        lab.query(lab.primary, "ALTER ROLE app CREATEDB")
    else:
        # On the primary, replicated: database-level privileges only, which read_only
        # on the replicas does not spare.
        lab.query(lab.primary, "GRANT ALL ON `test\\_%`.* TO 'app'@'%'")
        lab.wait_until_caught_up()


def run_suite(tests: Path, settings: str, directory: Path, modules: list[str], parallel: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(directory), str(tests)])}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "runtests.py", f"--settings={settings}", f"--parallel={parallel}",
         "-v", "2", "--noinput", *modules],
        cwd=tests, env=env, capture_output=True, text=True,
    )
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    outcomes = {test_id(test, where): result for test, where, result in RESULT_RE.findall(output)}
    for result, test, where in FAILURE_RE.findall(output):
        outcomes[test_id(test, where)] = result
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    # unittest's last word: "OK (skipped=3)" or "FAILED (failures=1, errors=2, skipped=3)".
    last = re.search(r"^(?:OK|FAILED)(?: \((.*)\))?$", output, re.M)
    counts = {k.strip(): int(v) for k, v in re.findall(r"([a-z ]+)=(\d+)", last.group(1) or "")} if last else {}
    return {
        "returncode": proc.returncode,
        "seconds": round(elapsed, 1),
        "ran": int(ran.group(1)) if ran else 0,
        "skipped": counts.get("skipped", 0),
        "outcomes": outcomes,
        "output": output,
    }


BAD = frozenset({"FAIL", "ERROR", "unexpected success"})


def failing(result: dict[str, object]) -> set[str]:
    """The tests that failed, erred or succeeded unexpectedly (a test whose subtests
    failed counts once)."""
    return {t for t, o in result["outcomes"].items() if o in BAD}  # type: ignore[attr-defined]


def counts(result: dict[str, object]) -> dict[str, int]:
    """Tests run, passed (expected failures included), skipped and failed."""
    failed = len(failing(result))
    ran, skipped = int(result["ran"]), int(result["skipped"])  # type: ignore[call-overload]
    return {"ran": ran, "passed": ran - skipped - failed, "skipped": skipped, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=DEFAULT_MODULES)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="postgresql")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--keep-output", type=Path, help="write both runs' output and a JSON summary here")
    args = parser.parse_args(argv)
    tests = django_source()
    theirs_engine, ours_engine = ENGINES[args.engine]
    lab_class = PostgresLab if args.engine == "postgresql" else MariaDBLab
    results = {}
    with tempfile.TemporaryDirectory() as tmp, lab_class(replicas=2) as lab:
        prepare(lab)
        directory = Path(tmp)
        for engine in (theirs_engine, ours_engine):
            print(f"running {len(args.modules)} modules with {engine} ...", flush=True)
            results[engine] = run_suite(
                tests, settings_module(lab, engine, directory), directory, args.modules, args.parallel
            )
    theirs_run, ours_run = results[theirs_engine], results[ours_engine]
    only_ours = sorted(failing(ours_run) - failing(theirs_run))
    deliberate = DELIBERATE[args.engine]
    unexpected = [t for t in only_ours if t not in deliberate]
    print(f"\nDjango {django.get_version()} test suite, modules: {' '.join(args.modules)}")
    print(f"  {'backend':<34} {'ran':>6} {'passed':>7} {'skipped':>8} {'failed':>7} {'seconds':>8}")
    for engine, result in results.items():
        c = counts(result)
        print(
            f"  {engine:<34} {c['ran']:>6} {c['passed']:>7} {c['skipped']:>8} {c['failed']:>7} "
            f"{result['seconds']:>8}"
        )
    if args.keep_output:
        args.keep_output.mkdir(parents=True, exist_ok=True)
        for engine, result in results.items():
            (args.keep_output / f"{engine}.log").write_text(str(result["output"]))
        (args.keep_output / "summary.json").write_text(json.dumps(
            {e: counts(r) | {"seconds": r["seconds"]} for e, r in results.items()}
            | {"failing_only_with_replpool": only_ours}, indent=2,
        ))
    if ours_run["ran"] == 0 or theirs_run["ran"] == 0:
        failed = ours_run if ours_run["ran"] == 0 else theirs_run
        print("a run did not start; its output:\n" + str(failed["output"])[-3000:])
        return 2
    known = [t for t in only_ours if t in deliberate]
    if known:
        print("\nfailing with replpool only, by design (see the README):")
        for t in known:
            print(f"  {t}: {deliberate[t]}")
    if unexpected:
        print("\nfailing with replpool only:\n  " + "\n  ".join(unexpected))
        return 1
    but = ", but for the differences by design above" if known else ""
    print(f"\nreplpool passes every test {theirs_engine} passes{but}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
