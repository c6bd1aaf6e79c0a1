"""PostgreSQL through psycopg 3 and psycopg_pool: the SQL, and driver specifics."""

from __future__ import annotations

import configparser
import difflib
import inspect
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._engine import MemberSpec, Sample
from ._episodes import Episodes
from ._errors import ConfigurationError
from ._health import Failure
from ._positions import LSN

# One round trip per poll: role, position, received position, and the postmaster start
# time, which changes when the server restarts (a restarted replica may serve an older
# state than it had, so its old samples must be forgotten).
_POLL = """
SELECT pg_is_in_recovery(),
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_insert_lsn() END)::text,
       pg_last_wal_receive_lsn()::text,
       pg_postmaster_start_time()::text
"""
_SIZES = (
    "SELECT current_setting('wal_block_size')::int,"
    " pg_size_bytes(current_setting('wal_segment_size'))"
)

logger = logging.getLogger("replpool.pool")


class _ConnectErrors(logging.Filter):
    """psycopg_pool logs a warning at every failed attempt to connect ("error
    connecting in 'pool': ..."), again and again while a member is away. For the pools
    replpool made, let the first of a run through, drop the others, and say once when
    the pool connects again (with how many attempts failed meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.pools: set[str] = set()
        self.failing: Episodes[str] = Episodes()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "error connecting in %r: %s" or not isinstance(record.args, tuple):
            return True
        name = record.args[0] if record.args else None
        if name not in self.pools:
            return True
        with self._lock:
            return self.failing.begin(str(name), time.monotonic())

    def connected(self, name: str) -> None:
        now = time.monotonic()
        with self._lock:
            ended = self.failing.end(name, now)
        if ended is not None:
            logger.info("pool %r: connected again %s", name, ended.summary(now, "failed attempts"))


_CONNECT_ERRORS = _ConnectErrors()
logging.getLogger("psycopg.pool").addFilter(_CONNECT_ERRORS)

# A standby cancelled a statement that conflicted with replay (see is_recovery_conflict).
_RECOVERY_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


def lock_timeout_value(seconds: float | None) -> str:
    """``lock_timeout``'s setting for ``seconds`` (None: no limit, ``"0"``)."""
    return "0" if seconds is None else f"{max(1, round(seconds * 1000))}ms"


def lock_timeout_was_set(conn: Any, seconds: float | None, value: str) -> None:
    """Remember on ``conn`` that its session's ``lock_timeout`` is now ``value``, asked
    as ``seconds`` (see ``PostgresEngine.needs_lock_timeout``)."""
    conn._replpool_lock_timeout = value
    conn._replpool_lock_timeout_s = seconds


def _on_standby(conn: Any, on_replica: bool | None) -> bool:
    """Whether ``conn``'s server is a standby: as it says (``in_hot_standby``), else as
    the caller knows (``on_replica``), else no."""
    try:
        reported = conn.info.parameter_status("in_hot_standby") if conn is not None else None
    except Exception:  # a closed connection, or not a psycopg one
        reported = None
    if reported is not None:
        return str(reported) == "on"
    return bool(on_replica)


# Arguments of psycopg_pool.ConnectionPool that Cluster sets itself.
_OWN_POOL_ARGS = frozenset({"conninfo", "min_size", "max_size", "open", "name"})


class LifoConnectionPool(psycopg_pool.ConnectionPool):  # type: ignore[type-arg]
    """psycopg_pool's pool, handing out the most recently returned idle connection, with
    a short path for the common checkout.

    psycopg_pool hands idle connections out first-in first-out, so a lightly loaded pool
    rotates through all of them; on loopback each query then costs noticeably more than
    on the connection just used (its server process and caches are warm). Last-in
    first-out also leaves the surplus idle long enough for ``max_idle`` to close it,
    while the pool's shrinking still closes the one idle longest (the leftmost).

    The short path: when an idle connection is ready, ``getconn`` takes it under the
    pool's lock and ``putconn`` puts a clean one (idle, not expired, not drained, nobody
    waiting, no ``reset`` callback) straight back, doing exactly what psycopg_pool does
    in that case and skipping only its logging. Every other case (waiting, growing, a
    ``check`` callback, a connection to roll back, replace or close, a closed pool) goes
    through psycopg_pool's own code. It reads private attributes of psycopg_pool, so it
    is enabled only on the versions it was checked against (:data:`FAST_PATH`); the
    test suite pins each behaviour it must keep.

    Each connection that enters the idle pool (returned, new, or checked) is stamped
    with the time, ``conn._replpool_returned`` (``time.monotonic()``), for
    :meth:`PostgresEngine.alive`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_get = FAST_PATH and self._check is None
        self._fast_put = FAST_PATH and self._reset is None

    def getconn(self, timeout: float | None = None) -> Any:
        if self._fast_get:
            # acquire() and release() rather than `with`: the lock's __exit__ call costs
            # as much again as the rest of this path.
            lock = self._lock
            lock.acquire()
            try:
                idle = self._pool
                if idle and not self._closed and not self._open_implicit:
                    conn = idle.pop()  # _pop_idle(), one call shorter
                    if len(idle) < self._nconns_min:
                        self._nconns_min = len(idle)
                    self._stats[self._REQUESTS_NUM] += 1
                    conn._pool = self
                    return conn
            finally:
                lock.release()
        return super().getconn(timeout)

    def putconn(self, conn: Any) -> None:
        if self._fast_put and (now := clean_return_time(self, conn)):
            lock = self._lock  # not `with`, as in getconn
            lock.acquire()
            try:
                if not self._closed and not self._waiting and self._pool_full_event is None:
                    conn._pool = None
                    conn._replpool_returned = now
                    self._pool.append(conn)
                    return
            finally:
                lock.release()
        super().putconn(conn)

    def _add_to_pool(self, conn: Any) -> None:
        # Every other way into the idle pool (psycopg_pool's return, a new connection,
        # one that passed check()): the connection worked just now.
        conn._replpool_returned = time.monotonic()
        super()._add_to_pool(conn)

    def _get_ready_connection(self, timeout: float | None) -> Any:
        # Called with the pool's lock held, as the base class does.
        if self._pool and (timeout is None or timeout > 0):
            return self._pop_idle()
        return super()._get_ready_connection(timeout)

    def _pop_idle(self) -> Any:
        """The idle connection returned last (the lock held, the pool not empty),
        keeping the low-water mark that psycopg_pool's shrinking reads."""
        conn = self._pool.pop()
        if len(self._pool) < self._nconns_min:
            self._nconns_min = len(self._pool)
        return conn

    def get_stats(self) -> dict[str, int]:
        stats = super().get_stats()
        # psycopg_pool keeps a waiter whose wait timed out in its queue until a
        # connection comes back; count only the clients still waiting.
        with self._lock:
            stats["requests_waiting"] = sum(
                1 for w in self._waiting if w.conn is None and w.error is None
            )
        return stats


_IDLE = pq.TransactionStatus.IDLE
_CONN_OK = pq.ConnStatus.OK
# A connection back in its pool for less than this many seconds is handed out without
# the liveness check (see PostgresEngine.alive); _NEVER: not stamped by a pool.
RECENTLY_RETURNED = 0.001
_NEVER = float("-inf")
_HAS_DRAIN = hasattr(psycopg_pool.ConnectionPool, "drain")
# The psycopg_pool versions whose getconn/putconn the short path was checked against.
FAST_PATH_VERSIONS = ("3.2.", "3.3.")
FAST_PATH = psycopg_pool.__version__.startswith(FAST_PATH_VERSIONS)


def clean_return_time(pool: Any, conn: Any) -> float:
    """Now (``time.monotonic()``) if ``conn``, handed back to ``pool`` (either front's),
    may go straight to its idle connections as psycopg_pool would put it there: it is the
    pool's own, idle (no transaction to roll back), not past its lifetime, and not opened
    before a ``drain()``; else 0.0 (psycopg_pool's own ``putconn`` deals with it). Reads
    private attributes of psycopg_pool: the short paths call it only under
    :data:`FAST_PATH`."""
    own = getattr(conn, "_pool", None)
    if own is not pool or conn.pgconn.transaction_status != _IDLE:
        return 0.0
    now = time.monotonic()
    if conn._expire_at <= now or (_HAS_DRAIN and conn._created_at <= own._drained_at):
        return 0.0
    return now

# The last-in first-out order leans on two private names of psycopg_pool (3.2 and 3.3
# have them); should a later version rename them, fall back to the plain pool rather
# than break. (The short path has its own gate, FAST_PATH.)
_POOL_CLASS: type[psycopg_pool.ConnectionPool] = (  # type: ignore[type-arg]
    LifoConnectionPool
    if hasattr(psycopg_pool.ConnectionPool, "_get_ready_connection")
    and "_nconns_min" in inspect.getsource(psycopg_pool.ConnectionPool._get_ready_connection)
    else psycopg_pool.ConnectionPool
)


class _Watch:
    """What :meth:`PostgresEngine.alive` keeps on a pooled connection: a poll object on
    its socket (cheaper per check than ``select.select``), whether its server said
    farewell (a FATAL notice while the connection was idle), and when it was opened
    (made when the pool configures a new connection)."""

    __slots__ = ("poll", "doomed", "opened")

    def __init__(self, fd: int) -> None:
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.doomed = False
        self.opened = time.monotonic()


def _watch(conn: psycopg.Connection[Any]) -> _Watch:
    watch = _Watch(conn.pgconn.socket)
    conn._replpool_watch = watch  # type: ignore[attr-defined]
    return watch


def service_files() -> list[Path]:
    """libpq's connection service files, in the order it reads them: ``PGSERVICEFILE``
    (else ``~/.pg_service.conf``), then ``pg_service.conf`` in ``PGSYSCONFDIR`` (else
    ``/etc/postgresql-common``, where Debian's libpq looks)."""
    user = os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")
    system = Path(os.environ.get("PGSYSCONFDIR") or "/etc/postgresql-common") / "pg_service.conf"
    return [Path(user), system]


def service_params(name: str, what: str) -> dict[str, str]:
    """The keywords of service ``name`` from the first service file that defines it
    (as libpq does), for naming the member; libpq itself reads them to connect.
    ConfigurationError if no file defines it."""
    for path in service_files():
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            found = parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{what}: cannot read the service file {path}: {exc}") from None
        if found and parser.has_section(name):
            return {k: v for k, v in parser.items(name) if k != "password"}
    raise ConfigurationError(
        f"{what} names the service {name!r}, which none of the service files defines "
        f"({', '.join(str(p) for p in service_files())})"
    )


def _pool_arg_names() -> frozenset[str]:
    params = inspect.signature(psycopg_pool.ConnectionPool.__init__).parameters
    return frozenset(p for p in params if p != "self") - _OWN_POOL_ARGS


# A failed connection carries no SQLSTATE in psycopg, only libpq's message (the server's
# FATAL text included): failures that waiting cannot fix are told by these words, from
# libpq's and the server's English messages (fe-auth.c, fe-connect.c, auth.c,
# postinit.c). Anything else, a refused or timed-out connection, a server starting up,
# shutting down or out of connection slots, is one that may pass.
_REFUSED_WORDS = (
    "authentication failed",  # password, ident, peer, pam, ldap... (28P01, 28000)
    "no password supplied",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "is not permitted to log in",
    "permission denied for database",
    "invalid connection option",
    "invalid port number",  # libpq refuses the string's values when connecting
    "invalid integer value",
    "invalid ssl protocol version range",
    "invalid value for parameter",
    "unrecognized configuration parameter",
    "unsupported frontend protocol",
    "ssl was required",
    "ssl error",
    "certificate",
    "channel binding",
)
# libpq's "invalid sslmode value", "invalid target_session_attrs value"... (connectOptions2).
_BAD_OPTION_VALUE = re.compile(r'invalid [a-z_]+ value: "')
_NO_ROLE = re.compile(r'role "[^"]*" does not exist')
_NO_DATABASE = re.compile(r'database "[^"]*" does not exist')


def classify_failure(exc: BaseException) -> Failure:
    """What a failure to connect to or poll a PostgreSQL member means for waiting (see
    :class:`~replpool._health.Failure`): a refusal (authentication, privileges, bad
    options), a database that does not exist there, or anything else, which may pass."""
    if isinstance(exc, ConfigurationError):
        return Failure.REFUSED
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        # An error the server sent once connected: invalid_catalog_name, then
        # authorization (class 28) and syntax or access rule violations (class 42).
        if sqlstate == "3D000":
            return Failure.NO_DATABASE
        return Failure.REFUSED if sqlstate[:2] in ("28", "42") else Failure.UNREACHABLE
    if isinstance(exc, psycopg.ProgrammingError):
        return Failure.REFUSED  # the connection string itself (an unknown option...)
    if not isinstance(exc, psycopg.Error):
        return Failure.UNREACHABLE
    text = str(exc)
    if _NO_DATABASE.search(text):
        return Failure.NO_DATABASE
    low = text.lower()
    if _NO_ROLE.search(text) or _BAD_OPTION_VALUE.search(text) or any(word in low for word in _REFUSED_WORDS):
        return Failure.REFUSED
    return Failure.UNREACHABLE


# libpq quotes the offending part of a connection string it cannot parse. Most of them
# may be values (a password): those are hidden. An option's name is not secret, and a
# mistyped one is the mistake to show: libpq names it after these words (fe-connect.c).
_NAMED_BY = ("invalid connection option ", "invalid URI query parameter: ", "for connection option ")
_QUOTED = re.compile(r'"([^"]*)"')


def _libpq_keywords() -> list[str]:
    return sorted(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _follows_password(name: str, text: str) -> bool:
    """Whether ``name`` comes right after a password in ``text``, where it may be the
    rest of a password with a space (``password=my secret=x``) or a ``&``
    (``?password=a&b=c``) cut off by libpq."""
    value = r"(?:'(?:[^'\\]|\\.)*'|\S*)"
    keywords = rf"(?:^|\s)password\s*=\s*{value}\s+{re.escape(name)}\s*="
    uri = rf"[?&]password=[^&]*&{re.escape(name)}(?:[=&]|$)"
    return bool(re.search(keywords, text) or re.search(uri, text))


def _sanitize(message: str, text: str) -> str:
    """libpq's message about the connection string ``text``, with every quoted part
    that could be a value replaced by ``"..."``. Option names stay (``invalid
    connection option "sslmdoe"``), with the likely meaning of a mistyped one; a name
    that comes right after a password and is like no option's may be the rest of that
    password, and is hidden with a word on quoting it."""

    def shown(m: re.Match[str]) -> str:
        quoted = m.group(1)
        if len(quoted) == 1 and not quoted.isalnum():
            return m.group(0)  # punctuation libpq names: missing "=" after ...
        if not message[: m.start()].endswith(_NAMED_BY):
            return '"..."'
        close = difflib.get_close_matches(quoted, _libpq_keywords(), n=1, cutoff=0.75)
        if close and close[0] != quoted:
            return f'"{quoted}" (did you mean "{close[0]}"?)'
        if close or not _follows_password(quoted, text):
            return m.group(0)
        return (
            '"..." (not shown: it follows the password, whose value it may be part of; '
            "quote a password with spaces, password='...', or percent-encode it in a URL)"
        )

    return _QUOTED.sub(shown, message.strip())


class PostgresEngine:
    name: ClassVar[str] = "postgresql"
    position_type = LSN

    def __init__(self) -> None:
        # WAL geometry for turning insert positions into replay-comparable ones.
        self._sizes: tuple[int, int] = (8192, 16 << 20)

    # -- configuration ------------------------------------------------------------------

    def member_spec(self, text: str, what: str) -> MemberSpec:
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                f"{what} must be a connection string (postgresql://user@host:port/db or "
                f"'host=... dbname=...'), not {text!r}"
                if not isinstance(text, str) else f"{what} is an empty connection string"
            )
        try:
            params = conninfo_to_dict(text)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"{what} is not a valid PostgreSQL connection string: {_sanitize(str(exc), text)}"
            ) from None
        service = params.get("service") or os.environ.get("PGSERVICE")
        if service:
            # libpq's order: the string's own keywords, then the service's, then PG*
            # variables; the member's name must come from where libpq will connect.
            params = {**service_params(str(service), what), **params}
        host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost")
        if "," in host:
            raise ConfigurationError(
                f"{what} names several hosts ({host}); give each member its own connection "
                "string (replpool chooses among them itself)"
            )
        port_text = str(params.get("port") or os.environ.get("PGPORT") or "5432")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigurationError(f"{what} has a bad port {port_text!r} (a number from 1 to 65535)")
        shown = {k: v for k, v in params.items() if k != "password"}
        return MemberSpec(
            name=f"{host}:{port_text}",
            conninfo=make_conninfo(text),
            host=host,
            port=int(port_text),
            database=str(params["dbname"]) if params.get("dbname") else None,
            params=shown,
        )

    def pool_option_names(self) -> frozenset[str]:
        """What ``pool_options`` may set: psycopg_pool's arguments but those replpool sets."""
        return _pool_arg_names()

    def check_pool_options(self, options: Mapping[str, Any]) -> None:
        allowed = _pool_arg_names()
        for key in options:
            if key in _OWN_POOL_ARGS:
                raise ConfigurationError(
                    f"pool_options[{key!r}] is set by replpool; use Cluster's "
                    f"{'min_size/max_size' if key.endswith('size') else 'arguments'} instead"
                )
            if key not in allowed:
                raise ConfigurationError(
                    f"pool_options[{key!r}] is not a psycopg_pool.ConnectionPool argument "
                    f"(those are: {', '.join(sorted(allowed))})"
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
    ) -> psycopg_pool.ConnectionPool[Any]:
        opts = dict(options)
        kwargs = dict(opts.pop("kwargs", None) or {})
        if "connect_timeout" not in spec.params:
            kwargs.setdefault("connect_timeout", max(2, int(round(connect_timeout))))
        user_configure = opts.pop("configure", None)
        name = f"{cluster}/{spec.name}"
        _CONNECT_ERRORS.pools.add(name)

        def configure(conn: psycopg.Connection[Any]) -> None:
            _CONNECT_ERRORS.connected(name)
            self._watch_farewell(conn)
            if user_configure is not None:
                user_configure(conn)

        pool = _POOL_CLASS(
            spec.conninfo,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            configure=configure,
            **opts,
        )
        pool._replpool_configure = user_configure  # type: ignore[attr-defined]  # again after a reset
        return pool

    def _watch_farewell(self, conn: psycopg.Connection[Any]) -> None:
        """A server that shuts down or loses its postmaster sends a FATAL message to
        idle clients before it closes their sockets; remember who got one."""
        watch = _watch(conn)

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            if diag.severity_nonlocalized in ("FATAL", "PANIC"):
                watch.doomed = True

        conn.add_notice_handler(on_notice)

    # -- the monitor -----------------------------------------------------------------------

    def monitor_connect(self, spec: MemberSpec, timeout: float) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            spec.conninfo,
            autocommit=True,
            connect_timeout=max(2, int(round(timeout))),
            application_name="replpool monitor",
        )
        try:
            block, segment = conn.execute(_SIZES).fetchone()  # type: ignore[misc]
            self._sizes = (int(block), int(segment))
        except BaseException:
            conn.close()
            raise
        return conn

    def poll(self, conn: psycopg.Connection[Any], thorough: bool = False) -> Sample:
        """One poll; ``pg_is_in_recovery()`` is the role, so ``thorough`` changes
        nothing."""
        sent = time.monotonic_ns()
        row = conn.execute(_POLL).fetchone()
        assert row is not None
        in_recovery, position, received, started = row
        pos = LSN.parse(position) if position is not None else None
        if pos is not None and not in_recovery:
            pos = pos.as_record_end(*self._sizes)
        return Sample(
            in_recovery=bool(in_recovery),
            position=pos,
            received=LSN.parse(received) if received is not None else None,
            sent_ns=sent,
            epoch=started,
        )

    def close_quietly(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.close()
        except Exception:
            pass

    def abort(self, conn: psycopg.Connection[Any]) -> None:
        """Unblock whoever waits on this connection: shut its socket down, so a query
        stuck on a frozen server fails at once with a connection error."""
        try:
            fd = conn.pgconn.socket
        except Exception:
            return
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    # -- checkouts ---------------------------------------------------------------------------

    def alive(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether an idle pooled connection still works, without a round trip: a
        healthy idle connection has nothing to read, while one whose server went away
        has an end-of-file (or a farewell message) waiting.

        A connection that its pool took back less than :data:`RECENTLY_RETURNED`
        seconds ago (1 ms; the pool stamps ``conn._replpool_returned``) is not looked at:
        it worked then, and looking costs a system call, which lets another thread take
        the interpreter. Only a server that died within that millisecond goes unseen;
        its connection then fails like those in flight when it died (``query()`` and the
        Django engines run a failed replica read once more elsewhere)."""
        watch: _Watch | None = getattr(conn, "_replpool_watch", None)
        if (
            watch is not None and not watch.doomed
            and time.monotonic() - getattr(conn, "_replpool_returned", _NEVER) < RECENTLY_RETURNED
        ):
            return True
        pgconn = conn.pgconn
        try:
            if watch is None:
                watch = _watch(conn)
            # A farewell message and the end of the stream may arrive in two reads.
            for _ in range(3):
                if pgconn.status != _CONN_OK:
                    return False
                if not watch.poll.poll(0):
                    break
                pgconn.consume_input()
        except (psycopg.OperationalError, OSError, ValueError):
            return False
        if watch.doomed:
            pgconn.finish()  # so the pool sees it broken and replaces it
            return False
        return pgconn.status == _CONN_OK

    def opened_at(self, conn: psycopg.Connection[Any]) -> float:
        """When a pooled connection was opened (``time.monotonic()``), or, for one
        whose opening replpool did not see, when it first checked it."""
        watch = getattr(conn, "_replpool_watch", None)
        return watch.opened if watch is not None else time.monotonic()

    def in_transaction(self, conn: Any) -> bool:
        """Whether a connection of either front is in a transaction (no I/O)."""
        return bool(conn.pgconn.transaction_status != _IDLE)

    def exit(self, conn: psycopg.Connection[Any], exc: BaseException | None) -> None:
        # psycopg's own rules: commit on success, roll back on error. The pool sets
        # conn._pool, so this does not close the connection. Outside a transaction (in
        # autocommit, or a block that ran nothing) there is nothing to end: psycopg's
        # commit would still cost a few microseconds.
        if conn.pgconn.transaction_status == _IDLE:
            return
        if exc is None:
            conn.__exit__(None, None, None)
        else:
            conn.__exit__(type(exc), exc, exc.__traceback__)

    def set_read_only(self, conn: psycopg.Connection[Any], read_only: bool) -> None:
        """Make a primary connection refuse writes (or accept them again) for one
        checkout. In a transaction, psycopg's ``read_only`` starts it with ``BEGIN READ
        ONLY`` at no cost. In autocommit there is no BEGIN, so the session default is
        switched, and remembered, so that consecutive read checkouts pay nothing."""
        if not self.needs_read_only(conn, read_only):
            return
        if not conn.autocommit:
            conn.read_only = True if read_only else None
        elif read_only:
            conn.execute("SET default_transaction_read_only = on")
            conn._replpool_ro_session = True  # type: ignore[attr-defined]
        else:
            conn.execute("SET default_transaction_read_only = off")
            conn._replpool_ro_session = False  # type: ignore[attr-defined]

    def needs_read_only(self, conn: Any, read_only: bool) -> bool:
        """Whether :meth:`set_read_only` has anything to do on ``conn`` (no I/O; either
        front's connection): the mode is not as asked, and can be changed now (not in
        a transaction, unless in autocommit)."""
        if not conn.autocommit:
            return bool(
                conn.read_only is not (True if read_only else None)
                and conn.pgconn.transaction_status == _IDLE
            )
        # An autocommit connection whose session default was made read-only carries
        # _replpool_ro_session = True (set_read_only sets it, a session reset clears it).
        return getattr(conn, "_replpool_ro_session", False) != read_only

    def set_lock_timeout(self, conn: psycopg.Connection[Any], seconds: float | None) -> None:
        """``lock_timeout`` for the session: a replica's reads give up waiting behind
        replay (a replayed TRUNCATE or ALTER holds an ACCESS EXCLUSIVE lock until its
        commit is replayed: forever while replay is paused), with SQLSTATE 55P03."""
        if getattr(conn, "_replpool_lock_timeout_s", None) == seconds:
            return  # already so (see needs_lock_timeout): the common case, one call shorter
        if not self.needs_lock_timeout(conn, seconds):
            return
        value = lock_timeout_value(seconds)
        idle = conn.pgconn.transaction_status == _IDLE
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (value,))
        if idle and conn.pgconn.transaction_status != _IDLE:
            conn.commit()  # not autocommit: keep it, end the transaction it opened
        lock_timeout_was_set(conn, seconds, value)

    def needs_lock_timeout(self, conn: Any, seconds: float | None) -> bool:
        """Whether :meth:`set_lock_timeout` has anything to do on ``conn`` (no I/O;
        either front's connection): the session's ``lock_timeout``, remembered on the
        connection (the server's default, none, until set), is not what ``seconds``
        asks."""
        if getattr(conn, "_replpool_lock_timeout_s", None) == seconds:
            return False  # already so: the common case
        if getattr(conn, "_replpool_lock_timeout", "0") == lock_timeout_value(seconds):
            conn._replpool_lock_timeout_s = seconds  # the same setting, asked otherwise
            return False
        return True

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.LockNotAvailable)

    def reset_session(self, conn: psycopg.Connection[Any], pool: Any) -> None:
        """``DISCARD ALL`` (settings, temporary objects, prepared statements, cursors,
        LISTEN, advisory locks: PostgreSQL's own reset of a session for a pooler), then
        the pool's set-up again (Django's time zone and role). psycopg forgets its
        prepared statements when it sees ``DISCARD ALL``."""
        if conn.closed or conn.broken:
            return
        try:
            if conn.pgconn.transaction_status != _IDLE:
                conn.rollback()
            autocommit = conn.autocommit
            conn.autocommit = True  # DISCARD ALL cannot run inside a transaction
            conn.execute("DISCARD ALL")
            conn._replpool_ro_session = False  # type: ignore[attr-defined]
            conn._replpool_lock_timeout = "0"  # type: ignore[attr-defined]
            conn._replpool_lock_timeout_s = None  # type: ignore[attr-defined]
            configure = getattr(pool, "_replpool_configure", None)
            if configure is not None:
                configure(conn)
            conn.autocommit = autocommit
        except Exception:
            conn.close()  # the pool replaces a closed connection

    def run(self, conn: psycopg.Connection[Any], query: Any, params: Any) -> list[Any]:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []

    def classify_failure(self, exc: BaseException) -> Failure:
        return classify_failure(exc)

    def is_retryable_read(self, exc: BaseException, conn: Any, on_replica: bool | None = None) -> bool:
        """A read that may run again elsewhere: its connection died (server gone, or
        cut by the monitor because the server hung), a standby cancelled it to apply
        the primary's changes (see :meth:`is_recovery_conflict`), or on a replica it
        gave up waiting for a lock that replay holds (:meth:`set_lock_timeout`)."""
        return (
            self.is_disconnect(exc, conn) or self.is_recovery_conflict(exc, conn, on_replica)
            or (on_replica is True and self.is_lock_timeout(exc))
        )

    def is_disconnect(self, exc: BaseException, conn: Any) -> bool:
        return isinstance(exc, psycopg.OperationalError) and bool(getattr(conn, "broken", False))

    def is_read_only_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)

    def is_recovery_conflict(
        self, exc: BaseException, conn: Any = None, on_replica: bool | None = None
    ) -> bool:
        """A standby cancelled the statement to replay the primary's changes: decided
        from the SQLSTATE and the member's role, never from the message (which the
        server translates, ``lc_messages``).

        PostgreSQL cancels such a statement with SQLSTATE 40001 (serialization_failure),
        or 40P01 (deadlock_detected) for a buffer pin deadlock with the startup process
        (``ProcessInterrupts`` in postgres.c, ``CheckRecoveryConflictDeadlock`` in
        standby.c). On a standby nothing else raises them (it runs no serializable
        transaction and takes no lock a read could deadlock on); on a primary they are
        the caller's own concurrency errors, which replpool never runs again. The role is
        what the server reports on the connection (``in_hot_standby``, sent to every
        client by PostgreSQL 14 and later, updated at promotion), else ``on_replica``
        (where replpool sent the statement)."""
        if getattr(exc, "sqlstate", None) not in _RECOVERY_CONFLICT_SQLSTATES:
            return False
        return _on_standby(conn, on_replica)
