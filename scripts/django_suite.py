"""Run Django's own test suite against replpool.backends.postgresql (primary and two
replicas from the lab) and against Django's PostgreSQL backend (the same primary), and
compare what passed.

    python scripts/django_suite.py [MODULE ...] [--parallel N] [--keep-output DIR]

Django's source distribution for the installed version is downloaded once into
~/.cache/replpool/ (its tests are not in the wheel). Exit status 0 when the replpool
run has no failure or error that Django's own backend does not also have.
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

from replpool.testing import PostgresLab

DEFAULT_MODULES = [
    "basic", "transactions", "select_for_update", "get_or_create", "bulk_create",
    "queries", "prefetch_related", "update", "delete", "aggregation", "expressions",
    "lookup", "ordering", "many_to_one", "one_to_one", "m2m_through", "timezones",
    "datetimes", "raw_query", "annotations", "db_functions", "model_fields",
]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "replpool"
# "test_x (module.Class.test_x) ... ok", where a test's own output may come between
# the name and the outcome, on the same line or the next.
RESULT_RE = re.compile(
    r"^(\S+) \((\S+)\)(?:\n.*?)? \.\.\. (?:.*\n)?(ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$",
    re.M,
)


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


def settings_module(lab: PostgresLab, engine: str, directory: Path) -> str:
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
    outcomes = {f"{cls}.{test}": result for test, cls, result in RESULT_RE.findall(output)}
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    return {
        "returncode": proc.returncode,
        "seconds": round(elapsed, 1),
        "ran": int(ran.group(1)) if ran else 0,
        "outcomes": outcomes,
        "output": output,
    }


def summary(result: dict[str, object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in result["outcomes"].values():  # type: ignore[union-attr]
        key = "skipped" if str(outcome).startswith("skipped") else str(outcome)
        counts[key] = counts.get(key, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=DEFAULT_MODULES)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--keep-output", type=Path, help="write both runs' output and a JSON summary here")
    args = parser.parse_args(argv)
    tests = django_source()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, PostgresLab(replicas=2) as lab:
        lab.query(lab.primary, "ALTER ROLE app CREATEDB")
        directory = Path(tmp)
        for engine in ("django.db.backends.postgresql", "replpool.backends.postgresql"):
            print(f"running {len(args.modules)} modules with {engine} ...", flush=True)
            results[engine] = run_suite(
                tests, settings_module(lab, engine, directory), directory, args.modules, args.parallel
            )
    django_run, replpool_run = results["django.db.backends.postgresql"], results["replpool.backends.postgresql"]
    bad = {"FAIL", "ERROR", "unexpected success"}
    ours = {t for t, o in replpool_run["outcomes"].items() if o in bad}  # type: ignore[union-attr]
    theirs = {t for t, o in django_run["outcomes"].items() if o in bad}  # type: ignore[union-attr]
    print(f"\nDjango {django.get_version()} test suite, modules: {' '.join(args.modules)}")
    print(f"  {'backend':<34} {'ran':>6} {'ok':>6} {'skipped':>8} {'failed':>7} {'seconds':>8}")
    for engine, result in results.items():
        c = summary(result)
        print(
            f"  {engine:<34} {result['ran']:>6} {c.get('ok', 0) + c.get('expected failure', 0):>6} "
            f"{c.get('skipped', 0):>8} {c.get('FAIL', 0) + c.get('ERROR', 0):>7} {result['seconds']:>8}"
        )
    only_ours = sorted(ours - theirs)
    if args.keep_output:
        args.keep_output.mkdir(parents=True, exist_ok=True)
        for engine, result in results.items():
            (args.keep_output / f"{engine}.log").write_text(str(result["output"]))
        (args.keep_output / "summary.json").write_text(json.dumps(
            {e: {"ran": r["ran"], "counts": summary(r), "seconds": r["seconds"]} for e, r in results.items()}
            | {"failing_only_with_replpool": only_ours}, indent=2,
        ))
    if replpool_run["ran"] == 0 or django_run["ran"] == 0:
        failed = replpool_run if replpool_run["ran"] == 0 else django_run
        print("a run did not start; its output:\n" + str(failed["output"])[-3000:])
        return 2
    if only_ours:
        print("\nfailing with replpool only:\n  " + "\n  ".join(only_ours))
        return 1
    print("\nreplpool passes every test Django's own PostgreSQL backend passes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
