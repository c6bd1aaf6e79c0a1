"""The MariaDB/MySQL engine.

MySQL 8 has no server on this machine (Debian ships MariaDB only): its paths (GTID sets
from ``@@GLOBAL.gtid_executed``, ``super_read_only``, ``SHOW REPLICA STATUS``, its error
codes and version strings) are tested over recorded server answers, replayed by
:class:`Recorded` at the driver's level. MariaDB's are tested on the real lab.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mysql.connector import errors as mysql_errors

import replpool
from replpool import _tokens
from replpool._engine import engine_for
from replpool._errors import ConfigurationError
from replpool._mysql import (
    MySQLEngine,
    mariadb_sample,
    mysql_sample,
    server_flavor,
    sources_from_status,
    status_hint,
)
from replpool._mysqlpool import Connection, MySQLPool
from replpool._positions import MariaDBGTID, MySQLGTIDSet
from replpool._roles import Source

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4f22ab58-82db-22f2-af44-d91bb0530673"


def mysql_error(errno: int, msg: str, sqlstate: str | None = None) -> BaseException:
    """The exception the driver raises for a server error packet."""
    return mysql_errors.get_mysql_exception(errno, msg, sqlstate)


# -- recorded MySQL 8 answers --------------------------------------------------------------

# SHOW REPLICA STATUS (MySQL 8.0.22+), the columns replpool reads and some around them.
REPLICA_STATUS_COLUMNS = [
    "Replica_IO_State", "Source_Host", "Source_User", "Source_Port", "Replica_IO_Running",
    "Replica_SQL_Running", "Seconds_Behind_Source", "Retrieved_Gtid_Set",
    "Executed_Gtid_Set", "Auto_Position", "Channel_Name",
]


def replica_status_row(retrieved: str, executed: str, channel: str = "") -> tuple[Any, ...]:
    return (
        "Waiting for source to send event", "10.0.0.1", "repl", 3306, "Yes", "Yes", 0,
        retrieved, executed, 1, channel,
    )


class Recorded:
    """A connection that replays recorded answers to the monitor's statements: one
    entry per statement, a ``(columns, rows)`` result set or an exception."""

    def __init__(self, version: str, answers: list[list[Any]]) -> None:
        self.server_info = version
        self.answers = answers
        self.sent: list[str] = []
        self._rows: list[tuple[Any, ...]] | None = None

    def cmd_query_iter(self, statements: str) -> Iterator[dict[str, Any]]:
        self.sent.append(statements)
        for answer in self.answers.pop(0):
            if isinstance(answer, BaseException):
                raise answer
            columns, rows = answer
            self._rows = list(rows)
            yield {"columns": [(name, 253, None, None, None, None, 1, 0, 45) for name in columns]}
            assert self._rows is None, "the engine must read every result set"

    def get_rows(self) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        rows, self._rows = self._rows, None
        assert rows is not None
        return rows, {"status_flag": 0, "warning_count": 0}


def recorded_mysql(engine: MySQLEngine, version: str, answers: list[list[Any]]) -> Recorded:
    conn = Recorded(version, answers)
    engine._learn_flavor(conn, "db1:3306")
    conn._rp_member, conn._rp_show_status, conn._rp_epoch = "db1:3306", True, "started 1700000000"
    return conn


POLL_COLUMNS = [
    "@@GLOBAL.read_only", "@@GLOBAL.super_read_only", "@@GLOBAL.gtid_executed",
    "@@GLOBAL.gtid_mode", "@@GLOBAL.server_id",
]


@pytest.mark.parametrize(
    ("version", "flavor", "numbers"),
    [
        ("5.5.5-10.11.6-MariaDB-0+deb12u1-log", "mariadb", (10, 11, 6)),
        ("11.4.2-MariaDB-ubu2404", "mariadb", (11, 4, 2)),
        ("8.0.36", "mysql", (8, 0, 36)),
        ("8.4.0-commercial", "mysql", (8, 4, 0)),
        ("5.7.44-log", "mysql", (5, 7, 44)),
    ],
)
def test_the_server_kind_and_version_come_from_its_greeting(version, flavor, numbers):
    assert server_flavor(version) == (flavor, numbers)


def test_mariadb_samples():
    primary = mariadb_sample((0, "", "0-1-100,1-2-7", 1), [], 5, "started 1")
    assert not primary.in_recovery and primary.received is None
    assert primary.position == MariaDBGTID.parse("0-1-100,1-2-7")
    status = [{"Connection_name": "", "Gtid_IO_Pos": "0-1-120"}, {"Connection_name": "b", "Gtid_IO_Pos": ""}]
    replica = mariadb_sample((1, "0-1-90,1-2-7", "0-3-4", 1), status, 5, None)
    assert replica.in_recovery and replica.position == MariaDBGTID.parse("0-1-90,1-2-7")
    assert replica.received == MariaDBGTID.parse("0-1-120,1-2-7")  # received covers applied
    assert mariadb_sample((1, "0-1-90", "", 0), None, 5, None).received is None
    with pytest.raises(ConfigurationError, match="binary log is off"):
        mariadb_sample((0, "", "", 0), None, 5, None)


def test_a_mysql_primary_sample():
    executed = f"{UUID_A}:1-100,\n{UUID_B}:1-5:7-9"  # MySQL breaks lines after commas
    sample = mysql_sample((0, 0, executed, "ON"), [], 123, "started 1")
    assert sample.in_recovery is False and sample.received is None
    assert sample.position == MySQLGTIDSet.parse(f"{UUID_A}:1-100,{UUID_B}:1-5:7-9")
    assert sample.sent_ns == 123 and sample.epoch == "started 1"


def test_a_mysql_replica_is_known_by_read_only_or_super_read_only():
    for flags in ((1, 0), (1, 1), (0, 1)):
        assert mysql_sample((*flags, f"{UUID_A}:1-5", "ON"), None, 0, None).in_recovery
    assert not mysql_sample((0, 0, f"{UUID_A}:1-5", "ON"), None, 0, None).in_recovery


def test_a_mysql_replica_received_position_joins_every_channel():
    status = [
        dict(zip(REPLICA_STATUS_COLUMNS, replica_status_row(f"{UUID_A}:1-120", f"{UUID_A}:1-100"))),
        dict(zip(REPLICA_STATUS_COLUMNS, replica_status_row(f"{UUID_B}:3-8", "", "ch2"))),
    ]
    sample = mysql_sample((1, 1, f"{UUID_A}:1-100,{UUID_B}:1-2", "ON"), status, 0, None)
    assert sample.position == MySQLGTIDSet.parse(f"{UUID_A}:1-100,{UUID_B}:1-2")
    assert sample.received == MySQLGTIDSet.parse(f"{UUID_A}:1-120,{UUID_B}:1-8")
    assert sample.received.covers(sample.position)


def test_mysql_8_4_tagged_gtids_are_positions_too():
    executed = f"{UUID_A}:1-10:app:1-3"
    sample = mysql_sample((0, 0, executed, "ON"), None, 0, None)
    assert sample.position.covers(MySQLGTIDSet.parse(f"{UUID_A}:app:2"))
    assert not sample.position.covers(MySQLGTIDSet.parse(f"{UUID_A}:app:4"))


@pytest.mark.parametrize("mode", ["OFF", "OFF_PERMISSIVE", "ON_PERMISSIVE", None])
def test_a_mysql_server_without_gtids_is_refused_clearly(mode):
    with pytest.raises(ConfigurationError, match="gtid_mode=ON"):
        mysql_sample((0, 0, "", mode), None, 0, None)


def test_polling_mysql_8_reads_show_replica_status_in_the_same_round_trip():
    engine = MySQLEngine()
    retrieved = f"{UUID_A}:1-42"
    conn = recorded_mysql(engine, "8.0.36", [[
        (POLL_COLUMNS, [(1, 1, f"{UUID_A}:1-40", "ON")]),
        (REPLICA_STATUS_COLUMNS, [replica_status_row(retrieved, f"{UUID_A}:1-40")]),
    ]])
    sample = engine.poll(conn)
    assert engine.name == "mysql"
    assert conn.sent == [
        "SELECT @@GLOBAL.read_only, @@GLOBAL.super_read_only, @@GLOBAL.gtid_executed,"
        " @@GLOBAL.gtid_mode, @@GLOBAL.server_id; SHOW REPLICA STATUS"
    ]
    assert sample.in_recovery and sample.received == MySQLGTIDSet.parse(retrieved)
    assert sample.position == MySQLGTIDSet.parse(f"{UUID_A}:1-40")
    assert sample.epoch == "started 1700000000"


def test_the_replication_status_is_read_every_few_seconds_when_nothing_hints_at_a_change():
    engine = MySQLEngine()
    status = (REPLICA_STATUS_COLUMNS, [replica_status_row(f"{UUID_A}:1-50", f"{UUID_A}:1-40")])
    replica = recorded_mysql(engine, "8.0.36", [
        [(POLL_COLUMNS, [(1, 1, f"{UUID_A}:1-40", "ON")]), status],
        [(POLL_COLUMNS, [(1, 1, f"{UUID_A}:1-45", "ON")])],
    ])
    first, second = engine.poll(replica), engine.poll(replica)
    assert "SHOW" in replica.sent[0] and "SHOW" not in replica.sent[1]
    assert first.received == second.received == MySQLGTIDSet.parse(f"{UUID_A}:1-50")
    replica._rp_status_due = 0  # the interval later
    replica.answers.append([(POLL_COLUMNS, [(1, 1, f"{UUID_A}:1-60", "ON")]), status])
    assert engine.poll(replica).received == MySQLGTIDSet.parse(f"{UUID_A}:1-60")  # joins what was applied
    assert "SHOW" in replica.sent[2]
    primary = recorded_mysql(engine, "8.0.36", [
        [(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-60", "ON")]), (REPLICA_STATUS_COLUMNS, [])],
        [(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-61", "ON")])],
        [(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-62", "ON")]), (REPLICA_STATUS_COLUMNS, [])],
    ])
    engine.poll(primary)
    assert engine.poll(primary).received is None
    assert "SHOW" not in primary.sent[1]
    primary._rp_status_due = 0  # the interval later: a primary is asked too (it may be demoted)
    assert not engine.poll(primary).in_recovery
    assert "SHOW" in primary.sent[2]


def test_polling_mysql_before_8_0_22_uses_show_slave_status():
    engine = MySQLEngine()
    conn = recorded_mysql(engine, "8.0.21", [[(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-3", "ON")]), ([], [])]])
    engine.poll(conn)
    assert conn.sent[0].endswith("; SHOW SLAVE STATUS")


def test_a_monitor_user_without_replication_client_still_gets_samples():
    engine = MySQLEngine()
    denied = mysql_error(
        1227, "Access denied; you need (at least one of) the SUPER, REPLICATION CLIENT "
        "privilege(s) for this operation", "42000",
    )
    conn = recorded_mysql(engine, "8.0.36", [
        [(POLL_COLUMNS, [(1, 0, f"{UUID_A}:1-7", "ON")]), denied],
        [(POLL_COLUMNS, [(1, 0, f"{UUID_A}:1-8", "ON")])],
    ])
    first = engine.poll(conn)
    assert first.in_recovery and first.received is None
    assert first.position == MySQLGTIDSet.parse(f"{UUID_A}:1-7")
    second = engine.poll(conn)  # the status is no longer asked for
    assert "SHOW" not in conn.sent[1] and second.position == MySQLGTIDSet.parse(f"{UUID_A}:1-8")


def test_other_errors_of_a_mysql_poll_fail_the_poll():
    engine = MySQLEngine()
    lost = mysql_error(2013, "Lost connection to MySQL server during query")
    conn = recorded_mysql(engine, "8.0.36", [[(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1", "ON")]), lost]])
    with pytest.raises(mysql_errors.Error) as err:
        engine.poll(conn)
    assert err.value.errno == 2013


def test_a_mysql_cluster_names_its_positions_mysql():
    engine = MySQLEngine()
    recorded_mysql(engine, "8.0.36", [])
    assert engine.name == "mysql"
    position = mysql_sample((0, 0, f"{UUID_A}:1-3", "ON"), None, 0, None).position
    assert _tokens.encode({"c": position}).startswith("rp1.")
    assert _tokens.decode(_tokens.encode({"c": position}))["c"].engine == "mysql"


def test_mariadb_and_mysql_servers_cannot_share_a_cluster():
    engine = MySQLEngine()
    recorded_mysql(engine, "8.0.36", [])
    with pytest.raises(ConfigurationError, match=r"db2:3306 is a MariaDB server .* cluster is mysql"):
        engine._learn_flavor(Recorded("5.5.5-10.11.6-MariaDB", []), "db2:3306")
    preset = MySQLEngine()
    preset.member_spec("mariadb://app@db1/app", "primary")
    assert preset.name == "mariadb"
    with pytest.raises(ConfigurationError, match="mariadb:// URL says so"):
        preset._learn_flavor(Recorded("8.0.36", []), "db1:3306")


@pytest.mark.parametrize(
    ("errno", "message", "expected"),
    [
        (1290, "The MySQL server is running with the --super-read-only option so it cannot "
               "execute this statement", True),
        (1290, "The MySQL server is running with the --read-only option so it cannot "
               "execute this statement", True),
        (1290, "The MariaDB server is running with the --read-only option so it cannot "
               "execute this statement", True),
        (1792, "Cannot execute statement in a READ ONLY transaction.", True),
        (1290, "The MySQL server is running with the --secure-file-priv option so it "
               "cannot execute this statement", False),
        (1146, "Table 'app.nope' doesn't exist", False),
    ],
)
def test_read_only_errors(errno, message, expected):
    assert MySQLEngine().is_read_only_error(mysql_error(errno, message, "HY000")) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (mysql_error(2013, "Lost connection to MySQL server during query"), True),
        (mysql_error(2006, "MySQL server has gone away"), True),
        (mysql_error(2055, "Lost connection to MySQL server at '127.0.0.1:3306', system error: 104 "
                     "Connection reset by peer"), True),
        (mysql_error(2003, "Can't connect to MySQL server on '127.0.0.1:3306' (111)"), True),
        (mysql_error(4031, "The client was disconnected by the server because of inactivity.", "HY000"), True),
        (mysql_error(1927, "Connection was killed", "70100"), True),
        (mysql_error(1053, "Server shutdown in progress", "08S01"), True),
        (mysql_errors.ReadTimeoutError(errno=3024), True),
        (mysql_error(3024, "Query execution was interrupted, maximum statement execution time "
                     "exceeded", "HY000"), False),
        (mysql_error(1064, "You have an error in your SQL syntax", "42000"), False),
        (mysql_error(1213, "Deadlock found when trying to get lock", "40001"), False),
        (ValueError("not a driver error"), False),
    ],
)
def test_disconnect_errors(exc, expected):
    engine = MySQLEngine()
    assert engine.is_disconnect(exc, None) is expected
    assert engine.is_retryable_read(exc, None) is expected


# -- configuration -------------------------------------------------------------------------------


def test_member_specs_from_urls():
    engine = MySQLEngine()
    spec = engine.member_spec("mysql://app:s%2Fcret@db1.example:3307/shop?charset=utf8mb4&ssl_disabled=true", "primary")
    assert spec.name == "db1.example:3307" and spec.host == "db1.example" and spec.port == 3307
    assert spec.database == "shop"
    assert spec.params == {
        "host": "db1.example", "port": 3307, "user": "app", "database": "shop",
        "charset": "utf8mb4", "ssl_disabled": True,
    }
    assert "cret" not in repr(spec)
    assert engine.connect_kwargs(spec)["password"] == "s/cret"
    assert engine.member_spec("mysql://app@[::1]/app", "r").name == "[::1]:3306"
    assert engine.member_spec("mariadb://localhost", "r").name == "localhost:3306"
    assert engine.name == "mariadb"  # a mariadb:// URL says so beforehand
    assert MySQLEngine().name == "mysql"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app:hunter22@db/app", "must be a mysql:// or mariadb:// URL"),
        ("mysql://app:hunter22@db:port/app", "bad host or port"),
        ("mysql://app:hunt/er22@db/app", "bad host or port"),  # '/' not encoded
        ("mysql://app:hunter22@db/app/x", "bad database name"),
        ("mysql://app:hunter22@db/app?colour=blue", "not a mysql-connector-python connection argument"),
        ("mysql://app:hunter22@db/app?user=root", "give 'user' in the URL itself"),
        ("mysql://app:hunter22@db/app?use_pure=false", "pure-Python driver"),
        ("mysql://app:hunter22@db/app#frag", "fragment"),
        ("", "empty string"),
    ],
)
def test_bad_urls_are_refused_without_showing_the_password(url, message):
    with pytest.raises(ConfigurationError, match=message) as err:
        MySQLEngine().member_spec(url, "primary")
    assert "hunt" not in str(err.value) and "er22" not in str(err.value)


def test_pool_options_are_checked():
    engine = MySQLEngine()
    engine.check_pool_options({"timeout": 5, "max_lifetime": 60, "kwargs": {"autocommit": True}})
    with pytest.raises(ConfigurationError, match="set by replpool"):
        engine.check_pool_options({"max_size": 3})
    with pytest.raises(ConfigurationError, match="not an option of replpool's MySQL pool"):
        engine.check_pool_options({"check": None})
    with pytest.raises(ConfigurationError, match="pure-Python driver"):
        engine.check_pool_options({"kwargs": {"use_pure": False}})


def test_mysql_and_mariadb_urls_make_one_cluster_but_not_with_postgresql():
    c = replpool.Cluster("mariadb://app:pw@db1/app", ["mysql://app:pw@db2/app"])
    assert c.engine_name == "mariadb"
    assert isinstance(engine_for("mysql://db", None), MySQLEngine)
    with pytest.raises(ConfigurationError, match="replica #1 is a postgresql URL, but the primary is mysql"):
        replpool.Cluster("mysql://app:pw@db1/app", ["postgresql://app:pw@db2/app"])


# -- MariaDB, on the real lab -----------------------------------------------------------------------


@pytest.fixture
def engine(mariadb_lab: Any) -> MySQLEngine:
    e = MySQLEngine()
    for m in mariadb_lab.members:
        e.member_spec(m.url, m.name)
    return e


def spec(engine: MySQLEngine, member: Any) -> Any:
    return engine.member_spec(member.url, member.name)


@pytest.fixture
def pool(engine: MySQLEngine, mariadb_lab: Any) -> Iterator[MySQLPool]:
    p = engine.make_pool(
        spec(engine, mariadb_lab.primary), cluster="t", min_size=1, max_size=2, options={},
        connect_timeout=3,
    )
    p.open(wait=True)
    yield p
    p.close()


@pytest.fixture
def table(mariadb_lab: Any) -> Iterator[str]:
    name = f"eng_{time.monotonic_ns()}"
    mariadb_lab.query(mariadb_lab.primary, f"CREATE TABLE {name} (id int AUTO_INCREMENT PRIMARY KEY)")
    mariadb_lab.wait_until_caught_up()
    yield name
    mariadb_lab.query(mariadb_lab.primary, f"DROP TABLE {name}")



@pytest.mark.lab
def test_polls_of_a_mariadb_primary_and_replica(engine, mariadb_lab, table):
    primary = engine.monitor_connect(spec(engine, mariadb_lab.primary), 1.0)
    replica = engine.monitor_connect(spec(engine, mariadb_lab.replicas[0]), 1.0)
    try:
        assert engine.name == "mariadb"
        p, r = engine.poll(primary), engine.poll(replica)
        assert not p.in_recovery and r.in_recovery
        assert isinstance(p.position, MariaDBGTID) and p.received is None
        assert p.position == mariadb_lab.primary_position()
        assert r.position == mariadb_lab.replay_position(mariadb_lab.replicas[0])
        assert r.received is not None and r.received.covers(r.position)
        mariadb_lab.pause_replication(mariadb_lab.replicas[0])
        mariadb_lab.query(mariadb_lab.primary, f"INSERT INTO {table} VALUES ()")
        target = mariadb_lab.primary_position()
        deadline = time.monotonic() + 5
        while not (r := engine.poll(replica)).received.covers(target):
            assert time.monotonic() < deadline, "Gtid_IO_Pos did not advance"
            time.sleep(0.02)
        assert not r.position.covers(target)  # received, not applied
        assert engine.poll(primary).position.covers(target)
    finally:
        engine.close_quietly(primary)
        engine.close_quietly(replica)


@pytest.mark.lab
def test_a_primary_sample_after_a_commit_covers_that_commit(engine, mariadb_lab, pool, table):
    misses: list[str] = []

    def write() -> None:
        monitor = engine.monitor_connect(spec(engine, mariadb_lab.primary), 1.0)
        conn = Connection(**mariadb_lab.primary.connect_kwargs())
        try:
            cur = conn.cursor()
            for _ in range(15):
                cur.execute(f"INSERT INTO {table} VALUES ()")
                conn.commit()
                cur.execute("SELECT @@last_gtid")  # this session's last transaction
                (gtid,) = cur.fetchone()
                if not engine.poll(monitor).position.covers(MariaDBGTID.parse(gtid)):
                    misses.append(gtid)
        finally:
            conn.close()
            engine.close_quietly(monitor)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert misses == []


@pytest.mark.lab
def test_the_epoch_is_stable_across_reconnections_and_changes_on_restart(engine, mariadb_lab):
    victim = mariadb_lab.replicas[1]
    epochs = []
    for _ in range(3):
        conn = engine.monitor_connect(spec(engine, victim), 1.0)
        epochs.append(engine.poll(conn).epoch)
        engine.close_quietly(conn)
        time.sleep(0.4)  # across a second boundary, once at least
    assert len(set(epochs)) == 1 and epochs[0].startswith("started ")
    mariadb_lab.stop(victim)
    time.sleep(1.1)  # a restart within a second of the last start would go unseen
    mariadb_lab.start(victim)
    conn = engine.monitor_connect(spec(engine, victim), 1.0)
    try:
        assert engine.poll(conn).epoch != epochs[0]
    finally:
        engine.close_quietly(conn)


@pytest.mark.lab
def test_a_monitor_without_slave_monitor_privilege_polls_without_received_positions(engine, mariadb_lab):
    lab, password = mariadb_lab, mariadb_lab.password
    lab.query(lab.primary, "CREATE USER %s@%s IDENTIFIED BY %s", ("mon_noprivs", "%", password))
    try:
        lab.wait_until_caught_up()
        replica = lab.replicas[0]
        url = f"mysql://mon_noprivs:{password}@{replica.host}:{replica.port}"
        conn = engine.monitor_connect(engine.member_spec(url, "replica"), 1.0)
        try:
            for _ in range(2):
                sample = engine.poll(conn)
                assert sample.in_recovery and sample.received is None
                assert sample.position == lab.replay_position(replica)
        finally:
            engine.close_quietly(conn)
    finally:
        lab.query(lab.primary, "DROP USER %s@%s", ("mon_noprivs", "%"))


@pytest.mark.lab
def test_abort_cuts_a_query_stuck_on_a_frozen_server(engine, mariadb_lab):
    victim = mariadb_lab.replicas[0]
    conn = engine.monitor_connect(spec(engine, victim), 1.0)
    conn._read_timeout = None  # no backstop: only abort() can end the wait
    errors: list[BaseException] = []

    def query() -> None:
        try:
            engine.poll(conn)
        except BaseException as exc:
            errors.append(exc)

    mariadb_lab.freeze(victim)
    try:
        t = threading.Thread(target=query)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # stuck
        start = time.monotonic()
        engine.abort(conn)
        t.join(2)
        assert not t.is_alive() and time.monotonic() - start < 0.5
        assert len(errors) == 1 and engine.is_disconnect(errors[0], conn), errors
        assert not engine.alive(conn)
    finally:
        mariadb_lab.thaw(victim)
        engine.close_quietly(conn)


@pytest.mark.lab
def test_read_only_checkouts_switch_the_session_lazily_and_once(engine, pool, table, monkeypatch):
    statements: list[str] = []
    original = Connection.rp_execute

    def spy(self: Connection, statement: str) -> Any:
        statements.append(statement)
        return original(self, statement)

    monkeypatch.setattr(Connection, "rp_execute", spy)

    def insert(conn: Connection) -> None:
        engine.run(conn, f"INSERT INTO {table} VALUES ()", None)

    conn = pool.getconn()
    engine.set_read_only(conn, True)
    assert statements == []  # nothing sent until a statement needs it
    with pytest.raises(mysql_errors.DatabaseError) as err:
        insert(conn)
    assert err.value.errno == 1792 and engine.is_read_only_error(err.value)
    engine.exit(conn, err.value)
    # Even a transaction the caller starts itself is read-only.
    with pytest.raises(mysql_errors.DatabaseError) as err:
        engine.run(conn, "START TRANSACTION", None)
        insert(conn)
    assert err.value.errno == 1792
    engine.exit(conn, err.value)
    engine.set_read_only(conn, False)  # the end of the checkout: nothing sent
    engine.set_read_only(conn, True)  # another read-only checkout: nothing either
    assert engine.run(conn, "SELECT 1", None) == [(1,)]
    assert statements == ["SET SESSION TRANSACTION READ ONLY"]
    engine.set_read_only(conn, False)
    insert(conn)  # a write checkout switches back, once
    engine.exit(conn, None)
    assert statements[1:] == ["SET SESSION TRANSACTION READ WRITE"]
    pool.putconn(conn)
    conn = pool.getconn()
    assert not conn._rp_dirty  # replpool's own switches are not the caller's changes
    assert engine.run(conn, f"SELECT count(*) FROM {table}", None) == [(1,)]
    pool.putconn(conn)


@pytest.mark.lab
def test_exit_commits_and_rolls_back_only_an_open_transaction(engine, pool, table, monkeypatch):
    sent: list[str] = []
    original = Connection.cmd_query

    def spy(self: Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(query if isinstance(query, str) else bytes(query).decode())
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(Connection, "cmd_query", spy)
    conn = pool.getconn()
    engine.run(conn, "SELECT 1", None)  # no table: no transaction
    engine.exit(conn, None)
    assert sent == ["SELECT 1"]
    engine.run(conn, f"INSERT INTO {table} VALUES ()", None)
    engine.exit(conn, None)
    assert sent[-1] == "COMMIT"
    engine.run(conn, f"INSERT INTO {table} VALUES ()", None)
    engine.exit(conn, ZeroDivisionError())
    assert sent[-1] == "ROLLBACK"
    assert engine.run(conn, f"SELECT count(*) FROM {table}", None) == [(1,)]
    engine.exit(conn, None)
    pool.putconn(conn)


@pytest.mark.lab
def test_a_cluster_of_mysql_urls_learns_it_talks_to_mariadb(mariadb_lab):
    lab = mariadb_lab
    c = replpool.Cluster(lab.primary.url, [r.url for r in lab.replicas], monitor_interval=0.05)
    assert c.engine_name == "mysql"  # not connected yet: the URL does not say

    def write() -> str | None:
        with replpool.session():
            c.query("SELECT 1")
            return replpool.current_token()

    with c:
        assert c.engine_name == "mariadb"
        # In a context of its own: sessions start from the thread's implicit one, which
        # earlier tests' writes on other clusters may have left.
        token = contextvars.Context().run(write)
        assert token is not None
        assert _tokens.decode(token)["default"].engine == "mariadb"


# -- roles from replication ------------------------------------------------------------------

MARIADB_STATUS_ROW = {
    "Connection_name": "", "Master_Host": "10.0.0.1", "Master_Port": 3306,
    "Master_Server_Id": 1, "Slave_IO_Running": "Yes", "Gtid_IO_Pos": "0-1-120",
}


def test_a_mariadb_replica_with_read_only_off_is_a_replica_from_its_replication():
    sample = mariadb_sample((0, "0-1-90", "0-1-90", 1, 2), [MARIADB_STATUS_ROW], 5, None)
    assert sample.in_recovery and sample.position == MariaDBGTID.parse("0-1-90")
    assert sample.replication is not None and sample.replication.read_only is False
    assert sample.replication.sources == (Source("10.0.0.1", 3306, 1),)
    assert sample.replication.server_id == 2


def test_a_mariadb_member_replicating_from_nobody_is_what_read_only_says():
    primary = mariadb_sample((0, "", "0-1-100", 1, 1), [], 5, None)
    assert not primary.in_recovery and primary.position == MariaDBGTID.parse("0-1-100")
    fenced = mariadb_sample((1, "0-1-90", "0-1-100", 1, 1), [], 5, None)
    assert fenced.in_recovery and fenced.replication.sources == ()


def test_between_two_readings_a_sample_carries_the_last_sources_seen():
    sources = (Source("db1", 3306, 1),)
    sample = mariadb_sample((0, "0-1-90", "0-1-90", 1, 2), None, 5, None, sources)
    assert sample.in_recovery and sample.replication.sources == sources
    unknown = mariadb_sample((0, "0-1-90", "0-1-90", 1, 2), None, 5, None, None)
    assert not unknown.in_recovery and unknown.replication.sources is None  # read_only decides


def test_a_mysql_replica_with_read_only_off_is_a_replica_from_its_replication():
    status = [dict(zip(REPLICA_STATUS_COLUMNS, replica_status_row(f"{UUID_A}:1-9", f"{UUID_A}:1-8")))]
    sample = mysql_sample((0, 0, f"{UUID_A}:1-8", "ON", 7), status, 0, None)
    assert sample.in_recovery
    assert sample.replication.sources == (Source("10.0.0.1", 3306, None),)


def test_sources_are_read_from_either_naming_of_the_replication_status():
    assert sources_from_status([MARIADB_STATUS_ROW, {**MARIADB_STATUS_ROW, "Connection_name": "b",
                                                     "Master_Host": "db9", "Master_Server_Id": 0}]) == (
        Source("10.0.0.1", 3306, 1, ""), Source("db9", 3306, None, "b"),
    )
    mysql_row = {"Source_Host": "db1", "Source_Port": "3307", "Source_Server_Id": "5", "Channel_Name": "c"}
    assert sources_from_status([mysql_row]) == (Source("db1", 3307, 5, "c"),)
    old = {"Master_Host": "db1", "Master_Port": 3306, "Master_Server_Id": 5, "Channel_Name": ""}
    assert sources_from_status([old]) == (Source("db1", 3306, 5, ""),)
    assert sources_from_status([]) == ()


ONE = (Source("db1", 3306, 1),)


@pytest.mark.parametrize(
    ("before", "after", "sources", "hint"),
    [
        (None, (0, "", "0-1-5", 1, 1), (), True),                          # a new connection
        ((0, "", "0-1-5", 1, 1), (0, "", "0-1-6", 1, 1), (), False),       # a primary writes
        ((0, "", "0-1-5", 1, 1), (1, "", "0-1-5", 1, 1), (), True),        # read_only set
        ((0, "", "0-1-5", 1, 1), (0, "0-2-7", "0-2-7", 1, 1), (), True),   # began to replicate
        ((0, "0-1-5", "0-1-5", 1, 2), (0, "0-1-6", "0-1-6", 1, 2), ONE, False),  # replicating
        ((0, "0-1-5", "0-1-5", 1, 2), (0, "0-1-5", "0-2-1", 1, 2), ONE, True),   # its own write
        ((0, "0-1-5", "0-1-5", 1, 2), (0, "0-1-5", "0-1-6", 1, 2), None, False),  # unreadable
    ],
)
def test_the_cheap_part_of_a_mariadb_poll_hints_at_a_change_of_role(before, after, sources, hint):
    assert status_hint(before, after, sources, "mariadb") is hint


def test_a_mysql_poll_hints_at_a_change_of_role_when_read_only_changes():
    row = (0, 0, f"{UUID_A}:1-5", "ON", 1)
    assert status_hint(row, (0, 0, f"{UUID_A}:1-6", "ON", 1), ONE, "mysql") is False
    assert status_hint(row, (0, 1, f"{UUID_A}:1-5", "ON", 1), ONE, "mysql") is True


def test_a_hint_reads_the_replication_status_at_once_in_a_second_round_trip():
    engine = MySQLEngine()
    status = (REPLICA_STATUS_COLUMNS, [replica_status_row(f"{UUID_A}:1-40", f"{UUID_A}:1-40")])
    conn = recorded_mysql(engine, "8.0.36", [
        [(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-40", "ON", 2)]), (REPLICA_STATUS_COLUMNS, [])],
        [(POLL_COLUMNS, [(0, 1, f"{UUID_A}:1-40", "ON", 2)])],  # super_read_only was set
        [status],
    ])
    assert not engine.poll(conn).in_recovery
    demoted = engine.poll(conn)
    assert conn.sent[1:] == [conn.sent[1].split(";")[0], "SHOW REPLICA STATUS"]
    assert demoted.in_recovery and demoted.replication.sources == (Source("10.0.0.1", 3306, None),)


def test_a_thorough_poll_reads_the_replication_status_every_time():
    engine = MySQLEngine()
    answer = [(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-40", "ON", 2)]), (REPLICA_STATUS_COLUMNS, [])]
    conn = recorded_mysql(engine, "8.0.36", [answer, answer])
    engine.poll(conn, thorough=True)
    engine.poll(conn, thorough=True)
    assert all(sent.endswith("; SHOW REPLICA STATUS") for sent in conn.sent)


def test_a_denied_replication_status_is_said_once_per_member_even_across_connections(caplog):
    engine = MySQLEngine()
    denied = mysql_error(1227, "Access denied; you need the REPLICATION CLIENT privilege", "42000")
    caplog.set_level("INFO", logger="replpool")
    for _ in range(3):  # the monitor reconnects: a new connection asks again
        conn = recorded_mysql(engine, "8.0.36", [[(POLL_COLUMNS, [(0, 0, f"{UUID_A}:1-7", "ON", 2)]), denied]])
        sample = engine.poll(conn)
        assert not sample.in_recovery and sample.replication.sources is None
    lines = [r.getMessage() for r in caplog.records if "replication status" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "decided from read_only alone" in lines[0] and "REPLICATION CLIENT" in lines[0]
