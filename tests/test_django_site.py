"""A second Django project (tests/djangosite) on a lab started the way the README tells a
Django user to: ``python -m replpool lab up --database users --database archive``, its
printed DATABASES pasted in unchanged. The project runs contrib apps with auth on a
database of its own (the README's router example), an archive database, and a live
server, on PostgreSQL (``replpool.backends.postgresql``) and MariaDB
(``replpool.backends.mysql``)."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.labtools import lab_up_lines

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROJECT = Path(__file__).parent / "djangosite"


@dataclass
class Site:
    engine: str
    output: str
    databases: dict[str, Any]
    members: list[list[str]]
    password: str
    migrated: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    tests_output: str | None = None


def parse_lab_up(output: str) -> tuple[dict[str, Any], list[list[str]]]:
    """The DATABASES snippet ``lab up`` printed, and each member's name, role and
    superuser URL."""
    lines = output.splitlines()
    start = lines.index("DATABASES = {")
    end = lines.index("}", start)
    databases = ast.literal_eval("\n".join(lines[start : end + 1])[len("DATABASES = ") :])
    members = []
    for i, line in enumerate(lines):
        words = line.split()
        if len(words) == 4 and words[1] in ("primary", "replica") and "://" in words[3]:
            admin = next(lines[j].split()[-1] for j in range(i + 1, len(lines)) if "superuser" in lines[j])
            members.append([words[0], words[1], admin])
    return databases, members


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def site(request: pytest.FixtureRequest) -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-m", "replpool", "lab", "up", "--engine", request.param,
         "--replicas", "2", "--database", "users", "--database", "archive"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    try:
        text = "".join(lab_up_lines(proc)).rstrip("\n")
        databases, members = parse_lab_up(text)
        yield Site(request.param, text, databases, members, databases["default"]["PASSWORD"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()


def manage(
    site: Site, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    description = {"engine": site.engine, "databases": site.databases, "members": site.members}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "REPLPOOL_SITE": json.dumps(description), "PYTHONWARNINGS": "error", **(env or {})},
    )


def migrated(site: Site) -> dict[str, subprocess.CompletedProcess[str]]:
    """``migrate`` then ``migrate --database users``, as the README says (once per lab)."""
    if not site.migrated:
        for alias in ("default", "users"):
            site.migrated[alias] = manage(site, "migrate", "--noinput", "--database", alias)
    return site.migrated


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def requests(site: Site, *lines: str, env: dict[str, str]) -> list[dict[str, Any]]:
    proc = manage(site, "site_requests", *lines, env=env)
    assert proc.returncode == 0, output(proc)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def project_tests(site: Site) -> str:
    """The output of the project's own tests (``manage.py test books``), run once per lab."""
    if site.tests_output is None:
        site.tests_output = output(manage(site, "test", "--noinput", "-v", "2", "books"))
    return site.tests_output


def assert_passed(site: Site, test_class: str, at_least: int = 1) -> None:
    """Every test of ``test_class`` in the project's run passed."""
    text = project_tests(site)
    results = [line for line in text.splitlines() if f"(books.tests.{test_class}." in line and " ... " in line]
    assert len(results) >= at_least, text
    failed = [line for line in results if not line.endswith(" ok")]
    assert not failed, f"{failed}\n\n{text[-6000:]}"


# -- the lab's own part (issue 13, items 6 and 7) ------------------------------------------


def test_lab_up_prints_databases_with_which_a_project_runs_its_tests(site):
    """The printed DATABASES, pasted unchanged, are enough: the app user creates the test
    databases of every alias (default, users, archive) and the tests run there."""
    assert set(site.databases) == {"default", "users", "archive"}
    text = project_tests(site)
    for alias in site.databases:
        assert f"Creating test database for alias '{alias}'" in text, text
    assert_passed(site, "SmokeTests")


def test_manage_py_test_prints_no_warning_for_expected_events(site):
    """A replica that has not replayed a new test database yet is expected (it joins
    once it has): nothing about it may be a warning, nor may the pools' retries be."""
    text = project_tests(site)
    noise = [
        line for line in text.splitlines()
        if any(s in line for s in ("does not exist", "Unknown database", " is down", "error connecting",
                                   "answering again", "WARNING"))
    ]
    assert not noise, text
    assert site.password not in text


# -- routers (item 1) -------------------------------------------------------------------------


def test_the_readme_router_example_works_end_to_end(site):
    """REPLPOOL_DATABASE_APPS = {"auth": "users", "contenttypes": "users", "admin": "users"}
    with contenttypes, auth, sessions and admin: migrate on both databases, a user with
    permissions, has_perm, the admin logging an addition, a session."""
    for proc in migrated(site).values():
        assert proc.returncode == 0, output(proc)
    proc = manage(site, "users_roundtrip")
    assert proc.returncode == 0, output(proc)
    found = json.loads(proc.stdout)
    assert found["user_db"] == "users"
    assert found["permissions"] == ["add_book", "view_book"]
    assert found["has_perm"] == [True, True, False]
    assert found["logged_in"] is True
    assert (found["changelist"], found["added"]) == (200, 302)
    assert found["book_db"] == "default"
    assert [e[0] for e in found["log_entries"]] == [1]  # ADDITION
    assert found["log_entries"][0][2] == "users"
    assert found["log_content_type"] == ["books.book"]
    assert found["sessions_on_default"] >= 1
    default, users = set(found["tables"]["default"]), set(found["tables"]["users"])
    assert {"books_book", "django_session"} <= default
    assert not {"auth_user", "django_admin_log", "django_content_type"} & default
    assert {"auth_user", "auth_permission", "django_admin_log", "django_content_type"} <= users
    assert not {"books_book", "django_session"} & users


def test_a_mapping_that_splits_related_apps_is_refused_at_start_up(site):
    """{"auth": "users"} alone would put auth's tables beside no content types and leave
    admin's log pointing at users on another database: check and migrate refuse it,
    naming what must go with auth."""
    env = {"REPLPOOL_SITE_APPS": json.dumps({"auth": "users", "books": "default"})}
    for args in (("check",), ("migrate", "--noinput", "--database", "users")):
        proc = manage(site, *args, env=env)
        text = output(proc)
        assert proc.returncode != 0, text
        assert "replpool.E008" in text, text
        assert "'contenttypes': 'users'" in text and "'admin': 'users'" in text, text
        assert "Applying" not in text, text


# -- related access on an instance (item 2) -------------------------------------------------


def test_related_access_stays_on_the_instances_database(site):
    assert_passed(site, "ArchiveTests", at_least=6)


# -- middleware and tokens (item 3) ---------------------------------------------------------------


def test_a_login_is_seen_by_the_next_requests_whatever_the_middleware_order(site):
    assert_passed(site, "LoginTests")


def test_a_middleware_order_that_can_lose_writes_is_a_system_check_error(site):
    assert_passed(site, "MiddlewareOrderCheckTests", at_least=4)


# -- the live server (item 5) ------------------------------------------------------------------


def test_the_live_server_reads_what_the_test_wrote(site):
    assert_passed(site, "LiveServerTests")


# -- system checks (item 8) ----------------------------------------------------------------------


def test_system_checks_name_each_settings_mistake_and_what_to_change(site):
    env = {
        "REPLPOOL_SITE_OPTIONS": json.dumps({"sslmdoe": "require", "max_replica_lag": -1,
                                                     "replica_functions": "report_total"}),
        "REPLPOOL_SITE_CONN_MAX_AGE": "60",
        "REPLPOOL_SITE_APPS": json.dumps({"auth": "users", "contenttypes": "users", "admin": "users",
                                          "bokks": "default"}),
    }
    proc = manage(site, "check", env=env)
    text = output(proc)
    assert proc.returncode != 0, text
    for expected in (
        "replpool.E001", "'sslmdoe'",
        "replpool.E002", "CONN_MAX_AGE",
        "replpool.E003", "max_replica_lag must be > 0",
        "['replica_functions'] must be a list", "not 'report_total'",
        "replpool.E006", "'bokks'",
    ):
        assert expected in text, (expected, text)
    if site.engine == "postgresql":
        assert "'sslmode'" in text, text  # the likely meaning
    assert site.password not in text


# -- no primary (items 9 and 10) ---------------------------------------------------------------


def closed_port() -> str:
    from replpool.testing._base import free_port

    return str(free_port())


def test_read_only_requests_are_served_by_replicas_in_a_new_process_without_primary(site):
    migrated(site)
    env = {"REPLPOOL_SITE_PRIMARY": "unreachable", "REPLPOOL_SITE_CLOSED_PORT": closed_port()}
    (read,) = requests(site, "GET /books/", env=env)
    assert read.get("status") == 200, read
    assert sum(read["routing"].get("replica", {}).values()) >= 1, read
    assert not read["routing"].get("primary"), read


def test_a_primary_refusing_the_login_fails_at_once_with_the_servers_message(site):
    migrated(site)
    env = {"REPLPOOL_SITE_PRIMARY": "wrong-password", "REPLPOOL_SITE_OPTIONS": json.dumps({"failover_wait": 20})}
    write, read = requests(site, "POST /books/new/ title=refused", "GET /books/", env=env)
    message = "password authentication failed" if site.engine == "postgresql" else "Access denied"
    assert message in write.get("error", ""), write
    assert write["seconds"] < 10, write  # not the 20 s of failover_wait
    assert read.get("status") == 200, read


def test_a_hung_primary_costs_a_new_process_one_poll_timeout_not_the_connect_timeouts(site):
    """A primary that accepts connections and never answers (frozen, overloaded): read
    requests of a new process are served by replicas after the monitor's first round
    gave up on it (probe_timeout), not after connecting to it at start-up timed out
    (twice the connect timeout on PostgreSQL, which tries with and without TLS)."""
    migrated(site)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the handshakes; nobody ever answers
        env = {
            "REPLPOOL_SITE_PRIMARY": "hung", "REPLPOOL_SITE_CLOSED_PORT": str(silent.getsockname()[1]),
            "REPLPOOL_SITE_OPTIONS": json.dumps({"probe_timeout": 0.5, "connect_timeout": 3}),
        }
        read, again = requests(site, "GET /books/", "GET /books/", env=env)
    assert read.get("status") == 200 and again.get("status") == 200, (read, again)
    assert sum(read["routing"].get("replica", {}).values()) >= 1, read
    assert read["seconds"] < 3, read  # under one connect timeout, let alone two


def test_checks_that_ask_the_server_run_without_a_primary(site):
    """Django's model checks read the server's data (on MariaDB: version, SQL mode,
    storage engine): any member answers them, as it answers the version check."""
    migrated(site)
    env = {"REPLPOOL_SITE_PRIMARY": "unreachable", "REPLPOOL_SITE_CLOSED_PORT": closed_port(),
           "REPLPOOL_SITE_OPTIONS": json.dumps({"failover_wait": 1})}
    proc = manage(site, "check", "--database", "default", env=env)
    assert proc.returncode == 0, output(proc)
    assert "Traceback" not in output(proc) and "NoPrimaryAvailable" not in output(proc), output(proc)


def test_an_unreachable_primary_is_waited_for_once_per_request(site):
    migrated(site)
    env = {
        "REPLPOOL_SITE_PRIMARY": "unreachable", "REPLPOOL_SITE_CLOSED_PORT": closed_port(),
        "REPLPOOL_SITE_OPTIONS": json.dumps({"failover_wait": 1}),
    }
    for result in requests(site, "POST /books/twice/", "POST /books/twice/", env=env):
        (first, second) = json.loads(result["body"])["took"]
        assert first[1] == second[1] == "NoPrimaryAvailable", result
        assert first[0] >= 0.95, result  # waited failover_wait for a primary
        assert second[0] < 0.5, result   # and not again in the same request


# -- the DEBUG page (item 11) --------------------------------------------------------------------


def test_the_debug_page_shows_no_password_in_replpools_frames(site):
    assert_passed(site, "DebugPageTests", at_least=4)
