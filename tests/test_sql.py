"""The statement classifier (replpool._sql): what each statement needs of its session.

Explicit examples for every member of the session-state class on both servers, the
lexer's rules (strings, comments, quoted identifiers), the rule for unknown functions, and
a hypothesis grammar that builds statements from parts whose kind it knows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replpool import _sqlnames
from replpool._sql import (
    _MYSQL_EXTRA,
    _MYSQL_REVIEWED,
    _PG_REVIEWED,
    _PG_SYNTAX,
    Kind,
    classify,
)

READ, CONTROL, LOCKING, DIAGNOSTICS = Kind.READ, Kind.CONTROL, Kind.LOCKING, Kind.DIAGNOSTICS
SESSION_READ, WRITE = Kind.SESSION_READ, Kind.WRITE
SESSION, SESSION_WRITE = Kind.SESSION, Kind.SESSION_WRITE

PG = "postgresql"
MY = "mysql"


def examples(dialect: str, kind: Kind, text: str) -> list[tuple[str, str, Kind]]:
    """One statement a line."""
    return [(dialect, line.strip(), kind) for line in text.strip().splitlines() if line.strip()]


POSTGRESQL = (
    examples(PG, READ, """
        SELECT 1
        SELECT "shop_item"."id", "shop_item"."name" FROM "shop_item" WHERE "shop_item"."id" = %s LIMIT 21
        VALUES (1), (2)
        TABLE shop_item
        WITH t AS (SELECT 1 AS a) SELECT a FROM t
        (SELECT 1) UNION (SELECT 2)
        SELECT random(), now(), statement_timestamp(), clock_timestamp(), gen_random_uuid()
        SELECT lower('X'), pg_catalog.lower('X'), "lower"('X'), coalesce(NULL, 1), greatest(1, 2)
        SELECT count(*), string_agg(name, ',' ORDER BY name) FROM shop_item
        SELECT similarity('a', 'b'), unaccent('é'), digest('x', 'sha1')
        SELECT CAST(1 AS numeric(10, 2)), '1'::varchar(3), '1'::character varying(3), ROW(1, 2), ARRAY(SELECT 1)
        SELECT 1 WHERE 1 IN (1) AND EXISTS (SELECT 1) AND 1 = ANY (ARRAY[1]) AND NOT (1 = 2)
        SELECT row_number() OVER (PARTITION BY a ORDER BY b), count(*) FILTER (WHERE a > 1) FROM t GROUP BY ROLLUP (a, b)
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t GROUP BY GROUPING SETS ((a), (b))
        SELECT * FROM generate_series(1, 3) AS g(n)
        WITH RECURSIVE t (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT n FROM t
        SELECT extract(year FROM now()), substring('abc' FROM 1 FOR 2), position('b' IN 'abc'), trim(BOTH ' ' FROM 'a')
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC'), a -> 'k' ->> 'j', b @> '{}'::jsonb
        SELECT pg_table_is_visible(c.oid), pg_get_indexdef(i.indexrelid) FROM pg_class c, pg_index i
        SELECT * FROM pg_class, pg_namespace, information_schema.columns WHERE true
        SELECT "update", "nextval", t.lastval FROM t
        EXPLAIN SELECT 1
        EXPLAIN (ANALYZE, BUFFERS) SELECT 1
        EXPLAIN (ANALYZE true, TIMING false, FORMAT text) SELECT 1
        EXPLAIN (SELECT 1) UNION (SELECT 2)
        EXPLAIN ANALYZE VERBOSE SELECT 1
    """)
    + examples(PG, CONTROL, """
        BEGIN
        BEGIN ISOLATION LEVEL SERIALIZABLE
        START TRANSACTION READ ONLY
        COMMIT
        END
        ROLLBACK
        ABORT
        SAVEPOINT s1
        RELEASE SAVEPOINT s1
        ROLLBACK TO SAVEPOINT s1
        SET LOCAL search_path TO a
        SET TRANSACTION ISOLATION LEVEL REPEATABLE READ
        SET CONSTRAINTS ALL IMMEDIATE
        SELECT set_config('app.tenant', 'a', true)
        DECLARE c CURSOR FOR SELECT 1
        DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1
        SELECT pg_export_snapshot()
    """)
    + examples(PG, LOCKING, """
        SELECT * FROM t FOR UPDATE
        SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED
        SELECT * FROM t FOR SHARE OF t NOWAIT
        SELECT * FROM t FOR KEY SHARE
        WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x
        LOCK TABLE t IN ACCESS EXCLUSIVE MODE
        SELECT pg_advisory_xact_lock(42)
        SELECT pg_try_advisory_xact_lock(42), pg_advisory_xact_lock_shared(1, 2)
    """)
    + examples(PG, SESSION_READ, """
        SELECT lastval()
        SELECT currval('shop_item_id_seq')
        SELECT current_setting('search_path'), current_setting('app.tenant', true)
        SHOW search_path
        SHOW ALL
        SELECT current_user
        SELECT session_user, current_role, user
        SELECT current_schema, current_schemas(true)
        SELECT pg_backend_pid(), inet_client_addr(), inet_server_port()
        SELECT pg_listening_channels(), pg_notification_queue_usage()
        SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_current_wal_lsn()
        SELECT txid_current_if_assigned(), pg_current_xact_id_if_assigned()
        SELECT txid_current_snapshot(), pg_current_snapshot()
        SELECT pg_my_temp_schema(), pg_trigger_depth(), version()
        SELECT pg_advisory_unlock(42), pg_advisory_unlock_shared(42)
        SELECT pg_advisory_unlock_all()
        SELECT * FROM pg_settings WHERE name = 'search_path'
        SELECT * FROM pg_catalog.pg_stat_activity
        SELECT * FROM pg_prepared_statements, pg_cursors
        SELECT * FROM pg_locks
        SELECT * FROM pg_temp.scratch
        SELECT * FROM information_schema.tables
        FETCH NEXT FROM c
        MOVE FORWARD 2 IN c
        CLOSE c
        DEALLOCATE p
        DEALLOCATE ALL
        UNLISTEN *
        RESET search_path
        RESET ALL
        RESET ROLE
        RESET SESSION AUTHORIZATION
        DISCARD ALL
        DISCARD TEMP
    """)
    + examples(PG, WRITE, """
        INSERT INTO "t" ("a") VALUES (%s) RETURNING "t"."id"
        INSERT INTO "t" ("a") VALUES (%s) ON CONFLICT ("a") DO UPDATE SET "a" = EXCLUDED."a"
        INSERT INTO "t" ("a") SELECT * FROM unnest(%s::integer[])
        UPDATE "t" SET "a" = lower(%s) WHERE "t"."id" = %s
        DELETE FROM "t" WHERE "t"."id" IN (%s, %s)
        MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.a)
        WITH gone AS (DELETE FROM t RETURNING *) SELECT count(*) FROM gone
        CREATE TABLE t (id serial PRIMARY KEY, name varchar(100) NOT NULL DEFAULT lower('X'))
        CREATE UNLOGGED TABLE t (a int)
        CREATE TABLE temp (a int)
        CREATE INDEX t_a ON t (lower(a))
        ALTER TABLE t ADD COLUMN b int
        DROP TABLE t
        TRUNCATE t
        SELECT 1 INTO newtable
        SELECT 1 INTO UNLOGGED TABLE newtable
        NOTIFY channel, 'payload'
        SELECT pg_notify('channel', 'payload')
        SELECT txid_current()
        SELECT pg_current_xact_id()
        SELECT pg_terminate_backend(1)
        SELECT lo_creat(-1)
        COPY t FROM STDIN
        VACUUM t
        ANALYZE t
        EXPLAIN ANALYZE INSERT INTO t VALUES (1)
        PREPARE TRANSACTION 'x'
        COMMIT PREPARED 'x'
        ROLLBACK PREPARED 'x'
        SELECT 'unterminated
        SELECT "unterminated
        SELECT $$unterminated
        SELECT 1 /* unterminated
    """)
    + examples(PG, SESSION, """
        SET search_path TO tenant_a, public
        SET SESSION search_path = tenant_a
        SET statement_timeout = 1000
        SET TIME ZONE 'UTC'
        SET ROLE other
        SET SESSION AUTHORIZATION other
        SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
        SET NAMES 'UTF8'
        SET SCHEMA 'tenant_a'
        SELECT set_config('app.tenant', 'a', false)
        SELECT set_config(%s, %s, %s)
        SELECT pg_catalog.set_config('app.tenant', 'a', false)
        CREATE TEMP TABLE tmp AS SELECT 1 AS x
        CREATE TEMPORARY TABLE tmp (x int)
        CREATE GLOBAL TEMPORARY TABLE tmp (x int)
        CREATE LOCAL TEMP TABLE tmp (x int) ON COMMIT DROP
        CREATE TEMP VIEW v AS SELECT 1
        CREATE OR REPLACE TEMP VIEW v AS SELECT 1
        CREATE TEMP SEQUENCE s
        CREATE TABLE pg_temp.tmp (x int)
        CREATE TABLE "pg_temp"."tmp" (x int)
        SELECT 1 AS x INTO TEMP tmp
        SELECT 1 AS x INTO TEMPORARY TABLE tmp
        PREPARE p (int) AS SELECT $1
        LISTEN channel
        DECLARE c CURSOR WITH HOLD FOR SELECT 1
        LOAD 'auto_explain'
        SELECT pg_advisory_lock(42)
        SELECT pg_try_advisory_lock(42)
        SELECT pg_advisory_lock_shared(1, 2), pg_try_advisory_lock_shared(3)
        SELECT setseed(0.5)
        SELECT set_limit(0.5)
    """)
    + examples(PG, SESSION_WRITE, """
        SELECT nextval('shop_item_id_seq')
        SELECT setval('shop_item_id_seq', 10)
        SELECT setval(pg_get_serial_sequence('"shop_item"','id'), coalesce(max("id"), 1), max("id") IS NOT null) FROM "shop_item"
        SELECT "nextval"('s')
        SELECT "pg_catalog"."nextval"('s')
        INSERT INTO t (id) VALUES (nextval('s'))
        EXECUTE p (1)
        DO $$BEGIN PERFORM 1; END$$
        CALL refresh_all()
        SELECT my_function(1)
        SELECT public.lower('X')
        SELECT "Lower"('X')
        SELECT pg_temp.f()
        SELECT a <~~> b FROM t
        UPDATE t SET a = my_function(a)
        FROBNICATE t
        SELECT 1; SET x = 1; INSERT INTO t VALUES (1)
    """)
)

MYSQL = (
    examples(MY, READ, """
        SELECT 1
        SELECT `shop_item`.`id`, `shop_item`.`name` FROM `shop_item` WHERE `shop_item`.`id` = %s LIMIT 21
        SELECT NOW(), CURRENT_TIMESTAMP(6), RAND(), UUID(), CONCAT_WS(',', a, b), JSON_EXTRACT(j, '$.a')
        SELECT CAST(a AS DECIMAL(10, 2)), CAST(a AS CHAR(10)), CONVERT(a USING utf8mb4)
        SELECT IF(a, b, c), LEFT(a, 2), RIGHT(a, 2), INSERT('abc', 1, 1, 'x'), REPLACE('a', 'b', 'c')
        SELECT DATE(a), YEAR(a), TIMESTAMPDIFF(MICROSECOND, a, b), DATE_ADD(a, INTERVAL 1 DAY)
        SELECT MATCH (a) AGAINST ('x' IN BOOLEAN MODE) FROM t
        SELECT * FROM t FORCE INDEX (i) WHERE a IN (1, 2) AND EXISTS (SELECT 1)
        SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b), GROUP_CONCAT(a ORDER BY a SEPARATOR ',') FROM t
        WITH t AS (SELECT 1 AS a) SELECT a FROM t
        VALUES (1), (2)
        TABLE t
        DO 1
        SELECT * FROM information_schema.columns WHERE table_schema = DATABASE() AND 0
        SELECT `GET_LOCK`, `t`.`LAST_INSERT_ID` FROM t
        DESCRIBE t
        DESC t
        EXPLAIN t
        EXPLAIN SELECT 1
        EXPLAIN FORMAT=JSON SELECT 1
        EXPLAIN (SELECT 1) UNION (SELECT 2)
        ANALYZE FORMAT=JSON SELECT 1
    """.replace("DATABASE() AND 0", "'app'"))
    + examples(MY, CONTROL, """
        BEGIN
        BEGIN WORK
        START TRANSACTION
        START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT
        COMMIT
        ROLLBACK
        SAVEPOINT s1
        RELEASE SAVEPOINT s1
        ROLLBACK TO SAVEPOINT s1
    """)
    + examples(MY, LOCKING, """
        SELECT * FROM t FOR UPDATE
        SELECT * FROM t FOR UPDATE NOWAIT
        SELECT * FROM t FOR UPDATE SKIP LOCKED
        SELECT * FROM t FOR SHARE
        SELECT * FROM t LOCK IN SHARE MODE
    """)
    + examples(MY, READ, """
        SHOW FULL TABLES
        SHOW TABLES LIKE 'shop%'
        SHOW COLUMNS FROM t
        SHOW FULL COLUMNS FROM `t`
        SHOW INDEX FROM t
        SHOW KEYS FROM t
        SHOW CREATE TABLE `t`
        SHOW CREATE VIEW v
        SHOW DATABASES
    """)
    + examples(MY, DIAGNOSTICS, """
        SELECT FOUND_ROWS()
        SELECT ROW_COUNT()
        SHOW WARNINGS
        show errors limit 1
        SHOW COUNT(*) WARNINGS
        SELECT @@warning_count
        SELECT @@session.error_count
    """)
    + examples(MY, SESSION_READ, """
        SELECT LAST_INSERT_ID()
        SELECT FOUND_ROWS(), @x
        SELECT @@global.warning_count
        SELECT CONNECTION_ID()
        SELECT @x
        SELECT @`odd name`, @'quoted'
        SELECT @@session.sql_mode, @@sql_mode
        SELECT @@global.read_only
        SELECT IS_USED_LOCK('a'), IS_FREE_LOCK('a')
        SELECT RELEASE_LOCK('a')
        DO RELEASE_LOCK('a')
        SELECT RELEASE_ALL_LOCKS()
        SELECT LASTVAL(s)
        SELECT PREVIOUS VALUE FOR s
        SELECT s.currval
        SELECT DATABASE(), SCHEMA()
        SELECT CURRENT_USER(), USER(), SESSION_USER()
        SELECT CURRENT_USER
        SELECT * FROM information_schema.processlist
        SELECT * FROM information_schema.SESSION_VARIABLES
        SELECT * FROM performance_schema.threads
        SELECT * FROM sys.session
        SHOW VARIABLES LIKE 'sql_mode'
        SHOW FULL PROCESSLIST
        SHOW TABLE STATUS
        SHOW CREATE USER app
        DEALLOCATE PREPARE p
        DROP PREPARE p
        UNLOCK TABLES
        HANDLER t READ FIRST
        HANDLER t CLOSE
        DROP TEMPORARY TABLE tmp
        EXPLAIN FOR CONNECTION 12
    """)
    + examples(MY, WRITE, """
        INSERT INTO `t` (`a`, `b`) VALUES (%s, %s)
        INSERT t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)
        INSERT INTO t (a) SELECT a FROM u
        REPLACE INTO t (a) VALUES (1)
        UPDATE `t` SET `a` = %s WHERE `t`.`id` = %s
        DELETE FROM `t` WHERE `t`.`id` IN (%s)
        CREATE TABLE t (id int AUTO_INCREMENT PRIMARY KEY, a varchar(10))
        ALTER TABLE t ADD COLUMN b int
        TRUNCATE TABLE t
        DROP TABLE t
        SET GLOBAL max_connections = 10
        SET PERSIST max_connections = 10
        SET @@global.max_connections = 10
        SET PASSWORD = 'x'
        SELECT * FROM t INTO OUTFILE '/tmp/x'
        SELECT a FROM t INTO DUMPFILE '/tmp/x'
        LOAD DATA INFILE '/tmp/x' INTO TABLE t
        GRANT SELECT ON t TO 'u'@'h'
        KILL 12
        XA START 'x'
        ANALYZE TABLE t
        SELECT 'unterminated
    """)
    + examples(MY, SESSION, """
        GET DIAGNOSTICS @n = NUMBER
        SET @x = 1
        SET @x := 1
        SET sql_mode = 'ANSI_QUOTES'
        SET SESSION sql_mode = 'ANSI_QUOTES'
        SET LOCAL sql_mode = ''
        SET @@session.time_zone = '+00:00'
        SET @@time_zone = '+00:00'
        SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci
        SET CHARACTER SET utf8mb4
        SET ROLE r
        SET TRANSACTION ISOLATION LEVEL SERIALIZABLE
        SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED
        SET autocommit = 0
        SELECT @x := 1
        SELECT 1 INTO @x
        SELECT a, b FROM t LIMIT 1 INTO @a, @b
        SELECT GET_LOCK('a', 1)
        DO GET_LOCK('a', 0)
        SELECT LAST_INSERT_ID(5)
        SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10
        USE app
        PREPARE p FROM 'SELECT 1'
        CREATE TEMPORARY TABLE tmp (a int)
        CREATE TEMPORARY TABLE tmp AS SELECT 1
        CREATE OR REPLACE TEMPORARY TABLE tmp (a int)
        LOCK TABLES t READ
        LOCK TABLE t WRITE
        HANDLER t OPEN
        FLUSH TABLES WITH READ LOCK
        BACKUP LOCK t
    """)
    + examples(MY, SESSION_WRITE, """
        SELECT NEXTVAL(s)
        SELECT NEXT VALUE FOR s
        SELECT SETVAL(s, 10)
        SELECT s.nextval
        EXECUTE p
        EXECUTE p USING @a
        CALL p()
        BEGIN NOT ATOMIC SELECT 1; END
        SELECT my_function(1)
        SELECT app.my_function(1)
        SELECT `GET_LOCK`('a', 1)
        UPDATE t SET a = @n := @n + 1
        SET @x = 1, GLOBAL max_connections = 10
        SET @x = my_function()
        SELECT 1; SET @x = 1; INSERT INTO t VALUES (1)
        FROBNICATE t
    """)
)


@pytest.mark.parametrize(("dialect", "sql", "kind"), POSTGRESQL + MYSQL, ids=lambda x: str(x)[:60])
def test_each_statement_of_the_class_has_its_kind(dialect: str, sql: str, kind: Kind) -> None:
    assert classify(sql, dialect) is kind


# -- lexing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT 'nextval(1); SET x = 1'",
    "SELECT 'it''s nextval(1)'",
    "SELECT E'it\\'s nextval(1)'",
    "SELECT e'\\\\', 'nextval(' -- '",
    "SELECT $$nextval(1)$$",
    "SELECT $tag$ nextval(1) $$ still inside $tag$",
    "SELECT 1 -- nextval(1)",
    "SELECT 1 /* nextval(1) */",
    "SELECT 1 /* outer /* nested */ nextval(1) */",
    "SELECT \"nextval(\" FROM t",
    "SELECT \"a\"\"nextval(\" FROM t",
    "SELECT U&'\\0061', B'1010', X'ff', N'nextval('",
], ids=repr)
def test_postgresql_names_in_strings_comments_and_identifiers_do_not_count(sql: str) -> None:
    assert classify(sql, PG) is READ


@pytest.mark.parametrize(("sql", "kind"), [
    ("SELECT \"nextval\"('s')", SESSION_WRITE),
    ("SELECT /* c */ nextval /* c */ ('s')", SESSION_WRITE),
    ("SELECT 1 /* nested /* */ */, nextval('s')", SESSION_WRITE),
    ("SELECT $$a$$, nextval('s')", SESSION_WRITE),
    ("SELECT 'a', nextval('s'), 'b'", SESSION_WRITE),
    # standard_conforming_strings off: 'a\' continues; on: it ends. Either way may run.
    ("SELECT 'a\\', nextval('s') --'", SESSION_WRITE),
    ("SELECT 'a\\\\b', 'c'", READ),  # a\\b reads the same either way
    ("SELECT 'a\\', 'b'", WRITE),  # with backslash escapes, the text does not read
], ids=repr)
def test_postgresql_calls_outside_strings_count(sql: str, kind: Kind) -> None:
    assert classify(sql, PG) is kind


@pytest.mark.parametrize("sql", [
    "SELECT 'GET_LOCK(1, 1); SET @x = 1'",
    "SELECT 'it''s GET_LOCK('",
    "SELECT 'it\\'s GET_LOCK(' FROM t WHERE 1",
    "SELECT 1 -- GET_LOCK('a', 1)",
    "SELECT 1 # GET_LOCK('a', 1)",
    "SELECT 1 /* GET_LOCK('a', 1) */",
    "SELECT /*+ MAX_EXECUTION_TIME(1000) GET_LOCK('a', 1) */ 1",
    "SELECT `GET_LOCK(` FROM t",
    "SELECT `a``GET_LOCK(` FROM t",
], ids=repr)
def test_mysql_names_in_strings_comments_and_identifiers_do_not_count(sql: str) -> None:
    kind = classify(sql, MY)
    if "\\'" in sql:  # under NO_BACKSLASH_ESCAPES the text does not read: the primary
        assert kind is WRITE
    else:
        assert kind is READ


@pytest.mark.parametrize(("sql", "kind"), [
    ("SELECT 1 /*! , GET_LOCK('a', 1) */", SESSION),
    ("SELECT 1 /*!50700 , GET_LOCK('a', 1) */", SESSION),
    ("SELECT 1 /*M!100300 , GET_LOCK('a', 1) */", SESSION),
    ("/*!40101 SET NAMES utf8mb4 */", SESSION),
    ("SELECT 1 --, GET_LOCK('a', 1)", SESSION),  # "--" without a space is two minuses
    ("SELECT \"GET_LOCK\"('a', 1)", SESSION_WRITE),  # ANSI_QUOTES: a stored function
    ("SELECT \"a\", \"b\"", READ),
], ids=repr)
def test_mysql_code_the_server_runs_counts(sql: str, kind: Kind) -> None:
    assert classify(sql, MY) is kind


def test_several_statements_count_as_the_most_demanding() -> None:
    assert classify("SELECT 1; SELECT 2;", PG) is READ
    assert classify("SELECT 1; SET x = 1", PG) is SESSION
    assert classify("BEGIN; SELECT 1 FOR UPDATE; COMMIT", PG) is LOCKING
    assert classify("SELECT lastval(); BEGIN", PG) is SESSION_READ
    assert classify("INSERT INTO t VALUES (1); SET x = 1", PG) is SESSION_WRITE
    assert classify(";;", PG) is READ
    assert classify("SELECT 1; SELECT GET_LOCK('a', 1)", MY) is SESSION


def test_mysql_statements_before_an_unreadable_one_still_count() -> None:
    # MySQL runs a multi-statement string one statement at a time.
    assert classify("SET @x = 1; SELECT 'unterminated", MY) is SESSION_WRITE


def test_set_config_is_transaction_local_only_with_a_literal_true() -> None:
    assert classify("SELECT set_config('a', 'b', true)", PG) is CONTROL
    assert classify("SELECT set_config('a', 'b', 't')", PG) is CONTROL
    assert classify("SELECT set_config('a', 'b', false)", PG) is SESSION
    assert classify("SELECT set_config('a', 'b', %s)", PG) is SESSION
    assert classify("SELECT set_config('a', 'b', 1 = 1)", PG) is SESSION
    assert classify("SELECT set_config('a', nextval('s')::text, true)", PG) is SESSION_WRITE


def test_last_insert_id_with_an_argument_sets_the_session_value() -> None:
    assert classify("SELECT LAST_INSERT_ID()", MY) is SESSION_READ
    assert classify("SELECT LAST_INSERT_ID(42)", MY) is SESSION
    assert classify("UPDATE t SET id = LAST_INSERT_ID(id + 1)", MY) is SESSION_WRITE


# -- unknown functions --------------------------------------------------------------------------

def test_an_unknown_function_keeps_the_statement_on_the_primary_unless_listed() -> None:
    assert classify("SELECT my_distance(a, b) FROM t", PG) is SESSION_WRITE
    assert classify("SELECT my_distance(a, b) FROM t", PG, frozenset({"my_distance"})) is READ
    assert classify("SELECT geo.my_distance(a, b) FROM t", PG, frozenset({"geo.my_distance"})) is READ
    assert classify("SELECT my_distance(a, b) FROM t", MY, frozenset({"my_distance"})) is READ
    assert classify("SELECT app.my_distance(a, b) FROM t", MY, frozenset({"app.my_distance"})) is READ


def test_listing_a_builtin_does_not_change_its_kind() -> None:
    assert classify("SELECT nextval('s')", PG, frozenset({"nextval"})) is SESSION_WRITE
    assert classify("SELECT GET_LOCK('a', 1)", MY, frozenset({"get_lock"})) is SESSION


def test_an_insert_target_and_a_cte_column_list_are_not_calls() -> None:
    assert classify('INSERT INTO "shop_item" ("name") VALUES (%s)', PG) is WRITE
    assert classify('INSERT INTO app."shop_item" ("name") VALUES (%s)', PG) is WRITE
    assert classify("INSERT IGNORE INTO `t` (`a`) VALUES (%s)", MY) is WRITE
    assert classify("WITH t (a, b) AS (SELECT 1, 2) SELECT a FROM t", PG) is READ
    assert classify("SELECT * FROM f() AS t (a int)", PG) is SESSION_WRITE  # f is unknown


def test_an_unknown_dialect_is_refused_with_the_ones_known() -> None:
    with pytest.raises(ValueError, match="'postgresql' or 'mysql'"):
        classify("SELECT 1", "sqlite")


def test_classification_is_cached_per_statement_text() -> None:
    sql = "SELECT 1 AS cached_probe"
    classify(sql, PG)
    hits = classify.cache_info().hits
    classify(sql, PG)
    assert classify.cache_info().hits == hits + 1


# -- the lists behind it -----------------------------------------------------------------------

def _pg_builtin_names() -> set[str]:
    return {
        n for table in (_sqlnames.POSTGRESQL_FUNCTIONS, _sqlnames.POSTGRESQL_CONTRIB)
        for names in table.values() for n in names.split()
    }


def test_every_reviewed_postgresql_function_is_a_builtin_of_the_server() -> None:
    # A name in the review tables that the server does not have is a typo there.
    assert set(_PG_REVIEWED) - _pg_builtin_names() == set()


def test_every_postgresql_builtin_labelled_unsafe_or_restricted_leaves_the_replica() -> None:
    labelled = {
        n for table in (_sqlnames.POSTGRESQL_FUNCTIONS, _sqlnames.POSTGRESQL_CONTRIB)
        for label, names in table.items() if label[0] != "i" and label[1] != "s"
        for n in names.split()
    }
    reviewed_reads = {n for n, k in _PG_REVIEWED.items() if k is READ}
    for name in sorted(labelled - reviewed_reads):
        assert classify(f"SELECT {name}()", PG) is not READ, name


def test_every_reviewed_mysql_function_is_known_to_one_of_the_servers() -> None:
    known = set(_sqlnames.MARIADB_FUNCTIONS) | set(_MYSQL_EXTRA.split()) | {
        # MySQL 8 only (MySQL 8.0 manual, 14.1 and 19.1.7), or MariaDB names left out of
        # its function lists.
        "SOURCE_POS_WAIT", "WAIT_FOR_EXECUTED_GTID_SET", "WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS",
        "PS_CURRENT_THREAD_ID", "PS_THREAD_ID", "ROLES_GRAPHML", "NEXTVAL", "LASTVAL", "SETVAL",
    }
    assert set(_MYSQL_REVIEWED) - known == set()


def test_every_sql_construct_written_like_a_call_reads() -> None:
    for name in _PG_SYNTAX.split():
        assert classify(f"SELECT {name}(1)", PG) is READ, name


# -- the join ------------------------------------------------------------------------------------

@given(st.sampled_from(list(Kind)), st.sampled_from(list(Kind)), st.sampled_from(list(Kind)))
def test_joining_kinds_is_a_semilattice_with_read_at_the_bottom(a: Kind, b: Kind, c: Kind) -> None:
    assert a | b is b | a
    assert (a | b) | c is a | (b | c)
    assert a | a is a
    assert a | READ is a
    assert (a | b).replica_ok == (a.replica_ok and b.replica_ok)
    assert (a | b).writes == (a.writes or b.writes)
    assert (a | b).sets_session_state == (a.sets_session_state or b.sets_session_state)


# -- generated statements ------------------------------------------------------------------------
#
# Statements built from parts whose kind is known: expressions (safe calls, session calls,
# unknown calls, variables), literals, strings, comments and quoted identifiers carrying
# dangerous names, optional locking clauses, and whole statements; the expected kind is
# the join of the parts'.

DANGEROUS_TEXT = [
    "nextval('s')", "set_config('a','b',false)", "pg_advisory_lock(1)", "; SET x = 1; ",
    "GET_LOCK('a', 1)", "@x := 1", "SQL_CALC_FOUND_ROWS", "FOR UPDATE", "INTO @x",
    "LAST_INSERT_ID(5)", "lastval()", "current_user", "pg_settings", "my_func(1)",
    "NEXT VALUE FOR s", "/* x", "-- x", "(", ")", ",", "$", "#", "@@session.x",
]

CALLS = {
    PG: [
        ("nextval('s')", SESSION_WRITE), ("currval('s')", SESSION_READ), ("lastval()", SESSION_READ),
        ("set_config('a', 'b', false)", SESSION), ("set_config('a', 'b', true)", CONTROL),
        ("pg_catalog.set_config('a', 'b', false)", SESSION), ('"nextval"(\'s\')', SESSION_WRITE),
        ("pg_advisory_lock(1)", SESSION), ("pg_try_advisory_xact_lock(1)", LOCKING),
        ("pg_advisory_unlock_all()", SESSION_READ), ("current_setting('x')", SESSION_READ),
        ("pg_backend_pid()", SESSION_READ), ("txid_current()", WRITE),
        ("pg_notify('c', 'p')", WRITE), ("my_func(1)", SESSION_WRITE),
        ("current_user", SESSION_READ), ("setseed(0.1)", SESSION),
    ],
    MY: [
        ("GET_LOCK('a', 1)", SESSION), ("RELEASE_LOCK('a')", SESSION_READ),
        ("LAST_INSERT_ID()", SESSION_READ), ("LAST_INSERT_ID(5)", SESSION),
        ("FOUND_ROWS()", DIAGNOSTICS), ("ROW_COUNT()", DIAGNOSTICS),
        ("CONNECTION_ID()", SESSION_READ), ("NEXTVAL(s)", SESSION_WRITE),
        ("NEXT VALUE FOR s", SESSION_WRITE), ("PREVIOUS VALUE FOR s", SESSION_READ),
        ("@x", SESSION_READ), ("@@session.sql_mode", SESSION_READ), ("@x := 1", SESSION),
        ("my_func(1)", SESSION_WRITE), ("app.my_func(1)", SESSION_WRITE),
    ],
}
SAFE_FUNCTIONS = {PG: ["lower", "upper", "coalesce", "abs", "length"], MY: ["LOWER", "UPPER", "COALESCE", "ABS", "LENGTH"]}
COLUMNS = {PG: ['"t"."a"', "t.b", '"c"', "d"], MY: ["`t`.`a`", "t.b", "`c`", "d"]}

STATEMENTS = {
    PG: [
        ("SET search_path TO a", SESSION), ("SET LOCAL x = 1", CONTROL), ("BEGIN", CONTROL),
        ("COMMIT", CONTROL), ("SHOW search_path", SESSION_READ), ("LISTEN c", SESSION),
        ("CREATE TEMP TABLE tmp (a int)", SESSION), ("PREPARE p AS SELECT 1", SESSION),
        ("EXECUTE p", SESSION_WRITE), ("DISCARD ALL", SESSION_READ), ("NOTIFY c", WRITE),
        ("LOCK TABLE t", LOCKING), ("DELETE FROM t", WRITE), ("DO $$BEGIN END$$", SESSION_WRITE),
    ],
    MY: [
        ("SET @a = 1", SESSION), ("SET SESSION sql_mode = ''", SESSION), ("BEGIN", CONTROL),
        ("COMMIT", CONTROL), ("SHOW WARNINGS", DIAGNOSTICS), ("SHOW VARIABLES", SESSION_READ), ("USE app", SESSION),
        ("CREATE TEMPORARY TABLE tmp (a int)", SESSION), ("LOCK TABLES t READ", SESSION),
        ("UNLOCK TABLES", SESSION_READ), ("PREPARE p FROM 'SELECT 1'", SESSION),
        ("EXECUTE p", SESSION_WRITE), ("SET GLOBAL x = 1", WRITE), ("DELETE FROM t", WRITE),
    ],
}


def _string(dialect: str, text: str, form: int) -> str:
    """``text`` as a string literal that reads the same in every server mode."""
    if dialect == PG:
        if form == 1:
            return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if form == 2 and "$" not in text:
            return "$q$" + text + "$q$"
        return "'" + text.replace("'", "''") + "'"
    if form == 1 and '"' not in text and "\\" not in text:
        return '"' + text + '"'  # an identifier under ANSI_QUOTES: never followed by "("
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _comment(dialect: str, text: str, form: int) -> str:
    if form == 0:
        return " /* " + text.replace("*/", "").replace("/*", "") + " */ "
    if form == 1:
        return " -- " + text.replace("\n", " ") + "\n"
    if dialect == PG:
        return " /* a /* " + text.replace("*/", "").replace("/*", "") + " */ b */ "
    return " # " + text.replace("\n", " ") + "\n"


def _quoted(dialect: str, text: str) -> str:
    if dialect == PG:
        return '"' + text.replace('"', '""') + '"'
    return "`" + text.replace("`", "``") + "`"


@st.composite
def _noise(draw: st.DrawFn, dialect: str) -> str:
    """Whitespace, or a comment holding dangerous text."""
    if draw(st.booleans()):
        return draw(st.sampled_from([" ", "  ", "\n", "\t "]))
    return _comment(dialect, draw(st.sampled_from(DANGEROUS_TEXT)), draw(st.integers(0, 2)))


def _case(draw: st.DrawFn, word: str) -> str:
    return word if "'" in word or '"' in word or "`" in word else draw(st.sampled_from([word, word.lower(), word.upper()]))


@st.composite
def _expression(draw: st.DrawFn, dialect: str, depth: int = 0) -> tuple[str, Kind]:
    choice = draw(st.integers(0, 6 if depth < 2 else 3))
    if choice == 0:
        return draw(st.sampled_from(COLUMNS[dialect])), READ
    if choice == 1:
        text = draw(st.sampled_from(DANGEROUS_TEXT))
        return _string(dialect, text, draw(st.integers(0, 2))), READ
    if choice == 2:
        return draw(st.sampled_from(["1", "2.5", "%s", "NULL"])), READ
    if choice == 3:
        # a quoted identifier holding a dangerous name, not followed by "(": nothing, but
        # for the name of a system view (a name alone may name a relation)
        text = draw(st.sampled_from(DANGEROUS_TEXT))
        return _quoted(dialect, text), SESSION_READ if dialect == PG and text == "pg_settings" else READ
    if choice == 4:
        call, kind = draw(st.sampled_from(CALLS[dialect]))
        return _case(draw, call), kind
    inner, kind = draw(_expression(dialect, depth + 1))
    fn = _case(draw, draw(st.sampled_from(SAFE_FUNCTIONS[dialect])))
    if choice == 5:
        return f"{fn}({inner})", kind
    return f"({inner})", kind


@st.composite
def _statement(draw: st.DrawFn, dialect: str) -> tuple[str, Kind]:
    form = draw(st.integers(0, 4))
    if form == 4:
        return draw(st.sampled_from(STATEMENTS[dialect]))
    exprs = draw(st.lists(_expression(dialect), min_size=1, max_size=4))
    kind = READ
    for _, k in exprs:
        kind = kind | k
    noise = draw(_noise(dialect))
    texts = [e for e, _ in exprs]
    if form == 3:
        return f"INSERT INTO t (a){noise}VALUES ({', '.join(texts)})", kind | WRITE
    sql = f"SELECT {(',' + noise).join(texts)}{noise}FROM t WHERE {texts[0]} = %s"
    if form == 1:
        sql, kind = sql + " FOR UPDATE", kind | LOCKING
    elif form == 2:
        sql = f"WITH c AS ({sql}) SELECT * FROM c"
    return sql, kind


@st.composite
def _script(draw: st.DrawFn, dialect: str) -> tuple[str, Kind]:
    parts = draw(st.lists(_statement(dialect), min_size=1, max_size=3))
    kind = READ
    for _, k in parts:
        kind = kind | k
    separator = ";" + draw(_noise(dialect))
    return separator.join(s for s, _ in parts), kind


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([PG, MY]).flatmap(lambda d: st.tuples(st.just(d), _script(d))))
def test_generated_statements_get_the_kind_of_their_most_demanding_part(case: tuple[str, tuple[str, Kind]]) -> None:
    dialect, (sql, expected) = case
    assert classify(sql, dialect) is expected, sql
