"""A MariaDB primary with GTID replicas, started with mariadbd from one data folder
template on loopback ports, for tests."""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._positions import MariaDBGTID
from . import _process
from ._base import Lab, LabMember, check_database_name, parallel, run, wait_for
from ._binaries import Binaries, find_mariadb
from ._errors import LabError

# Admin connections give up quickly on a frozen member instead of hanging the test.
_CONNECT_TIMEOUT = 5

# Options for both the template's bootstrap and the servers, so the InnoDB files made by
# mariadb-install-db fit the servers that open them. The data is thrown away with the
# lab: small buffers and files, no doublewrite. Native AIO is off because io_setup and
# io_uring are often limited or forbidden in containers, and a lab gains nothing from them.
_INNODB_OPTIONS = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--skip-innodb-doublewrite",
    "--innodb-use-native-aio=0",
)

_SERVER_OPTIONS = (
    *_INNODB_OPTIONS,
    # No fsync, but each commit still reaches the kernel (2, not 0): a server killed with
    # SIGKILL keeps every transaction it sent to its replicas. A primary that came back
    # behind its replicas would stop them under gtid_strict_mode.
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    # The 12 MB default is written out in full at every start.
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--skip-name-resolve",
    "--max-connections=150",
    "--character-set-server=utf8mb4",
    # Replicas notice a vanished or frozen primary within seconds (heartbeats every 2 s).
    "--slave-net-timeout=4",
)

_REPLICATION_USER = "repl"


def _driver() -> Any:
    """mysql.connector, imported when first needed: the driver is an optional extra."""
    try:
        import mysql.connector
    except ImportError:
        raise LabError(
            "MariaDBLab needs mysql-connector-python: pip install 'replpool[mysql]'"
        ) from None
    return mysql.connector


def _all_threads_stopped(pid: int) -> bool:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            stat = f.read()
        # The state follows the last ')' (the command name may contain some); a thread
        # that exited meanwhile (Z, X) answers nothing either.
        if stat[stat.rindex(b")") + 2 :].split()[0] not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


@dataclass(eq=False, repr=False)
class MariaDBMember(LabMember):
    """One server of a :class:`MariaDBLab`; its ``connect_kwargs()`` and
    ``admin_connect_kwargs()`` go straight to ``mysql.connector.connect()``."""

    admin_user: str = "root"
    _scheme = "mysql"

    @property
    def socket(self) -> Path:
        """The server's Unix socket (root may also log in through it, as root@localhost)."""
        return self.directory / "mariadbd.sock"

    def connect_kwargs(self) -> dict[str, Any]:
        """mysql-connector-python arguments for the application user."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }

    def admin_connect_kwargs(self) -> dict[str, Any]:
        """mysql-connector-python arguments for ``root`` (no password, loopback only)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.admin_user,
            "database": self.database,
        }


class MariaDBLab(Lab):
    """A MariaDB primary and ``replicas`` GTID replicas on loopback.

    Members are named ``maria1`` (the first primary), ``maria2``, ``maria3``...; each has
    its own data folder under the lab's temporary folder and its own free port. Every
    member writes a binary log with ``log_slave_updates`` and ``gtid_strict_mode``, so any
    replica can become the primary and feed the others; replicas run with ``read_only``
    on, or off with ``replica_read_only=False`` (the server's default, and common in
    real setups: such replicas accept writes, so tests can check that replpool still
    takes them for replicas and sends them none).
    The ``app`` user owns the ``app`` database and the ``test_...`` databases Django's
    test runner creates, and nothing else, bar ``SLAVE MONITOR`` and ``BINLOG MONITOR``
    to read replication state: ``read_only`` applies to it.
    ``root`` has no password on loopback.

    Faults: :meth:`pause_replication`, :meth:`resume_replication`,
    :meth:`set_apply_delay`, :meth:`stop`/:meth:`start` with a member, :meth:`kill`,
    :meth:`freeze`/:meth:`thaw`, :meth:`promote`; :meth:`heal` undoes all but promote.
    """

    engine = "mariadb"
    member_class = MariaDBMember
    name_prefix = "maria"
    account_names = ("mysql",)

    def __init__(
        self, replicas: int = 1, *, startup_timeout: float = 60.0, replica_read_only: bool = True
    ) -> None:
        super().__init__(replicas, startup_timeout=startup_timeout)
        self.replica_read_only = replica_read_only
        self._bins: Binaries | None = None
        # The mariadbd processes are our children: reap them once they exit.
        self._servers: dict[str, subprocess.Popen[bytes]] = {}

    # -- building -----------------------------------------------------------------------

    @property
    def bins(self) -> Binaries:
        if self._bins is None:
            self._bins = find_mariadb()
        return self._bins

    def start(self, member: LabMember | str | None = None) -> MariaDBLab:
        if member is None:
            # Fail before making folders if the binaries, account or driver are missing.
            _ = self.bins
            self._account()
            _driver()
        super().start(member)
        return self

    def stop(self, member: LabMember | str | None = None) -> None:
        super().stop(member)
        if member is None:
            for name in list(self._servers):
                self._reap(name)

    def kill(self, member: LabMember | str) -> None:
        super().kill(member)
        # mariadbd is multithreaded: its main thread shows as a zombie while the other
        # threads still exit and hold the port open (connections get reset rather than
        # refused). Reaping the process waits for the last thread.
        self._reap(self.member(member).name)

    def freeze(self, member: LabMember | str) -> None:
        super().freeze(member)
        # SIGSTOP wakes one thread of a process, which then stops the others: until it
        # has, a connection thread of mariadb can still answer a query.
        m = self.member(member)
        pid = self._server_pid(m)
        if pid is not None:
            wait_for(lambda: _all_threads_stopped(pid), 5, f"every thread of {m.name} stopping")

    def _pidfile(self, m: LabMember) -> Path:
        return m.directory / "mariadbd.pid"

    @property
    def _tmpdir(self) -> Path:
        assert self.directory is not None
        return self.directory / "tmp"

    def _build(self) -> None:
        assert self.directory is not None
        account = self._account()
        primary = self._new_member(1, "primary")
        replicas = [self._new_member(i + 2, "replica") for i in range(self.n_replicas)]
        self._save_state()
        # mariadb-install-db takes a second or two; copying its result takes milliseconds.
        template = self.directory / "template"
        template.mkdir(mode=0o700)
        account.own(template)
        # A temporary folder of the lab's own: in a /tmp shared with other machines'
        # processes (containers), a file named after a PID may be someone else's.
        self._tmpdir.mkdir(mode=0o700)
        account.own(self._tmpdir)
        run(
            [
                self.bins["mariadb-install-db"], "--no-defaults", f"--datadir={template}",
                f"--tmpdir={self._tmpdir}",
                "--auth-root-authentication-method=normal", "--skip-test-db", "--force",
                *_INNODB_OPTIONS,
            ],
            account=account,
            what="creating the MariaDB data folder template",
            timeout=self.startup_timeout,
        )
        parallel([
            functools.partial(
                run,
                ["cp", "-a", "--", str(template), str(m.datadir)],
                account=account,
                what=f"copying the data folder template for {m.name}",
            )
            for m in self.members
        ])
        shutil.rmtree(template)
        self._start_member(primary)
        primary.state = "running"
        # Made on the primary with the binary log on, so the replicas get them by
        # replication, and have them when one of them is promoted.
        with self._admin(primary) as conn:
            cur = conn.cursor()
            for statement, params in (
                ("CREATE USER %s@%s IDENTIFIED BY %s", (_REPLICATION_USER, "%", self.password)),
                ("GRANT REPLICATION SLAVE ON *.* TO %s@%s", (_REPLICATION_USER, "%")),
                (f"CREATE DATABASE `{primary.database}`", None),
                ("CREATE USER %s@%s IDENTIFIED BY %s", (primary.user, "%", self.password)),
                (f"GRANT ALL ON `{primary.database}`.* TO %s@%s", (primary.user, "%")),
                ("GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO %s@%s", (primary.user, "%")),
                # Django's test runner creates and drops test_<name> databases.
                ("GRANT ALL ON `test\\_%`.* TO %s@%s", (primary.user, "%")),
            ):
                cur.execute(statement, params)
        parallel([functools.partial(self._start_member, r) for r in replicas])
        for r in replicas:
            r.state = "running"
        self.wait_until_caught_up(self.startup_timeout)

    def _command(self, m: LabMember) -> list[str]:
        assert isinstance(m, MariaDBMember)
        return [
            self.bins["mariadbd"],
            "--no-defaults",
            f"--datadir={m.datadir}",
            # Names the relay logs; the binary log gets an explicit name below, since
            # a bare --log-bin after it would still be called mariadbd-bin.
            f"--log-basename={m.name}",
            f"--port={m.port}",
            f"--bind-address={m.host}",
            f"--socket={m.socket}",
            f"--tmpdir={self._tmpdir}",
            f"--pid-file={self._pidfile(m)}",
            f"--log-error={m.log_file}",
            f"--server-id={m.server_id}",
            f"--log-bin={m.name}-bin",
            "--log-slave-updates",
            "--gtid-strict-mode=1",
            f"--read-only={1 if m.role == 'replica' and self.replica_read_only else 0}",
            f"--report-host={m.host}",
            f"--report-port={m.port}",
            *_SERVER_OPTIONS,
        ]

    def _start_member(self, m: LabMember) -> None:
        self._reap(m.name)
        account = self._account()
        with open(m.log_file, "ab") as log:
            account.own(m.log_file)  # mariadbd reopens it as the server account
            proc = subprocess.Popen(
                self._command(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,  # Ctrl-C in the terminal must not reach the server
                **account.popen_kwargs(),
            )
        self._servers[m.name] = proc

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            with self._admin(m):
                return self._server_pid(m) is not None

        try:
            wait_for(ready, self.startup_timeout, f"{m.name} accepting connections")
        except LabError as exc:
            raise LabError(f"{exc}; the end of {m.log_file}:\n  {self._log_tail(m)}") from None
        if proc.returncode is not None:
            raise LabError(
                f"{m.name} exited with status {proc.returncode} while starting; the end of "
                f"{m.log_file}:\n  {self._log_tail(m)}"
            )
        if m.role == "replica":
            # A replica that was down during promote() still points at the old primary.
            status = self._slave_status(m)
            if status is None or int(status["Master_Port"]) != self.primary.port:
                self._follow(m, self.primary)

    def _stop_member(self, m: LabMember) -> None:
        pid = self._server_pid(m)
        if pid is not None:
            # SIGTERM is mariadbd's clean shutdown, like the SHUTDOWN statement, but it
            # also works when every connection slot is taken.
            os.kill(pid, signal.SIGTERM)
            if not _process.wait_gone([pid], self.startup_timeout):
                raise LabError(
                    f"{m.name} did not shut down within {self.startup_timeout:.0f} s after "
                    f"SIGTERM; see {m.log_file}"
                )
        self._reap(m.name)

    def _reap(self, name: str) -> None:
        proc = self._servers.pop(name, None)
        if proc is not None:
            proc.wait(timeout=10)

    @staticmethod
    def _log_tail(m: LabMember, lines: int = 15) -> str:
        try:
            return "\n  ".join(m.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- connections ------------------------------------------------------------------------

    def _admin(self, m: LabMember, database: str | None = None) -> Any:
        """An autocommit ``root`` connection to a member (close it after use), with no
        default database unless one is named: the ``app`` database does not exist yet
        while the lab is being built.

        On a replica the session writes no binary log: root is exempt from read_only,
        and a write it logged there would carry a GTID the primary never wrote, which
        gtid_strict_mode turns into a stopped replica when the primary's next
        transaction arrives."""
        assert isinstance(m, MariaDBMember)
        conn = _driver().connect(
            **{**m.admin_connect_kwargs(), "database": database},
            autocommit=True,
            connection_timeout=_CONNECT_TIMEOUT,
        )
        if m.role == "replica":
            conn.cmd_query("SET SESSION sql_log_bin = 0")
        return conn

    def query(
        self, member: LabMember | str, query: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a member as ``root`` (``%s`` placeholders); return its
        rows. On a replica, writes bypass read_only and stay out of its binary log: they
        stay on that replica, even after it is promoted."""
        m = self.member(member)
        with self._admin(m, m.database) as conn:
            cur = conn.cursor()
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        """Create another database for the application user, on the primary (the
        replicas get it by replication), and wait until every replica has it."""
        check_database_name(name)
        with self._admin(self.primary) as conn:
            cur = conn.cursor()
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"GRANT ALL ON `{name}`.* TO %s@%s", (self.primary.user, "%"))
        self.wait_until_caught_up()

    def _slave_status(self, m: LabMember) -> dict[str, Any] | None:
        """The replica's ``SHOW SLAVE STATUS`` row, or None if it follows no primary."""
        with self._admin(m) as conn:
            cur = conn.cursor(dictionary=True)
            cur.execute("SHOW SLAVE STATUS")
            rows = cur.fetchall()
        return rows[0] if rows else None

    def _follow(self, r: LabMember, primary: LabMember) -> None:
        """Point a replica at a primary, from its own GTID position, and start it."""
        with self._admin(r) as conn:
            cur = conn.cursor()
            cur.execute("STOP SLAVE")
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s,"
                " MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos,"
                # The default is 60 s between attempts to reach a restarted primary.
                " MASTER_CONNECT_RETRY = 1",
                (primary.host, primary.port, _REPLICATION_USER, self.password),
            )
            cur.execute("START SLAVE")

    # -- replication faults -------------------------------------------------------------------

    def pause_replication(self, replica: LabMember | str) -> None:
        """The replica keeps receiving the primary's binary log but stops applying it
        (``STOP SLAVE SQL_THREAD``): new commits on the primary stay invisible there."""
        r = self._running(self._replica(replica, "pause_replication"), "pause_replication")
        self.query(r, "STOP SLAVE SQL_THREAD")

    def resume_replication(self, replica: LabMember | str) -> None:
        """Undo :meth:`pause_replication`."""
        r = self._running(self._replica(replica, "resume_replication"), "resume_replication")
        self.query(r, "START SLAVE SQL_THREAD")

    def set_apply_delay(self, replica: LabMember | str, seconds: float) -> None:
        """Apply each commit ``seconds`` after the primary made it (``MASTER_DELAY``);
        0 removes the delay. A paused replica stays paused.

        MariaDB counts the delay in whole seconds, so ``seconds`` is rounded up. It also
        sleeps whole seconds computed from whole-second timestamps: a commit that lands
        just before a second boundary can be applied up to a second early, and the clock
        difference it measures with the primary at connect time can add a second."""
        r = self._running(self._replica(replica, "set_apply_delay"), "set_apply_delay")
        if seconds < 0:
            raise LabError(f"set_apply_delay needs seconds >= 0, not {seconds}")
        self._set_delay(r, math.ceil(seconds), resume=False)

    def _set_delay(self, r: LabMember, seconds: int, *, resume: bool) -> None:
        """Restarting both threads in GTID mode discards the relay log: the IO thread
        fetches it again from the primary, from @@gtid_slave_pos."""
        with self._admin(r) as conn:
            cur = conn.cursor(dictionary=True)
            cur.execute("SHOW SLAVE STATUS")
            rows = cur.fetchall()
            paused = bool(rows) and rows[0]["Slave_SQL_Running"] != "Yes" and not resume
            # MASTER_DELAY can only change while both replication threads are stopped.
            cur.execute("STOP SLAVE")
            cur.execute("CHANGE MASTER TO MASTER_DELAY = %s", (seconds,))
            cur.execute("START SLAVE IO_THREAD" if paused else "START SLAVE")

    def _heal_replication(self, m: LabMember) -> None:
        if m.state == "running":
            self._set_delay(m, 0, resume=True)

    # -- positions ------------------------------------------------------------------------------

    def _gtid(self, m: LabMember, variable: str) -> MariaDBGTID:
        with self._admin(m) as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT @@{variable}")
            (value,) = cur.fetchone()
        return MariaDBGTID.parse(value)

    def primary_position(self) -> MariaDBGTID:
        """The last transaction the primary wrote to its binary log, per domain."""
        return self._gtid(self.primary, "gtid_binlog_pos")

    def replay_position(self, replica: LabMember | str) -> MariaDBGTID:
        """The last transaction a replica applied, per domain (``@@gtid_slave_pos``)."""
        return self._gtid(self.member(replica), "gtid_slave_pos")

    def receive_position(self, replica: LabMember | str) -> MariaDBGTID | None:
        """The last transaction a replica received, applied or not (``Gtid_IO_Pos``);
        None if it follows no primary."""
        status = self._slave_status(self.member(replica))
        return None if status is None else MariaDBGTID.parse(status["Gtid_IO_Pos"])

    def wait_until_caught_up(self, timeout: float = 10.0) -> None:
        """Wait until every running replica has applied all the primary has written."""
        target = self.primary_position()
        lagging = [r for r in self.replicas if r.state in ("running", "frozen")]

        def caught_up() -> bool:
            for r in list(lagging):
                if r.state == "frozen":
                    return False
                if self.replay_position(r).covers(target):
                    lagging.remove(r)
            return not lagging

        try:
            wait_for(caught_up, timeout, "replicas catching up", interval=0.01)
        except LabError:
            names = ", ".join(self._lag_reason(r) for r in lagging)
            raise LabError(
                f"{names} did not apply the primary's position {target} within {timeout} s "
                "(paused, delayed, frozen or disconnected?)"
            ) from None

    def _lag_reason(self, r: LabMember) -> str:
        """A replica's name and state, with its replication errors if it has any."""
        if r.state != "running":
            return f"{r.name} ({r.state})"
        try:
            status = self._slave_status(r) or {}
        except Exception as exc:
            return f"{r.name} (not answering: {exc})"
        errors = [status[k] for k in ("Last_IO_Error", "Last_SQL_Error") if status.get(k)]
        return f"{r.name} ({'; '.join(errors) or 'running'})"

    # -- failover ----------------------------------------------------------------------------------

    def promote(self, replica: LabMember | str) -> None:
        """Make a replica the primary, as a failover would: the old primary is stopped
        and fenced (it never starts again), the replica applies all it received (even if
        paused or delayed), stops replicating and becomes writable, and the other
        replicas follow it from their GTID positions. Afterwards ``primary`` and
        ``replicas`` describe the new topology.

        A follower that applied transactions the new primary never received cannot
        follow it (gtid_strict_mode): promote the replica that is furthest ahead."""
        with self._lock:
            r, old = self._fence_for(replica)
            self._apply_relay_log(r)
            with self._admin(r) as conn:
                cur = conn.cursor()
                cur.execute("STOP SLAVE")
                cur.execute("RESET SLAVE ALL")
                cur.execute("SET GLOBAL read_only = 0")
            r.role = "primary"
            followers = [f for f in self.replicas if f.state == "running"]
            for f in followers:
                self._follow(f, r)
            self._wait_connected(r, followers)

    def _apply_relay_log(self, r: LabMember) -> None:
        """Let a replica apply what it received, paused or delayed, with its primary gone.

        Starting both replication threads in GTID mode, and any CHANGE MASTER, throw the
        relay log away (the IO thread would fetch it again from @@gtid_slave_pos, from a
        primary that is no longer there). Removing MASTER_DELAY needs both threads
        stopped, so the SQL thread restarts from its own relay log position with GTID
        off, which keeps the relay log."""
        with self._admin(r) as conn:
            cur = conn.cursor(dictionary=True)
            cur.execute("STOP SLAVE")
            cur.execute("SHOW SLAVE STATUS")
            (status,) = cur.fetchall()
            cur.execute(
                "CHANGE MASTER TO MASTER_DELAY = 0, MASTER_USE_GTID = no,"
                " RELAY_LOG_FILE = %s, RELAY_LOG_POS = %s",
                (status["Relay_Log_File"], status["Relay_Log_Pos"]),
            )
            cur.execute("START SLAVE SQL_THREAD")
        received = MariaDBGTID.parse(status["Gtid_IO_Pos"])
        wait_for(
            lambda: self.replay_position(r).covers(received),
            self.startup_timeout,
            f"{r.name} applying the transactions it received ({received})",
        )

    def _wait_connected(self, primary: LabMember, replicas: list[LabMember]) -> None:
        def connected() -> bool:
            for f in replicas:
                status = self._slave_status(f) or {}
                if status.get("Slave_IO_Running") != "Yes":
                    raise LabError(f"{f.name}: {status.get('Last_IO_Error') or 'connecting'}")
            return True

        names = ", ".join(f.name for f in replicas)
        wait_for(connected, self.startup_timeout, f"{names} replicating from {primary.name}")
