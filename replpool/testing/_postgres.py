"""A PostgreSQL primary with streaming replicas, built with initdb, pg_basebackup and
pg_ctl, on loopback ports, for tests."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .._positions import LSN
from ._base import Account, Lab, LabMember, check_database_name, parallel, run, wait_for
from ._binaries import Binaries, find_postgres
from ._errors import LabError

_CONFIG = """
# -- replpool lab: throwaway data, so durability is off and buffers are small --
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 120
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 256MB
max_wal_size = 256MB
hot_standby = on
wal_receiver_status_interval = 1s
wal_sender_timeout = 5s
wal_receiver_timeout = 5s
wal_retrieve_retry_interval = 200ms
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
"""

_RELOAD_SETTLE = 0.1  # seconds

_HBA = """
host all         postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all         all      127.0.0.1/32 scram-sha-256
"""


@dataclass(eq=False, repr=False)
class PostgresMember(LabMember):
    admin_user: str = "postgres"
    _scheme = "postgresql"

    @property
    def dsn(self) -> str:
        """libpq keyword string for the application user."""
        return (
            f"host={self.host} port={self.port} dbname={self.database} user={self.user} "
            f"password={self.password}"
        )

    @property
    def admin_dsn(self) -> str:
        """libpq keyword string for the superuser (trusted on loopback, no password)."""
        return f"host={self.host} port={self.port} dbname={self.database} user={self.admin_user}"

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
        }


class PostgresLab(Lab):
    """A PostgreSQL primary and ``replicas`` streaming replicas on loopback.

    Members are named ``pg1`` (the first primary), ``pg2``, ``pg3``...; each has its own
    data folder under the lab's temporary folder and its own free port. The ``app``
    database belongs to the ``app`` user (not a superuser, password authentication,
    allowed to create databases as Django's test runner does); the superuser
    ``postgres`` is trusted on loopback.

    Faults: :meth:`pause_replication`, :meth:`resume_replication`,
    :meth:`set_apply_delay`, :meth:`stop`/:meth:`start` with a member, :meth:`kill`,
    :meth:`freeze`/:meth:`thaw`, :meth:`promote`; :meth:`heal` undoes all but promote.
    """

    engine = "postgresql"
    member_class = PostgresMember
    name_prefix = "pg"
    account_names = ("postgres",)
    # SIGQUIT is PostgreSQL's immediate shutdown: it also frees the shared memory.
    emergency_signal = signal.SIGQUIT

    def __init__(
        self,
        replicas: int = 2,
        *,
        startup_timeout: float = 60.0,
        settings: dict[str, str] | None = None,
        locales: tuple[str, ...] = (),
    ) -> None:
        """``settings``: extra ``postgresql.conf`` lines for every member. ``locales``:
        system locales to build for the servers (``"de_DE.UTF-8"``; compiled with
        ``localedef`` into the lab's folder, which the servers find through
        ``LOCPATH``), so that e.g. ``settings={"lc_messages": "de_DE.UTF-8"}`` works
        on a machine that has none generated; it needs Debian's ``locales`` package."""
        super().__init__(replicas, startup_timeout=startup_timeout)
        self.settings = dict(settings or {})
        self.locales = tuple(locales)
        self._bins: Binaries | None = None

    # -- building -----------------------------------------------------------------------

    @property
    def bins(self) -> Binaries:
        if self._bins is None:
            self._bins = find_postgres()
        return self._bins

    def start(self, member: LabMember | str | None = None) -> PostgresLab:
        if member is None:
            _ = self.bins  # fail before making folders if the binaries are missing
            self._account()
        super().start(member)
        return self

    def _pidfile(self, m: LabMember) -> Path:
        return m.datadir / "postmaster.pid"

    def _locpath(self) -> Path | None:
        return self.directory / "locales" if self.locales and self.directory else None

    def _build_locales(self, account: Account) -> None:
        """Compile the requested locales (``ll_CC.CHARSET``) into the lab's folder."""
        folder = self._locpath()
        if folder is None:
            return
        localedef = shutil.which("localedef")
        if localedef is None:
            raise LabError("building locales needs localedef (Debian's libc-bin)")
        folder.mkdir(mode=0o755)
        for name in self.locales:
            m = re.fullmatch(r"([A-Za-z_@]+)\.([A-Za-z0-9-]+)", name)
            if m is None:
                raise LabError(f"locale {name!r}: expected a name such as 'de_DE.UTF-8'")
            source = Path("/usr/share/i18n/locales") / m.group(1)
            if not source.exists():
                raise LabError(
                    f"locale {name!r}: {source} is missing (apt-get install locales)"
                )
            run([localedef, "-i", m.group(1), "-f", m.group(2), str(folder / name)],
                account=Account(), what=f"building the locale {name}")
        for path in [folder, *folder.rglob("*")]:
            account.own(path)

    def _server_env(self) -> dict[str, str] | None:
        folder = self._locpath()
        return None if folder is None else {**os.environ, "LOCPATH": str(folder)}

    def _build(self) -> None:
        account = self._account()
        primary = self._new_member(1, "primary")
        self._save_state()
        self._build_locales(account)
        run(
            [
                self.bins["initdb"], "-D", str(primary.datadir), "-U", "postgres",
                "--auth=trust", "--no-sync", "--encoding=UTF8", "--no-locale",
            ],
            account=account,
            what="creating the primary's data folder",
        )
        extra = "".join(f"{k} = '{v}'\n" for k, v in self.settings.items())
        with open(primary.datadir / "postgresql.conf", "a") as f:
            f.write(_CONFIG + extra + f"port = {primary.port}\n")
        (primary.datadir / "pg_hba.conf").write_text(_HBA)
        self._start_member(primary)
        primary.state = "running"
        with self._admin(primary, dbname="postgres") as conn:
            conn.execute(
                # CREATEDB: Django's test runner creates and drops test databases.
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(primary.user), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(primary.database), sql.Identifier(primary.user)
                )
            )
        replicas = [self._new_member(i + 2, "replica") for i in range(self.n_replicas)]
        self._save_state()
        parallel([functools.partial(self._make_replica, r, primary, account) for r in replicas])
        for r in replicas:
            r.state = "running"
        if replicas:
            self._wait_streaming(primary, replicas, self.startup_timeout)

    def _make_replica(self, r: LabMember, primary: LabMember, account: Account) -> None:
        run(
            [
                self.bins["pg_basebackup"], "-D", str(r.datadir), "-h", primary.host,
                "-p", str(primary.port), "-U", "postgres", "-X", "stream", "-c", "fast",
                "--no-sync", "-R",
            ],
            account=account,
            what=f"copying the primary into {r.name}",
            timeout=self.startup_timeout,
        )
        with open(r.datadir / "postgresql.conf", "a") as f:
            f.write(f"port = {r.port}\n")
        self._set_primary_conninfo(r, primary)
        self._start_member(r)

    def _set_primary_conninfo(self, r: LabMember, primary: LabMember) -> None:
        """Point a replica at a primary in postgresql.auto.conf (pg_basebackup -R wrote
        one line; promote rewrites it), then reload if the replica runs."""
        auto = r.datadir / "postgresql.auto.conf"
        lines = [
            line for line in auto.read_text().splitlines()
            if not line.startswith("primary_conninfo")
        ]
        conninfo = (
            f"host={primary.host} port={primary.port} user=postgres application_name={r.name}"
        )
        lines.append(f"primary_conninfo = '{conninfo}'")
        auto.write_text("\n".join(lines) + "\n")
        if r.state == "running":
            with self._admin(r) as conn:
                conn.execute("SELECT pg_reload_conf()")

    def _start_member(self, m: LabMember) -> None:
        # A server killed with SIGKILL leaves its PID file; the PID may since be reused.
        if self._server_pid(m) is None:
            (m.datadir / "postmaster.pid").unlink(missing_ok=True)
        run(
            [
                self.bins["pg_ctl"], "start", "-D", str(m.datadir), "-l", str(m.log_file),
                "-w", "-t", str(int(self.startup_timeout)), "-s",
            ],
            account=self._account(),
            what=f"starting {m.name}",
            timeout=self.startup_timeout + 5,
            env=self._server_env(),
            new_session=True,  # Ctrl-C in the terminal must not reach the server
        )

    def _stop_member(self, m: LabMember) -> None:
        run(
            [self.bins["pg_ctl"], "stop", "-D", str(m.datadir), "-m", "fast", "-w", "-s"],
            account=self._account(),
            what=f"stopping {m.name}",
            timeout=self.startup_timeout + 5,
        )

    # -- connections ------------------------------------------------------------------------

    def _admin(self, m: LabMember, dbname: str | None = None) -> psycopg.Connection[Any]:
        """An autocommit superuser connection to a member (close it after use)."""
        assert isinstance(m, PostgresMember)
        return psycopg.connect(
            m.admin_dsn, dbname=dbname or m.database, autocommit=True, connect_timeout=5
        )

    def query(self, member: LabMember | str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a member as the superuser; return its rows."""
        m = self.member(member)
        with self._admin(m) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        """Create another database owned by the application user, on the primary, and
        wait until every replica has it."""
        check_database_name(name)
        self.query(
            self.primary,
            sql.SQL("CREATE DATABASE {} OWNER {}").format(  # type: ignore[arg-type]
                sql.Identifier(name), sql.Identifier(self.primary.user)
            ),
        )
        self.wait_until_caught_up()

    # -- replication faults -------------------------------------------------------------------

    def pause_replication(self, replica: LabMember | str) -> None:
        """The replica keeps receiving WAL but stops applying it
        (``pg_wal_replay_pause()``): new commits on the primary stay invisible there."""
        r = self._running(self._replica(replica, "pause_replication"), "pause_replication")
        self.query(r, "SELECT pg_wal_replay_pause()")

    def resume_replication(self, replica: LabMember | str) -> None:
        """Undo :meth:`pause_replication`."""
        r = self._running(self._replica(replica, "resume_replication"), "resume_replication")
        self.query(r, "SELECT pg_wal_replay_resume()")

    def set_apply_delay(self, replica: LabMember | str, seconds: float) -> None:
        """Apply each commit ``seconds`` after the primary made it
        (``recovery_min_apply_delay``); 0 removes the delay."""
        r = self._running(self._replica(replica, "set_apply_delay"), "set_apply_delay")
        if seconds < 0:
            raise LabError(f"set_apply_delay needs seconds >= 0, not {seconds}")
        ms = int(round(seconds * 1000))
        self.query(r, f"ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'")
        self.query(r, "SELECT pg_reload_conf()")
        # The reload reaches the startup process (which applies WAL) asynchronously, and
        # nothing tells when it has; a commit made at once could still be applied
        # without the delay. Give it the moment it takes.
        time.sleep(_RELOAD_SETTLE)

    def _heal_replication(self, m: LabMember) -> None:
        if m.state != "running":
            return
        with self._admin(m) as conn:
            conn.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("SELECT pg_wal_replay_resume()")

    # -- positions ------------------------------------------------------------------------------

    def primary_position(self) -> LSN:
        """The primary's WAL insert position, as a replica's replay position would read."""
        row = self.query(
            self.primary,
            "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int,"
            " pg_size_bytes(current_setting('wal_segment_size'))",
        )[0]
        return LSN.parse(row[0]).as_record_end(row[1], row[2])

    def replay_position(self, replica: LabMember | str) -> LSN | None:
        """How far a replica has applied the primary's WAL."""
        (value,) = self.query(replica, "SELECT pg_last_wal_replay_lsn()::text")[0]
        return None if value is None else LSN.parse(value)

    def receive_position(self, replica: LabMember | str) -> LSN | None:
        """How far a replica has received the primary's WAL (applied or not)."""
        (value,) = self.query(replica, "SELECT pg_last_wal_receive_lsn()::text")[0]
        return None if value is None else LSN.parse(value)

    def wait_until_caught_up(self, timeout: float = 10.0) -> None:
        """Wait until every running replica has applied all the primary has written."""
        target = self.primary_position()
        lagging = [r for r in self.replicas if r.state in ("running", "frozen")]

        def caught_up() -> bool:
            for r in list(lagging):
                if r.state == "frozen":
                    return False
                pos = self.replay_position(r)
                if pos is not None and pos.covers(target):
                    lagging.remove(r)
            return not lagging

        try:
            wait_for(caught_up, timeout, "replicas catching up", interval=0.01)
        except LabError:
            names = ", ".join(f"{r.name} ({r.state})" for r in lagging)
            raise LabError(
                f"{names} did not apply the primary's position {target} within {timeout} s "
                "(paused, delayed, frozen or disconnected?)"
            ) from None

    def _wait_streaming(self, primary: LabMember, replicas: list[LabMember], timeout: float) -> None:
        names = sorted(r.name for r in replicas)

        def streaming() -> bool:
            rows = self.query(
                primary,
                "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
            )
            return sorted(r[0] for r in rows if r[0] in names) == names

        wait_for(streaming, timeout, f"{', '.join(names)} streaming from {primary.name}")

    # -- failover ----------------------------------------------------------------------------------

    def promote(self, replica: LabMember | str) -> None:
        """Make a replica the primary, as a failover would: the old primary is stopped
        and fenced (it never starts again), the replica is promoted, and the other
        replicas follow it. Afterwards ``primary`` and ``replicas`` describe the new
        topology."""
        with self._lock:
            r, old = self._fence_for(replica)
            # Replay whatever the replica received before it takes over.
            self._heal_replication(r)
            run(
                [self.bins["pg_ctl"], "promote", "-D", str(r.datadir), "-w", "-s",
                 "-t", str(int(self.startup_timeout))],
                account=self._account(),
                what=f"promoting {r.name}",
                timeout=self.startup_timeout + 5,
            )
            r.role = "primary"
            followers = self.replicas
            for f in followers:
                self._set_primary_conninfo(f, r)
            running = [f for f in followers if f.state == "running"]
            if running:
                self._wait_streaming(r, running, self.startup_timeout)
