"""MariaDB and MySQL through mysql-connector-python: the SQL, and driver specifics.

One engine serves both servers, which differ in what replpool reads from them:

================  ===========================  ====================================
                  MariaDB                      MySQL 8
================  ===========================  ====================================
replica           ``@@read_only``              ``@@read_only`` or
                                               ``@@super_read_only``
position, replica ``@@gtid_slave_pos``         ``@@GLOBAL.gtid_executed``
position, primary ``@@gtid_binlog_pos``        ``@@GLOBAL.gtid_executed``
received          ``Gtid_IO_Pos``              ``Retrieved_Gtid_Set``
                  (``SHOW ALL SLAVES STATUS``) (``SHOW REPLICA STATUS``)
positions         :class:`MariaDBGTID`         :class:`MySQLGTIDSet`
================  ===========================  ====================================

Which one a cluster talks to is read from the server's greeting on the first
connection (MariaDB's version says ``MariaDB``), for free; a ``mariadb://`` URL says it
beforehand. Tokens name the kind of position (``mariadb`` or ``mysql``), so the engine's
``name`` is the server's, not the driver's.

On a replica, ``@@gtid_slave_pos`` is what the replication threads applied
(``@@gtid_current_pos`` would add the replica's own writes). On a primary,
``@@gtid_binlog_pos`` holds the GTID of every transaction committed: the server writes
the binary log before it acknowledges a commit, so a sample sent after a commit
returned covers it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from mysql.connector import errors as mysql_errors
from mysql.connector.constants import DEFAULT_CONFIGURATION, ClientFlag

from ._engine import MemberSpec, Replication, Sample
from ._episodes import Episodes
from ._errors import ConfigurationError
from ._health import Failure
from ._mysqlpool import (
    Connection,
    MySQLPool,
    add_client_flag,
    close_quietly,
    shut_socket,
    socket_ok,
)
from ._positions import MariaDBGTID, MySQLGTIDSet
from ._roles import Source

logger = logging.getLogger("replpool.mysql")

Flavor = str  # "mariadb" or "mysql"
Position = MariaDBGTID | MySQLGTIDSet

# One round trip per poll: several statements in one packet (the monitor's connection
# allows it; pool connections do not). The replication status is the second statement,
# so that a user without the privilege it needs still gets the first answer.
_MARIADB_POLL = (
    "SELECT @@GLOBAL.read_only, @@GLOBAL.gtid_slave_pos, @@GLOBAL.gtid_binlog_pos,"
    " @@GLOBAL.log_bin, @@GLOBAL.server_id"
)
_MARIADB_STATUS = "SHOW ALL SLAVES STATUS"
_MYSQL_POLL = (
    "SELECT @@GLOBAL.read_only, @@GLOBAL.super_read_only, @@GLOBAL.gtid_executed,"
    " @@GLOBAL.gtid_mode, @@GLOBAL.server_id"
)
# The replication status (whom a member replicates from: its role; what it received) is
# a 60-column row whose column definitions cost the pure-Python driver about 0.6 ms of
# CPU to read (one packet each), against 0.15 ms for the rest of a poll; status
# variables are no cheaper (MariaDB sums them over every connection: 0.25 ms of server
# CPU for the counters of replication statements) and performance_schema's replication
# tables are empty unless performance_schema is on (off by default in MariaDB). So it
# is read every few seconds on every member (a second statement in the poll's round
# trip, which the server counts: at 1 s, an idle process cost each member 1.6
# statements a second), and at once, in a second round trip, when the cheap part of a
# poll hints at a change of role (see status_hint), or when the monitor looks for a
# primary (``thorough``). Between two readings, a member's role is decided from what the
# last one said and its read_only; what no hint shows (replication removed from a
# writable replica that takes no writes) is seen within this interval.
_STATUS_INTERVAL = 5.0
# Seconds before trying again to read a replication status the user was denied.
_DENIED_RETRY = 60.0
# When the server started: Uptime has a resolution of one second, and the two
# statements may straddle a second (see _stable_start).
_STARTED = "SELECT UNIX_TIMESTAMP(); SHOW GLOBAL STATUS LIKE 'Uptime'"

# Connection lost, or never made: the member may be gone.
_DISCONNECT_ERRNOS = frozenset({
    2002,  # CR_CONNECTION_ERROR (Unix socket)
    2003,  # CR_CONN_HOST_ERROR: can't connect
    2006,  # CR_SERVER_GONE_ERROR
    2013,  # CR_SERVER_LOST: lost connection during query
    2055,  # CR_SERVER_LOST_EXTENDED: lost connection, system error (reset by peer...)
    1053,  # ER_SERVER_SHUTDOWN
    1152,  # ER_ABORTING_CONNECTION
    1927,  # ER_CONNECTION_KILLED (MariaDB)
    4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL: disconnected after wait_timeout)
})
_READ_ONLY_OPTION = 1290  # ER_OPTION_PREVENTS_STATEMENT: --read-only, --super-read-only
_LOCK_WAIT_TIMEOUT = 1205  # ER_LOCK_WAIT_TIMEOUT (metadata and row locks)
_READ_ONLY_TRANSACTION = 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
# Not allowed to read the replication status (no SLAVE MONITOR / REPLICATION CLIENT).
_NO_PRIVILEGE_ERRNOS = frozenset({1227, 1142, 1044})

# Failures to connect that waiting cannot fix: authentication and access.
_REFUSED_ERRNOS = frozenset({
    1044,  # ER_DBACCESS_DENIED_ERROR: no access to the database
    1045,  # ER_ACCESS_DENIED_ERROR: wrong user or password
    1129,  # ER_HOST_IS_BLOCKED: until FLUSH HOSTS
    1130,  # ER_HOST_NOT_PRIVILEGED: this host may not connect
    1251,  # ER_NOT_SUPPORTED_AUTH_MODE
    1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    2026,  # CR_SSL_CONNECTION_ERROR
    2059,  # CR_AUTH_PLUGIN_CANNOT_LOAD
    3159,  # ER_SECURE_TRANSPORT_REQUIRED (MySQL)
    4151,  # ER_ACCOUNT_HAS_BEEN_LOCKED (MySQL)
})
_BAD_DB_ERROR = 1049  # ER_BAD_DB_ERROR: unknown database

_SCHEMES = ("mysql", "mariadb")
# Driver arguments a URL may set in its query string, besides these taken from the URL.
_URL_OWN = frozenset({"host", "port", "user", "password", "passwd", "database", "db"})
_URL_OPTIONS = frozenset(DEFAULT_CONFIGURATION) | {
    "connect_timeout", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert",
    "ssl_verify_identity", "ssl_disabled", "tls_versions", "tls_ciphersuites",
    "read_timeout", "write_timeout", "init_command", "local_infile",
    # The driver's own reading of option files (my.cnf): ?option_files=/path/my.cnf
    # &option_groups=client,client-mariadb; what the URL sets wins over the files.
    "option_files", "option_groups",
}
_LIST_OPTIONS = frozenset({"option_files", "option_groups"})
# Arguments of MySQLPool that Cluster sets itself.
_OWN_POOL_ARGS = frozenset({"conninfo", "min_size", "max_size", "open", "name"})
_POOL_ARGS = frozenset({
    "kwargs", "timeout", "max_waiting", "max_lifetime", "max_idle", "reconnect_timeout",
    "reconnect_failed", "configure", "reset", "num_workers",
})


def server_flavor(version: str) -> tuple[Flavor, tuple[int, ...]]:
    """``("mariadb" | "mysql", (major, minor, patch))`` from a server's version string.

    MariaDB 10 greets clients as ``5.5.5-10.11.6-MariaDB...`` (the prefix kept old
    replication clients happy), so the driver's own ``server_version`` says (5, 5, 5)
    for every MariaDB 10 (and its ``start_transaction(readonly=...)`` refuses them)."""
    flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    text = version[6:] if flavor == "mariadb" and version.startswith("5.5.5-") else version
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
    numbers = tuple(int(g) for g in m.groups() if g is not None) if m else ()
    return flavor, numbers


def _option_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]+\.[0-9]*", text):
        return float(text)
    return text


def _parse_url(text: str, what: str) -> tuple[str, dict[str, Any], str | None]:
    """``(scheme, driver arguments, password)`` of a ``mysql://`` URL. Error messages
    never quote the URL: a mistyped one may hold the password anywhere."""
    hint = (
        " (a password with '/', '@', ':', '?' or '#' must be percent-encoded, e.g. %2F)"
    )
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{what} is not a valid mysql:// URL: bad host or port{hint}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{what} must be a mysql:// or mariadb:// URL "
            "(mysql://user:password@host:3306/database)"
        )
    if parts.fragment:
        raise ConfigurationError(f"{what} has a '#' fragment{hint}")
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if "/" in database:
        raise ConfigurationError(f"{what} has a bad database name (it contains '/'){hint}")
    args: dict[str, Any] = {"host": parts.hostname or "localhost", "port": port or 3306}
    if parts.username:
        args["user"] = unquote(parts.username)
    if database:
        args["database"] = database
    password = unquote(parts.password) if parts.password is not None else None
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigurationError(f"{what} has a malformed query string (expected ?option=value&...)") from None
    for key, value in query:
        if key in ("password", "passwd"):
            password = value
        elif key in _URL_OWN:
            raise ConfigurationError(f"{what}: give {key!r} in the URL itself, not as ?{key}=")
        elif key not in _URL_OPTIONS:
            raise ConfigurationError(
                f"{what}: ?{key}= is not a mysql-connector-python connection argument"
            )
        elif key == "use_pure" and not _option_value(value):
            raise ConfigurationError(f"{what}: replpool uses the pure-Python driver (use_pure)")
        elif key in _LIST_OPTIONS:
            args[key] = [part for part in value.split(",") if part]
        else:
            args[key] = _option_value(value)
    return scheme, args, password


class MySQLEngine:
    """The engine for MariaDB and MySQL (see the module doc). One per cluster: it learns
    which of the two the cluster's servers are."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flavor: Flavor | None = None
        self._preset = False  # the flavor came from a mariadb:// URL
        # Each member's start time (seconds since the epoch), kept across reconnections
        # so that one-second jitter does not look like a restart.
        self._starts: dict[str, int] = {}
        # Members whose replication status the monitor's user may not read (said once).
        self._denied: Episodes[str] = Episodes()

    @property
    def name(self) -> str:
        """``"mariadb"`` or ``"mysql"``: the servers' kind, once known (a ``mysql://``
        cluster that has not connected yet says ``"mysql"``)."""
        return self._flavor or "mysql"

    # -- configuration ------------------------------------------------------------------

    def member_spec(self, text: str, what: str) -> MemberSpec:
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                f"{what} must be a mysql:// URL (mysql://user:password@host:3306/db), not "
                f"{type(text).__name__ if not isinstance(text, str) else 'an empty string'}"
            )
        scheme, args, _password = _parse_url(text, what)
        if scheme == "mariadb":
            with self._lock:
                if self._flavor is None:
                    self._flavor, self._preset = "mariadb", True
        host = str(args["host"])
        shown_host = f"[{host}]" if ":" in host else host
        return MemberSpec(
            name=f"{shown_host}:{args['port']}",
            conninfo=text,
            host=host,
            port=int(args["port"]),
            database=args.get("database"),
            params=args,
        )

    def connect_kwargs(self, spec: MemberSpec) -> dict[str, Any]:
        """The driver's arguments for a member, password included (never log them)."""
        _scheme, args, password = _parse_url(spec.conninfo, spec.name)
        if password is not None:
            args["password"] = password
        return args

    def pool_option_names(self) -> frozenset[str]:
        """What ``pool_options`` may set: replpool's MySQL pool's arguments."""
        return _POOL_ARGS

    def check_pool_options(self, options: Mapping[str, Any]) -> None:
        for key in options:
            if key in _OWN_POOL_ARGS:
                raise ConfigurationError(
                    f"pool_options[{key!r}] is set by replpool; use Cluster's "
                    f"{'min_size/max_size' if key.endswith('size') else 'arguments'} instead"
                )
            if key not in _POOL_ARGS:
                raise ConfigurationError(
                    f"pool_options[{key!r}] is not an option of replpool's MySQL pool "
                    f"(those are: {', '.join(sorted(_POOL_ARGS))})"
                )
        kwargs = options.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigurationError("pool_options['kwargs'] must be a dict of driver arguments")
        if "use_pure" in kwargs and not kwargs["use_pure"]:
            raise ConfigurationError(
                "pool_options['kwargs']['use_pure']: replpool uses the pure-Python driver "
                "(it needs the connection's socket)"
            )

    def make_pool(
        self,
        spec: MemberSpec,
        *,
        cluster: str,
        min_size: int,
        max_size: int,
        options: Mapping[str, Any],
        connect_timeout: float,
    ) -> MySQLPool:
        opts = dict(options)
        kwargs = dict(opts.pop("kwargs", None) or {})
        if not {"connection_timeout", "connect_timeout"} & (set(spec.params) | set(kwargs)):
            kwargs["connection_timeout"] = connect_timeout
        user_configure = opts.pop("configure", None)
        member = spec.name

        def configure(conn: Connection) -> None:
            self._learn_flavor(conn, member)
            if user_configure is not None:
                user_configure(conn)

        return MySQLPool(
            self.connect_kwargs(spec),
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            name=f"{cluster}/{spec.name}",
            configure=configure,
            **opts,
        )

    def _learn_flavor(self, conn: Any, member: str) -> Flavor:
        """The flavor of the server behind ``conn``; the first one connected to sets the
        cluster's, the others must agree with it."""
        version = str(conn.server_info or "")
        flavor, numbers = server_flavor(version)
        conn._rp_flavor, conn._rp_version = flavor, numbers
        with self._lock:
            if self._flavor is None:
                self._flavor = flavor
            elif self._flavor != flavor:
                said = "its mariadb:// URL says" if self._preset else "its other members are"
                raise ConfigurationError(
                    f"{member} is a {'MariaDB' if flavor == 'mariadb' else 'MySQL'} server "
                    f"({version}), but this cluster is {self._flavor}: {said} so; a cluster's "
                    "members must all be MariaDB or all MySQL",
                    member=member,
                )
        return flavor

    # -- the monitor -----------------------------------------------------------------------

    def monitor_connect(self, spec: MemberSpec, timeout: float) -> Connection:
        """An autocommit connection that may send several statements at once. The
        connection timeout covers connecting only; ``read_timeout`` (whole seconds) is a
        backstop for the monitor, which cuts a hung poll itself (:meth:`abort`)."""
        conn = self._open_monitor(spec, timeout)
        try:
            self._learn_flavor(conn, spec.name)
            conn._rp_member = spec.name
            conn._rp_spec, conn._rp_timeout = spec, timeout
            conn._rp_show_status = True
            results, error = _results(conn, _STARTED)
            if error is not None or len(results) < 2:
                raise error or mysql_errors.InterfaceError("no answer to the start time query")
            now = int(results[0][1][0][0])
            uptime = int(dict((str(k), v) for k, v in results[1][1]).get("Uptime", 0))
            conn._rp_epoch = f"started {self._stable_start(spec.name, now - uptime)}"
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    def _open_monitor(self, spec: MemberSpec, timeout: float) -> Connection:
        kwargs = self.connect_kwargs(spec)
        kwargs.pop("connect_timeout", None)
        kwargs.update(
            autocommit=True,
            connection_timeout=max(1.0, timeout),
            read_timeout=max(1, math.ceil(timeout)) + 1,
            consume_results=True,
        )
        add_client_flag(kwargs, ClientFlag.MULTI_STATEMENTS)
        return Connection(**kwargs)

    def _stable_start(self, member: str, started: int) -> int:
        """The start time, as first seen unless it moved by more than the one second a
        restart could never take."""
        with self._lock:
            before = self._starts.get(member)
            if before is not None and abs(started - before) <= 1:
                return before
            self._starts[member] = started
            return started

    def poll(self, conn: Any, thorough: bool = False) -> Sample:
        flavor: Flavor = conn._rp_flavor
        if flavor == "mariadb":
            query, status = _MARIADB_POLL, _MARIADB_STATUS
        else:
            query = _MYSQL_POLL
            # SHOW SLAVE STATUS was renamed in 8.0.22 (and the old name removed in 8.4).
            status = "SHOW REPLICA STATUS" if conn._rp_version >= (8, 0, 22) else "SHOW SLAVE STATUS"
        sent = time.monotonic_ns()
        if not conn._rp_show_status and sent >= getattr(conn, "_rp_status_due", 0):
            # Try again now and then: a grant may have come.
            if self._granted(conn, status):
                conn._rp_show_status = True
            else:
                conn._rp_status_due = sent + int(_DENIED_RETRY * 1e9)
        with_status = conn._rp_show_status and (
            thorough or sent >= getattr(conn, "_rp_status_due", 0)
        )
        results, error = _results(conn, f"{query}; {status}" if with_status else query)
        if not results:
            raise error or mysql_errors.InterfaceError("no answer to the poll")
        if error is not None:
            self._status_denied(conn, error)
        row = results[0][1][0]
        status_rows = _dicts(results[1]) if len(results) > 1 else None
        sources: tuple[Source, ...] | None = getattr(conn, "_rp_sources", None)
        if (
            status_rows is None and conn._rp_show_status
            and status_hint(getattr(conn, "_rp_last", None), row, sources, flavor)
        ):
            # The cheap part of the poll hints at a change of role: read it now.
            try:
                more, _error = _results(conn, status)
            except mysql_errors.Error as exc:
                self._status_denied(conn, exc)
            else:
                status_rows = _dicts(more[0]) if more else []
        conn._rp_last = row
        if status_rows is not None:
            sources = conn._rp_sources = sources_from_status(status_rows)
            conn._rp_status_due = sent + int(_STATUS_INTERVAL * 1e9)
            self._status_readable(conn)
        elif not conn._rp_show_status:
            sources = None
        make = mariadb_sample if flavor == "mariadb" else mysql_sample
        sample = make(row, status_rows, sent, conn._rp_epoch, sources)
        if status_rows is not None:
            sample = dataclasses.replace(sample, statements=2)
        if status_rows is not None:
            conn._rp_received = sample.received
        elif sample.in_recovery and getattr(conn, "_rp_received", None) is not None:
            # Between two readings of the status: what it said then, and what was
            # applied since (which was received too).
            received = conn._rp_received.join(sample.position)
            sample = dataclasses.replace(sample, received=received)
        return sample

    def _granted(self, conn: Any, status: str) -> bool:
        """Whether the monitor's user may read the replication status now, after it was
        denied. MariaDB and MySQL apply a global privilege (``GRANT SLAVE MONITOR ON
        *.*``) to the connections opened after the grant only ("Privilege Changes",
        MariaDB's GRANT documentation; MySQL's "When Privilege Changes Take Effect"), so
        asking on the denied connection would never succeed: a new connection asks,
        and if it may read the status, the monitor's connection is opened again (the
        driver's ``reconnect()``, with the same arguments) and polls on with the grant.
        A new connection that fails is no failure of the member: the poll goes on, on
        the connection it has."""
        spec = getattr(conn, "_rp_spec", None)
        if spec is None:
            return True  # not opened by monitor_connect: ask on it again
        try:
            fresh = self._open_monitor(spec, conn._rp_timeout)
        except Exception as exc:  # the poll itself says whether the member is down
            logger.debug("%s: could not open a connection to ask for the replication status "
                         "again: %s", conn._rp_member, exc)
            return False
        try:
            _results(fresh, status)
        except mysql_errors.Error as exc:
            if exc.errno not in _NO_PRIVILEGE_ERRNOS:
                logger.debug("%s: asking for the replication status again failed: %s", conn._rp_member, exc)
            return False
        finally:
            close_quietly(fresh)
        conn.reconnect()
        conn._rp_poller = None
        return True

    def _status_denied(self, conn: Any, error: BaseException) -> None:
        """The replication status could not be read: a missing privilege is said once
        per member (and roles fall back to read_only); anything else fails the poll."""
        if getattr(error, "errno", None) not in _NO_PRIVILEGE_ERRNOS:
            raise error
        conn._rp_show_status = False
        conn._rp_sources = None
        conn._rp_status_due = time.monotonic_ns() + int(_DENIED_RETRY * 1e9)
        member = conn._rp_member
        with self._lock:
            started = self._denied.begin(member, time.monotonic())
        if started:
            logger.warning(
                "%s: the monitor's user may not read the replication status (%s): its role "
                "is decided from read_only alone, so a replica with read_only off would be "
                "taken for a primary, and its received position is not shown. Grant %s to "
                "the monitor's user.", member, getattr(error, "msg", error),
                "SLAVE MONITOR (REPLICATION CLIENT before MariaDB 10.5.9)"
                if conn._rp_flavor == "mariadb" else "REPLICATION CLIENT",
            )

    def _status_readable(self, conn: Any) -> None:
        with self._lock:
            ended = self._denied.end(conn._rp_member, time.monotonic())
        if ended is not None:
            logger.info(
                "%s: the replication status is readable again %s; roles come from "
                "replication again", conn._rp_member, ended.summary(time.monotonic()),
            )

    def close_quietly(self, conn: Any) -> None:
        close_quietly(conn)

    def abort(self, conn: Any) -> None:
        """Unblock whoever waits on this connection: shut its socket down, so a query
        stuck on a frozen server fails at once with a lost-connection error (2013)."""
        shut_socket(conn)

    # -- checkouts -----------------------------------------------------------------------------

    def alive(self, conn: Any) -> bool:
        """Whether an idle pooled connection still works, without a round trip (see
        :func:`replpool._mysqlpool.socket_ok`); the pool replaces one that does not."""
        return not conn.closed and socket_ok(conn)

    def opened_at(self, conn: Any) -> float:
        """When the pool opened a connection (``time.monotonic()``)."""
        return float(conn._rp_created)

    def exit(self, conn: Any, exc: BaseException | None) -> None:
        """psycopg's ``with conn`` rules: commit on success, roll back on an error. The
        server's status flags say whether a transaction is open, so a block that opened
        none (a read in autocommit, or no statement at all) costs no round trip."""
        if exc is None:
            if conn.in_transaction:
                conn.commit()
            return
        if conn.in_transaction and not conn.closed:
            try:
                conn.rollback()
            except Exception as rollback_error:  # the block's own error matters more
                logger.debug("rollback after %s failed: %s", type(exc).__name__, rollback_error)

    def set_read_only(self, conn: Any, read_only: bool) -> None:
        """Make a primary connection refuse writes (or accept them again) for one
        checkout: the session's access mode (``SET SESSION TRANSACTION READ ONLY``)
        covers every transaction of the checkout, autocommit or not, even one the
        caller starts. The connection remembers its mode and switches it just before
        the next statement that needs the other one, so successive checkouts of the same
        kind, and the reset when a read-only checkout ends, cost nothing."""
        conn.rp_set_read_only(read_only)

    def set_lock_timeout(self, conn: Any, seconds: float | None) -> None:
        """``lock_wait_timeout`` (metadata locks, whole seconds, at least 1) for the
        session: a replica's reads give up waiting behind a replicated DDL statement
        (error 1205). None: the server's default, read when the connection set it."""
        wanted = None if seconds is None else max(1, math.ceil(seconds))
        current = getattr(conn, "_rp_lock_timeout", None)
        if current == wanted:
            return
        if wanted is None:
            conn.rp_execute("SET SESSION lock_wait_timeout = DEFAULT")
        else:
            conn.rp_execute(f"SET SESSION lock_wait_timeout = {int(wanted)}")
        conn._rp_lock_timeout = wanted

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, mysql_errors.Error) and exc.errno == _LOCK_WAIT_TIMEOUT

    def reset_session(self, conn: Any, pool: Any) -> None:
        """Have the pool reset the session when it gets the connection back
        (``COM_RESET_CONNECTION``, which also ends ``GET_LOCK`` locks, table locks and
        temporary tables, then the connection's set-up), as it does for every change
        the server flags; some (named locks) it does not flag."""
        conn._rp_dirty = True

    def run(self, conn: Any, query: Any, params: Any) -> list[Any]:
        cur = conn.cursor()
        try:
            cur.execute(query, params)
            return cur.fetchall() if cur.with_rows else []
        finally:
            cur.close()

    def classify_failure(self, exc: BaseException) -> Failure:
        return classify_failure(exc)

    def is_retryable_read(self, exc: BaseException, conn: Any, on_replica: bool | None = None) -> bool:
        """A read that may run again elsewhere: its connection died (server gone, or
        cut by the monitor because the server hung), or on a replica it gave up waiting
        for a lock that replication holds (:meth:`set_lock_timeout`). MariaDB and MySQL
        replicas do not cancel queries that conflict with replication, as PostgreSQL's
        do."""
        return self.is_disconnect(exc, conn) or (on_replica is True and self.is_lock_timeout(exc))

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        if isinstance(exc, (mysql_errors.ReadTimeoutError, mysql_errors.WriteTimeoutError)):
            return True  # the driver closed the connection
        if not isinstance(exc, mysql_errors.Error):
            return False
        if exc.errno in _DISCONNECT_ERRNOS:
            return True
        # Other connection-level errors ("MySQL Connection not available", ...) count
        # when the socket is gone or shut (the server left, or the monitor cut it).
        return (
            isinstance(exc, (mysql_errors.OperationalError, mysql_errors.InterfaceError))
            and isinstance(conn, Connection) and (conn.closed or not socket_ok(conn))
        )

    def is_read_only_error(self, exc: BaseException) -> bool:
        """The server refused a write: it runs with ``--read-only`` (or
        ``--super-read-only``), or the transaction is read-only."""
        if not isinstance(exc, mysql_errors.Error):
            return False
        if exc.errno == _READ_ONLY_TRANSACTION:
            return True
        return exc.errno == _READ_ONLY_OPTION and "read-only" in str(exc.msg).lower()


def classify_failure(exc: BaseException) -> Failure:
    """What a failure to connect to or poll a MariaDB/MySQL member means for waiting
    (see :class:`~replpool._health.Failure`), by the server's error number: a refusal
    (authentication, access, or arguments the driver rejects), an unknown database, or
    anything else (refused or lost connections, too many connections, a shutdown),
    which may pass."""
    if isinstance(exc, ConfigurationError):
        return Failure.REFUSED
    if isinstance(exc, mysql_errors.Error):
        if exc.errno == _BAD_DB_ERROR:
            return Failure.NO_DATABASE
        if exc.errno in _REFUSED_ERRNOS:
            return Failure.REFUSED
        return Failure.UNREACHABLE
    if isinstance(exc, (ValueError, TypeError, AttributeError)):
        return Failure.REFUSED  # the driver refused its arguments
    return Failure.UNREACHABLE


# -- answers to samples (no I/O: unit-tested over recorded answers) ---------------------------


def _results(conn: Any, statements: str) -> tuple[list[tuple[list[str], list[tuple[Any, ...]]]], BaseException | None]:
    """The result sets of ``statements`` sent at once, and the error that stopped them
    if one did after at least one result (the server runs none after an error)."""
    out: list[tuple[list[str], list[tuple[Any, ...]]]] = []
    try:
        for result in conn.cmd_query_iter(statements):
            if "columns" in result:
                names = [str(c[0]) for c in result["columns"]]
                rows, _eof = conn.get_rows()
                out.append((names, [tuple(r) for r in rows]))
    except mysql_errors.Error as exc:
        if not out:
            raise
        return out, exc
    return out, None


def _dicts(result: tuple[list[str], list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    names, rows = result
    return [dict(zip(names, row)) for row in rows]


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return value.decode()
    return "" if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(_text(value))
    except ValueError:
        return None


def sources_from_status(rows: Sequence[Mapping[str, Any]]) -> tuple[Source, ...]:
    """Each replication connection of a ``SHOW ALL SLAVES STATUS`` (MariaDB) or ``SHOW
    REPLICA STATUS`` / ``SHOW SLAVE STATUS`` (MySQL) answer: the server it replicates
    from, and that server's id once reached (``Master_Server_Id``/``Source_Server_Id``,
    0 before)."""
    out = []
    for r in rows:
        host = _text(r.get("Master_Host", r.get("Source_Host")))
        port = _int(r.get("Master_Port", r.get("Source_Port"))) or 3306
        server_id = _int(r.get("Master_Server_Id", r.get("Source_Server_Id"))) or None
        channel = _text(r.get("Connection_name", r.get("Channel_Name")))
        out.append(Source(host, port, server_id, channel))
    return tuple(out)


def status_hint(
    before: Sequence[Any] | None, row: Sequence[Any], sources: tuple[Source, ...] | None,
    flavor: Flavor,
) -> bool:
    """Whether the cheap part of a poll (``row``, after ``before``) hints that the
    member's role changed since its replication status was last read: ``read_only``
    (MySQL: or ``super_read_only``) changed; a member replicating from nobody applied
    replicated transactions (``gtid_slave_pos`` moved: it was made a replica); a member
    replicating from someone wrote transactions of its own (its binary log's last GTID
    in a domain moved and carries its own server id: it was promoted, or takes stray
    writes). Pure."""
    if before is None:
        return True
    if flavor != "mariadb":
        return tuple(before[:2]) != tuple(row[:2])
    if _text(before[0]) != _text(row[0]):
        return True
    if sources is None:
        return False
    if not sources:
        return _text(before[1]) != _text(row[1])
    own = _int(row[4]) if len(row) > 4 else None
    if own is None or _text(before[2]) == _text(row[2]):
        return False
    old = {d: (srv, seq) for d, srv, seq in MariaDBGTID.parse(_text(before[2])).domains}
    return any(
        srv == own and old.get(d) != (srv, seq)
        for d, srv, seq in MariaDBGTID.parse(_text(row[2])).domains
    )


def mariadb_sample(
    row: Sequence[Any], status: list[dict[str, Any]] | None, sent_ns: int, epoch: str | None,
    sources: tuple[Source, ...] | None = None,
) -> Sample:
    """A MariaDB poll's answer as a Sample: ``row`` is (read_only, gtid_slave_pos,
    gtid_binlog_pos, log_bin[, server_id]); ``status`` the rows of SHOW ALL SLAVES
    STATUS when read with it, else ``sources``, the replication connections it last
    showed (None: unknown, not allowed).

    A member is taken for a replica here when it replicates from anyone or is
    read-only; the monitor then decides from every member's answer
    (:func:`replpool._roles.decide_roles`)."""
    read_only_value, slave_pos, binlog_pos, log_bin = row[:4]
    server_id = _int(row[4]) if len(row) > 4 else None
    if status is not None:
        sources = sources_from_status(status)
    read_only = bool(int(read_only_value))
    replica = read_only or bool(sources)
    applied = MariaDBGTID.parse(_text(slave_pos))
    written = MariaDBGTID.parse(_text(binlog_pos)) if int(log_bin) else None
    if replica:
        position = applied
    else:
        if written is None:
            raise ConfigurationError(
                "the binary log is off on this primary (log_bin), so its writes have no "
                "GTID and replpool cannot tell which replica has them: enable log_bin"
            )
        position = written
    received: MariaDBGTID | None = None
    if replica and status:
        received = position
        for r in status:
            io_pos = _text(r.get("Gtid_IO_Pos"))
            if io_pos:
                received = received.join(MariaDBGTID.parse(io_pos))
    return Sample(
        in_recovery=replica, position=position, received=received, sent_ns=sent_ns, epoch=epoch,
        replication=Replication(read_only, sources, server_id, applied, written),
    )


def mysql_sample(
    row: Sequence[Any], status: list[dict[str, Any]] | None, sent_ns: int, epoch: str | None,
    sources: tuple[Source, ...] | None = None,
) -> Sample:
    """A MySQL poll's answer as a Sample: ``row`` is (read_only, super_read_only,
    gtid_executed, gtid_mode[, server_id]); ``status`` the rows of SHOW REPLICA STATUS,
    one per channel, when read with it, else ``sources`` as for :func:`mariadb_sample`."""
    read_only_value, super_read_only, executed, gtid_mode = row[:4]
    server_id = _int(row[4]) if len(row) > 4 else None
    if _text(gtid_mode).upper() != "ON":
        raise ConfigurationError(
            f"gtid_mode is {_text(gtid_mode) or 'OFF'} on this server: replpool needs "
            "GTIDs to tell which replica has a write (gtid_mode=ON, "
            "enforce_gtid_consistency=ON)"
        )
    if status is not None:
        sources = sources_from_status(status)
    read_only = bool(int(read_only_value)) or bool(int(super_read_only))
    replica = read_only or bool(sources)
    position = MySQLGTIDSet.parse(_text(executed))
    received: MySQLGTIDSet | None = None
    if replica and status:
        received = position
        for r in status:
            retrieved = _text(r.get("Retrieved_Gtid_Set"))
            if retrieved:
                received = received.join(MySQLGTIDSet.parse(retrieved))
    return Sample(
        in_recovery=replica, position=position, received=received, sent_ns=sent_ns, epoch=epoch,
        replication=Replication(read_only, sources, server_id, position, position),
    )
