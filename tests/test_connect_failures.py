"""What a failure to reach a member means for waiting (issue 13, items 7 and 10): a
primary that refuses us (a wrong password, a missing database, bad options) fails
requests at once with the server's message, while an unreachable one is waited for; a
replica that has not replayed a new database yet is an expected event, reported at INFO,
and its pool stays closed (and silent) until the replica has answered once."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any
from urllib.parse import quote

import mysql.connector.errors as my
import psycopg
import pytest

import replpool
from replpool._health import Failure, waiting_can_fix
from replpool._mysql import classify_failure as classify_mysql
from replpool._pg import classify_failure as classify_pg
from tests.labtools import wait_until

FAST = {"monitor_interval": 0.05, "probe_timeout": 0.5, "connect_timeout": 2}


# -- the classification (no server) --------------------------------------------------------


def pg_failure(message: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(
        f'connection failed: connection to server at "10.0.0.1", port 5432 failed: {message}'
    )


@pytest.mark.parametrize(("message", "failure"), [
    ('FATAL:  password authentication failed for user "app"', Failure.REFUSED),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.2", user "app", database "app", no encryption', Failure.REFUSED),
    ('FATAL:  role "app" does not exist', Failure.REFUSED),
    ('FATAL:  role "app" is not permitted to log in', Failure.REFUSED),
    ("FATAL:  permission denied for database \"app\"", Failure.REFUSED),
    ("fe_sendauth: no password supplied", Failure.REFUSED),
    ("server does not support SSL, but SSL was required", Failure.REFUSED),
    ('FATAL:  database "test_app" does not exist', Failure.NO_DATABASE),
    ("Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?", Failure.UNREACHABLE),
    ("timeout expired", Failure.UNREACHABLE),
    ("FATAL:  the database system is starting up", Failure.UNREACHABLE),
    ("FATAL:  the database system is shutting down", Failure.UNREACHABLE),
    ("FATAL:  sorry, too many clients already", Failure.UNREACHABLE),
    ("server closed the connection unexpectedly", Failure.UNREACHABLE),
])
def test_postgresql_failures_are_told_apart_by_the_servers_message(message, failure):
    assert classify_pg(pg_failure(message)) is failure


def test_postgresql_bad_options_and_errors_sent_once_connected():
    assert classify_pg(psycopg.ProgrammingError('invalid connection option "sslmdoe"')) is Failure.REFUSED
    assert classify_pg(psycopg.errors.InvalidCatalogName("no such database")) is Failure.NO_DATABASE
    assert classify_pg(psycopg.errors.InvalidPassword("no")) is Failure.REFUSED
    assert classify_pg(psycopg.errors.AdminShutdown("terminating connection")) is Failure.UNREACHABLE
    assert classify_pg(replpool.ConfigurationError("log_bin is off")) is Failure.REFUSED
    assert classify_pg(TimeoutError()) is Failure.UNREACHABLE


@pytest.mark.parametrize("message", [
    'invalid port number: "99999"',
    'invalid sslmode value: "bogus"',
    'invalid target_session_attrs value: "primry"',
    'invalid integer value "abc" for connection option "keepalives"',
])
def test_postgresql_options_libpq_rejects_when_connecting_are_refusals(message):
    # Waiting cannot fix them: the connection string must change.
    assert classify_pg(psycopg.OperationalError(f"connection is bad: {message}")) is Failure.REFUSED


# -- what a connection string libpq cannot parse is said to be (no server) ----------------------


@pytest.mark.parametrize("text", [
    "host=127.0.0.1 password=Hunter2 sslmdoe=require",
    "postgresql://app:Hunter2@127.0.0.1/app?sslmdoe=require",
    "postgresql://app@127.0.0.1/app?password=Hunter2&sslmdoe=require",
])
def test_a_mistyped_libpq_option_is_named_with_its_likely_meaning_and_never_the_password(text):
    with pytest.raises(replpool.ConfigurationError) as err:
        replpool.Cluster(text)
    message = str(err.value)
    assert '"sslmdoe" (did you mean "sslmode"?)' in message, message
    assert "Hunter2" not in message


@pytest.mark.parametrize(("text", "said"), [
    # What comes after an unquoted password with a space or an & may be part of it.
    ("host=127.0.0.1 password=Hunter2 Secret=x", 'invalid connection option "..." (not shown'),
    ("postgresql://app@127.0.0.1/app?password=Hunter2&Secret=x", 'invalid URI query parameter: "..." (not shown'),
    ("host=127.0.0.1 password Secret", 'missing "=" after "..."'),
    ("postgresql://app:Hunter2%zzSecret@127.0.0.1/app", 'invalid percent-encoded token: "..."'),
])
def test_a_part_of_a_connection_string_that_may_be_a_password_is_never_shown(text, said):
    with pytest.raises(replpool.ConfigurationError) as err:
        replpool.Cluster(text)
    message = str(err.value)
    assert said in message, message
    assert "Hunter2" not in message and "Secret" not in message


@pytest.mark.parametrize(("error", "failure"), [
    (my.ProgrammingError(msg="Access denied for user 'app'@'localhost'", errno=1045), Failure.REFUSED),
    (my.ProgrammingError(msg="Access denied for user 'app' to database 'x'", errno=1044), Failure.REFUSED),
    (my.DatabaseError(msg="Host is blocked", errno=1129), Failure.REFUSED),
    (my.ProgrammingError(msg="Unknown database 'test_app'", errno=1049), Failure.NO_DATABASE),
    (my.InterfaceError(msg="Can't connect to MySQL server", errno=2003), Failure.UNREACHABLE),
    (my.OperationalError(msg="Lost connection", errno=2013), Failure.UNREACHABLE),
    (my.DatabaseError(msg="Too many connections", errno=1040), Failure.UNREACHABLE),
    (AttributeError("Unsupported argument 'bogus'"), Failure.REFUSED),
    (replpool.ConfigurationError("gtid_mode is OFF"), Failure.REFUSED),
    (OSError("reset"), Failure.UNREACHABLE),
])
def test_mysql_failures_are_told_apart_by_the_servers_error_number(error, failure):
    assert classify_mysql(error) is failure


def test_only_what_waiting_can_fix_is_waited_for():
    assert waiting_can_fix(Failure.UNREACHABLE, "primary") and waiting_can_fix(None, "primary")
    assert waiting_can_fix(Failure.NO_DATABASE, "replica")  # replication brings it
    assert not waiting_can_fix(Failure.NO_DATABASE, "primary")  # it is made there
    assert not waiting_can_fix(Failure.REFUSED, "primary")
    assert not waiting_can_fix(Failure.REFUSED, "replica")


# -- on the lab --------------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "mariadb"])
def lab(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue({"postgresql": "postgres_lab", "mariadb": "mariadb_lab"}[request.param])


def with_password(member: Any, password: str) -> str:
    return member.url.replace(quote(member.password, safe=""), quote(password, safe=""), 1)


def with_database(member: Any, database: str) -> str:
    return member.url.rsplit("/", 1)[0] + "/" + database


@pytest.mark.lab
def test_a_primary_refusing_the_login_fails_at_once_with_the_servers_message(lab):
    primary = with_password(lab.primary, "not-the-password")
    cluster = replpool.Cluster(primary, [r.url for r in lab.replicas], failover_wait=30, **FAST)
    with cluster:
        start = time.monotonic()
        with pytest.raises(replpool.NoPrimaryAvailable) as caught:
            with cluster.connection():
                pass
        took = time.monotonic() - start
        message = "password authentication failed" if lab.engine == "postgresql" else "Access denied"
        assert message in str(caught.value)
        assert lab.password not in str(caught.value)
        assert took < 10, took  # not failover_wait's 30 s
        # The replicas, which take the right password, serve reads meanwhile.
        assert cluster.query("SELECT 1", read_only=True) == [(1,)]


@pytest.mark.lab
def test_an_unreachable_primary_is_still_waited_for(lab):
    lab.stop(lab.primary)
    cluster = replpool.Cluster(lab.primary.url, [r.url for r in lab.replicas], failover_wait=1, **FAST)
    with cluster:
        start = time.monotonic()
        with pytest.raises(replpool.NoPrimaryAvailable, match="after waiting 1 s"):
            cluster.query("SELECT 1")
        assert time.monotonic() - start >= 0.9


@pytest.mark.lab
def test_a_replica_without_the_new_database_yet_is_an_expected_event(lab, caplog):
    """The monitor reports it at INFO, its pool does not try to connect (which would
    warn again) until it has answered, and it serves reads once it has replayed the
    database's creation."""
    replica = lab.replicas[0]
    name = f"fresh_{int(time.monotonic() * 1000) % 10**9}"
    if lab.engine == "mariadb":
        # Granted beforehand, as the test databases are (test\_%): otherwise MariaDB
        # answers a user without the grant "access denied", not "unknown database".
        lab.query(lab.primary, f"GRANT ALL ON {name}.* TO 'app'@'%'")
        lab.wait_until_caught_up()
    lab.pause_replication(replica)
    lab.query(lab.primary, f"CREATE DATABASE {name}" + (" OWNER app" if lab.engine == "postgresql" else ""))
    try:
        caplog.set_level(logging.INFO)
        members = [with_database(m, name) for m in (lab.primary, replica)]
        with replpool.Cluster(members[0], members[1:], **FAST) as cluster:
            member = f"{replica.host}:{replica.port}"
            assert not cluster.status().member(member).up
            lab.resume_replication(replica)
            wait_until(lambda: cluster.status().member(member).eligible, 10, "the replica joining")
            assert contextvars.Context().run(cluster.query, "SELECT 1", read_only=True) == [(1,)]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not warnings, [r.getMessage() for r in warnings]
        said = [r.getMessage() for r in caplog.records if member in r.getMessage()]
        assert any("does not have the database yet" in m for m in said), said
        assert any("answering again" in m for m in said), said
    finally:
        lab.resume_replication(replica)
        lab.query(lab.primary, f"DROP DATABASE {name}")
        if lab.engine == "mariadb":
            lab.query(lab.primary, f"REVOKE ALL ON {name}.* FROM 'app'@'%'")
