"""The statement classifier's claims about the servers, checked on the lab: replicas accept
much of what must run on the primary without a word (so a router that sends it there fails
silently), and the lists of builtins the classifier uses are what the servers have."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import mysql.connector
import psycopg
import pytest
from psycopg import errors

from replpool import _sqlnames
from replpool._sql import Kind, classify

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent

# Accepted by a hot standby, as the application user, in autocommit: each changes or
# depends on state of the session it runs in, so on a replica it changes the wrong one.
PG_STANDBY_ACCEPTS = [
    "SET search_path TO public",
    "SET ROLE app",
    "SELECT set_config('app.tenant', 'a', false)",
    "SELECT pg_advisory_lock(4242)",
    "SELECT pg_try_advisory_lock(4243)",
    "SELECT pg_advisory_xact_lock(4244)",
    "SELECT setseed(0.5)",
    "PREPARE replpool_probe AS SELECT 1",
    "DECLARE replpool_cursor CURSOR WITH HOLD FOR SELECT 1",
    "SELECT pg_export_snapshot()",
]
# Refused by a hot standby (SQLSTATE 25006): a router that sends them there learns it.
PG_STANDBY_REFUSES = [
    "CREATE TEMP TABLE replpool_tmp (x int)",
    "SELECT 1 AS x INTO TEMP replpool_tmp",
    "LISTEN replpool_channel",
    "NOTIFY replpool_channel",
    "SELECT txid_current()",
    "SELECT nextval('replpool_sql_probe')",
]


@pytest.fixture
def pg_sequence(postgres_lab):
    postgres_lab.query(postgres_lab.primary, "CREATE SEQUENCE IF NOT EXISTS replpool_sql_probe")
    postgres_lab.query(postgres_lab.primary, "GRANT USAGE ON SEQUENCE replpool_sql_probe TO app")
    postgres_lab.wait_until_caught_up()
    yield
    postgres_lab.query(postgres_lab.primary, "DROP SEQUENCE replpool_sql_probe")


def test_a_hot_standby_silently_accepts_session_statements_the_classifier_keeps_on_the_primary(postgres_lab):
    with psycopg.connect(postgres_lab.replicas[0].dsn, autocommit=True, connect_timeout=3) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        for sql in PG_STANDBY_ACCEPTS:
            conn.execute(sql)  # no error
            assert classify(sql, "postgresql") is not Kind.READ, sql


def test_a_hot_standby_refuses_temporary_tables_listen_notify_and_sequences(postgres_lab, pg_sequence):
    with psycopg.connect(postgres_lab.replicas[0].dsn, autocommit=True, connect_timeout=3) as conn:
        for sql in PG_STANDBY_REFUSES:
            with pytest.raises(errors.ReadOnlySqlTransaction):
                conn.execute(sql)
            assert classify(sql, "postgresql") is not Kind.READ, sql


def test_an_advisory_lock_taken_on_a_standby_locks_nothing_on_the_primary(postgres_lab):
    # Issue 10, case 1: the reason advisory locks are never replica reads.
    with psycopg.connect(postgres_lab.primary.dsn, autocommit=True) as holder, \
            psycopg.connect(postgres_lab.replicas[0].dsn, autocommit=True) as standby:
        assert holder.execute("SELECT pg_try_advisory_lock(4245)").fetchone() == (True,)
        assert standby.execute("SELECT pg_try_advisory_lock(4245)").fetchone() == (True,)
    assert classify("SELECT pg_try_advisory_lock(4245)", "postgresql") is Kind.SESSION


# Accepted by a read_only MariaDB replica, as the application user (no SUPER, no
# READ_ONLY ADMIN): named locks, user and session variables, temporary tables, prepared
# statements, the session's last insert id.
MARIADB_REPLICA_ACCEPTS = [
    "SELECT GET_LOCK('replpool_probe', 0)",
    "DO GET_LOCK('replpool_probe_2', 0)",
    "SET @replpool_probe = 1",
    "SELECT @replpool_probe := 2",
    "SELECT 3 INTO @replpool_probe",
    "SET SESSION sql_mode = 'ANSI_QUOTES'",
    "SET NAMES utf8mb4",
    "CREATE TEMPORARY TABLE replpool_tmp (a int)",
    "PREPARE replpool_probe FROM 'SELECT 1'",
    "SELECT LAST_INSERT_ID(5)",
    "SELECT SQL_CALC_FOUND_ROWS 1",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
]
READ_ONLY_ERRNO = 1290  # ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option"


def test_a_read_only_mariadb_replica_accepts_named_locks_variables_and_temporary_tables(mariadb_lab):
    conn = mysql.connector.connect(**mariadb_lab.replicas[0].connect_kwargs(), autocommit=True, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@read_only")
        assert cur.fetchall() == [(1,)]
        for sql in MARIADB_REPLICA_ACCEPTS:
            cur.execute(sql)
            if cur.with_rows:
                cur.fetchall()
            assert classify(sql, "mysql") is not Kind.READ, sql
    finally:
        conn.close()


def test_a_read_only_mariadb_replica_refuses_sequence_values(mariadb_lab):
    mariadb_lab.query(mariadb_lab.primary, "CREATE SEQUENCE IF NOT EXISTS replpool_sql_probe")
    try:
        mariadb_lab.wait_until_caught_up()
        conn = mysql.connector.connect(**mariadb_lab.replicas[0].connect_kwargs(), autocommit=True, use_pure=True)
        try:
            for sql in ("SELECT NEXTVAL(replpool_sql_probe)", "SELECT NEXT VALUE FOR replpool_sql_probe"):
                with pytest.raises(mysql.connector.Error) as refused:
                    conn.cursor().execute(sql)
                assert refused.value.errno == READ_ONLY_ERRNO
                assert classify(sql, "mysql") is Kind.SESSION_WRITE
        finally:
            conn.close()
    finally:
        mariadb_lab.query(mariadb_lab.primary, "DROP SEQUENCE replpool_sql_probe")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sql_builtins", ROOT / "scripts" / "sql_builtins.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_builtin_lists_are_what_the_lab_servers_have(postgres_lab, mariadb_lab):
    generator = _generator()
    pg = generator.postgresql_facts(postgres_lab.primary.admin_dsn)
    maria = generator.mariadb_facts(mariadb_lab.primary.admin_connect_kwargs())

    def without_versions(text: str) -> str:
        return re.sub(r"(?m)^.*(VERSION = |Generated by |\d+\.\d+; do not edit).*$", "", text)

    committed = (ROOT / "replpool" / "_sqlnames.py").read_text()
    assert without_versions(generator.render(pg, maria)) == without_versions(committed)
    assert _sqlnames.POSTGRESQL_VERSION.split(".")[0] == pg["version"].split(".")[0]
