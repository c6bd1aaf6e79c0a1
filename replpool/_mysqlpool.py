"""A connection pool for mysql-connector-python, shaped like psycopg_pool's.

Why not the driver's own pool or a library
------------------------------------------
replpool needs from each member's pool what psycopg_pool gives PostgreSQL: a checkout
that *waits* (up to a timeout) when every connection is busy, statistics for
``Cluster.status()`` and the metrics, ``min_size``/``max_size``, ``max_waiting``,
``max_lifetime``/``max_idle``, connections opened and replaced in the background (a caller
never pays for a connect, nor waits behind a dead server's connect timeout), a
``check()`` to weed out connections after a member comes back, and last-in first-out
reuse (a warm connection answers faster than one idle for long).

- ``mysql.connector.pooling`` raises at once when the pool is empty (no waiting), is
  capped at 32 connections, opens every connection up front, keeps no statistics, and
  resets the session with a round trip (plus the driver's re-initialisation, three more)
  on every return.
- DBUtils' ``PooledDB`` (well kept, small) can block, but without a timeout; it has no
  statistics, no lifetime or idle limits, opens connections in the caller's thread, and
  wraps each connection in a proxy, which would hide the socket replpool needs (below).
- SQLAlchemy's ``QueuePool`` (very well kept) has a timeout, LIFO and recycling, but no
  ``min_size`` warm-up, no ``max_waiting``, no idle limit, no wait statistics, no
  background connects, and is a large dependency to take for one class.

So this module builds the pool on the driver, following psycopg_pool's behaviour (its
statistics keys, its growth one connection at a time while requests wait, its
reconnection back-off, its ``PoolTimeout``), in about as much code as the adapters the
libraries above would have needed.

The connections
---------------
Every connection is a :class:`Connection`: mysql-connector's pure-Python
``MySQLConnection`` with a few additions. The pure implementation is used on purpose
(never the C extension): replpool needs the connection's socket, to check an idle
connection without a round trip and to cut a query stuck on a frozen server, and the
server status flags of every reply, to know for free whether a transaction is open,
whether autocommit is on, and whether the caller changed the session's state. The C
extension exposes none of this (and on Debian 12 it does not even load: its bundled
libssl needs OpenSSL 3.2). For the short statements of a web application the pure
driver's cost is small; ``benchmarks/overhead_mariadb.py`` measures it.

Session state is reset on return only when the caller changed it. Each connection asks
the server to track changes to its session (``CLIENT_SESSION_TRACK`` and
``session_track_state_change``); the server then flags every reply to a statement that
set a variable, a user variable, the schema, created a temporary table or prepared a
statement, at no cost. A connection returned with that flag (or with autocommit not as
set up: switching autocommit is not counted as a change, since Django switches it off
and on for every ``atomic()`` block) is reset (``COM_RESET_CONNECTION`` and the
connection's set-up again) by a background worker before anyone gets it again; the
others go straight back to the pool. A transaction left open is rolled back on return,
as psycopg_pool does.

Errors subclass psycopg_pool's (``PoolTimeout``, ``TooManyRequests``, ``PoolClosed``)
so that the cluster treats both pools alike.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg_pool
from mysql.connector import errors as mysql_errors
from mysql.connector.connection import MySQLConnection
from mysql.connector.constants import ClientFlag, ServerFlag

from ._episodes import Episodes

logger = logging.getLogger("replpool.pool")

_SESSION_STATE_CHANGED = 1 << 14  # ServerFlag.SERVER_SESSION_STATE_CHANGED

# psycopg_pool's reconnection back-off.
_INITIAL_DELAY = 1.0
_DELAY_JITTER = 0.1
_DELAY_BACKOFF = 2.0


class PoolTimeout(psycopg_pool.PoolTimeout):
    """No connection became free within the timeout."""


class TooManyRequests(psycopg_pool.TooManyRequests):
    """``max_waiting`` requests are already waiting."""


class PoolClosed(psycopg_pool.PoolClosed):
    """The pool is closed (or not open yet)."""


# -- the connection -----------------------------------------------------------------------


class Connection(MySQLConnection):
    """mysql-connector's pure-Python connection, plus what replpool reads from it.

    ``autocommit`` is answered from the last reply's status flags instead of asking the
    server (the driver's getter is a round trip), and ``closed`` tells whether the
    socket is gone. The read-only mode of a checkout is applied lazily: the session's
    access mode is switched, with ``SET SESSION TRANSACTION``, just before the next
    statement that needs the other mode, so a run of read-only (or read-write) checkouts
    on one connection pays nothing after the first.
    """

    _rp_status: int = 0
    _rp_dirty: bool = False  # the caller changed the session's state
    _rp_want_ro: bool = False  # the access mode the current checkout needs
    _rp_session_ro: bool = False  # the access mode the session has now
    _rp_lock_timeout: int | None = None  # lock_wait_timeout set for a replica's reads
    _rp_pool: MySQLPool | None = None
    _rp_created: float = 0.0
    _rp_expires: float = float("inf")
    _rp_returned: float = 0.0
    _rp_out_since: float = 0.0
    _rp_baseline: tuple[Any, ...] = ()
    _rp_base_autocommit: bool = False  # autocommit as set up: a checkout must leave it so
    # Set on monitor connections (see MySQLEngine.monitor_connect).
    _rp_member: str = ""
    _rp_show_status: bool = False
    _rp_epoch: str | None = None
    _rp_spec: Any = None  # the member's MemberSpec, to open another connection like it
    _rp_timeout: float = 1.0
    _rp_poller: tuple[int, Any] | None = None  # (fd, select.poll registered on it)
    _rp_pid: int = 0  # the process that opened it (see inherited())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._rp_pid = os.getpid()
        super().__init__(*args, **kwargs)

    # -- status flags -----------------------------------------------------------------------

    def _handle_server_status(self, flags: int) -> None:
        super()._handle_server_status(flags)
        self._rp_status = flags
        if flags & _SESSION_STATE_CHANGED:
            self._rp_dirty = True

    @property  # type: ignore[override]
    def autocommit(self) -> bool:
        """Whether autocommit is on, from the status flags of the last reply."""
        return bool(self._rp_status & ServerFlag.STATUS_AUTOCOMMIT)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        if bool(value) == self.autocommit:
            # No SET for nothing: it would cost a round trip, e.g. for code that sets it
            # on each use.
            self._autocommit = bool(value)
            return
        # The server flags the SET as a change of session state, but the pool checks
        # autocommit itself on return: switching it off and back on (what every
        # Django atomic() block does) must not cost the connection a reset.
        dirty = self._rp_dirty
        try:
            MySQLConnection.autocommit.fset(self, value)  # type: ignore[attr-defined]
        finally:
            self._rp_dirty = dirty

    def is_connected(self) -> bool:
        """Whether the connection works, without a round trip (see :func:`socket_ok`).

        The driver's own version pings the server, and ``cursor()`` calls it: every
        cursor would cost a round trip (and hang on a frozen server)."""
        return socket_ok(self)

    @property
    def closed(self) -> bool:
        """The socket is gone (closed by us or by the driver); a socket the server
        closed is found by :func:`socket_ok`."""
        sock = self._socket.sock if self._socket is not None else None
        return sock is None or sock.fileno() < 0

    # -- replpool's own statements ------------------------------------------------------

    def rp_execute(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement of replpool's own: it neither counts as a change of session
        state by the caller nor triggers the lazy access-mode switch."""
        dirty = self._rp_dirty
        try:
            result = MySQLConnection.cmd_query(self, statement)
            rows: list[tuple[Any, ...]] = []
            if "columns" in result:
                rows = list(self.get_rows()[0])  # type: ignore[arg-type]
            return rows
        finally:
            self._rp_dirty = dirty

    def rp_set_read_only(self, read_only: bool) -> None:
        self._rp_want_ro = read_only

    def _rp_switch(self) -> None:
        want = self._rp_want_ro
        self.rp_execute(
            "SET SESSION TRANSACTION READ ONLY" if want else "SET SESSION TRANSACTION READ WRITE"
        )
        self._rp_session_ro = want

    def cmd_query(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        if self._rp_want_ro is not self._rp_session_ro:
            self._rp_switch()
        return super().cmd_query(query, *args, **kwargs)

    def cmd_query_iter(self, statements: Any, *args: Any, **kwargs: Any) -> Any:
        if self._rp_want_ro is not self._rp_session_ro:
            self._rp_switch()
        return super().cmd_query_iter(statements, *args, **kwargs)

    def cmd_stmt_execute(self, *args: Any, **kwargs: Any) -> Any:
        if self._rp_want_ro is not self._rp_session_ro:
            self._rp_switch()
        return super().cmd_stmt_execute(*args, **kwargs)

    def __repr__(self) -> str:
        sock = self._socket.sock if self._socket is not None else None
        where = f"{self._host}:{self._port}" if sock is not None else "closed"
        return f"<replpool MySQL connection {where} at {id(self):#x}>"


def socket_ok(conn: Connection) -> bool:
    """Whether an idle connection still works, without a round trip: the server sends
    nothing unasked to a healthy idle connection, so anything to read (its end of the
    stream, or an error packet sent before it closed) means it is gone."""
    sock = conn._socket.sock if conn._socket is not None else None
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        cached = conn._rp_poller
        if cached is None or cached[0] != fd:
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            conn._rp_poller = cached = (fd, poller)
        # Any event is bad news: data, end of stream, error (POLLHUP/ERR are always on).
        return not cached[1].poll(0)
    except (OSError, ValueError):
        return False


def inherited(conn: Any) -> bool:
    """Whether ``conn`` was opened by another process, this one's parent before a fork
    (Django's parallel test runner forks its workers): its socket is shared with the
    parent, whose session a QUIT or a shutdown from here would end. Such a connection
    is only forgotten here (its file descriptor closed, which the parent's does not
    notice)."""
    pid = getattr(conn, "_rp_pid", 0)
    return bool(pid) and pid != os.getpid()


def _forget_socket(conn: Any) -> None:
    sock = getattr(getattr(conn, "_socket", None), "sock", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def shut_socket(conn: Any) -> None:
    """Shut a connection's socket down (both ways), so that whoever waits on it wakes
    up with a connection error. The socket object stays open: the driver's own
    ``shutdown()`` would also close it, racing with the thread that uses it. A
    connection inherited across a fork is left alone (see :func:`inherited`)."""
    try:
        sock = conn._socket.sock
    except AttributeError:
        return
    if sock is None or inherited(conn):
        return
    try:
        # socket.socket's method, not ssl.SSLSocket's, which drops the TLS state that a
        # reader blocked in another thread is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def close_quietly(conn: Any) -> None:
    """Close a connection: a polite QUIT if its socket still works, else just drop it;
    one inherited across a fork is only forgotten (see :func:`inherited`)."""
    if inherited(conn):
        _forget_socket(conn)
        return
    try:
        # QUIT first reads any unread result: not from a server that stopped answering.
        if isinstance(conn, Connection) and (conn.unread_result or not socket_ok(conn)):
            _drop_socket(conn)
        else:
            conn.close()
    except Exception:
        _drop_socket(conn)


def _drop_socket(conn: Any) -> None:
    # Not the driver's shutdown(): it skips close() when shutdown() fails, as it does on
    # a socket already shut down, and leaves the socket to the garbage collector.
    sock = getattr(getattr(conn, "_socket", None), "sock", None)
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass
    try:
        sock.close()
    except OSError:
        pass


def connection_kwargs(kwargs: Mapping[str, Any], *, track_state: bool) -> dict[str, Any]:
    """Driver arguments for a pool connection: unread results are consumed instead of
    raising, and (``track_state``) the server reports changes of session state."""
    out = dict(kwargs)
    out.pop("use_pure", None)
    out.setdefault("consume_results", True)
    # The driver waits forever for a server that accepts connections but never answers
    # (frozen): a background worker must come back.
    out.setdefault("connection_timeout", 10)
    if track_state:
        add_client_flag(out, ClientFlag.SESSION_TRACK)
    return out


def add_client_flag(kwargs: dict[str, Any], flag: int) -> None:
    """Add a capability to the driver's ``client_flags`` argument, in either of the
    forms it takes (an int replacing the defaults, or a list of changes to them)."""
    flags = kwargs.get("client_flags")
    if flags is None:
        kwargs["client_flags"] = [flag]
    elif isinstance(flags, int):
        kwargs["client_flags"] = flags | flag
    else:
        kwargs["client_flags"] = [*flags, flag]


# -- the background machinery ---------------------------------------------------------------


class _Scheduler:
    """Runs jobs on a few worker threads, now or after a delay. Jobs carry a tag so that
    a pending retry can be brought forward (``expedite``)."""

    def __init__(self, name: str, workers: int) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ready: deque[Callable[[], None]] = deque()
        self._timed: list[list[Any]] = []  # [when, seq, job, tag]
        self._seq = itertools.count()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def run(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False if the scheduler is stopping (the job will not run)."""
        with self._cond:
            if self._stopping:
                return False
            self._ready.append(job)
            self._cond.notify()
            return True

    def later(self, delay: float, job: Callable[[], None], tag: str = "") -> None:
        with self._cond:
            if not self._stopping:
                heapq.heappush(self._timed, [time.monotonic() + delay, next(self._seq), job, tag])
                self._cond.notify()

    def expedite(self, tag: str) -> None:
        with self._cond:
            now = time.monotonic()
            for entry in self._timed:
                if entry[3] == tag:
                    entry[0] = now
            heapq.heapify(self._timed)
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._timed and self._timed[0][0] <= now:
                        self._ready.append(heapq.heappop(self._timed)[2])
                    if self._ready:
                        # Even when stopping: a job may hold a connection to close.
                        job = self._ready.popleft()
                        break
                    if self._stopping:
                        return
                    wait = self._timed[0][0] - now if self._timed else None
                    self._cond.wait(wait)
            try:
                job()
            except Exception:  # a job reports its own errors; never lose a worker
                logger.exception("pool background job failed")

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._timed.clear()  # retries and maintenance: nothing left to do
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class _Waiter:
    __slots__ = ("event", "conn", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.conn: Connection | None = None
        self.error: BaseException | None = None


class _Attempt:
    """Reconnection attempts with exponential back-off, given up after ``timeout``."""

    def __init__(self, timeout: float) -> None:
        self.give_up_at = time.monotonic() + timeout
        self.delay = 0.0

    def next_delay(self) -> float | None:
        now = time.monotonic()
        if now >= self.give_up_at:
            return None
        if not self.delay:
            self.delay = _INITIAL_DELAY * (1 + _DELAY_JITTER * (2 * random.random() - 1))
        else:
            self.delay *= _DELAY_BACKOFF
        return min(self.delay, max(0.0, self.give_up_at - now))


# -- the pool ---------------------------------------------------------------------------------


_COUNTERS = (
    "requests_num", "requests_queued", "requests_wait_ms", "requests_errors", "usage_ms",
    "returns_bad", "connections_num", "connections_ms", "connections_errors",
    "connections_lost",
)


class MySQLPool:
    """A pool of :class:`Connection` to one server, with psycopg_pool's interface.

    :param conninfo: ``mysql.connector`` keyword arguments (host, port, user, password,
        database, ...). They hold the password: they are never shown.
    :param kwargs: more driver arguments, merged over ``conninfo`` (psycopg_pool's
        name), e.g. ``{"autocommit": True}``.
    :param min_size: connections kept open (opened in the background at ``open()``).
    :param max_size: connections at most (default: ``min_size``).
    :param name: shown in logs and thread names.
    :param timeout: seconds ``getconn()`` waits by default (30).
    :param max_waiting: requests allowed to wait at once; more raise
        :class:`TooManyRequests` (0: no limit).
    :param max_lifetime: seconds a connection is used before it is replaced (each gets
        up to 5% less, so they do not all expire at once) (3600).
    :param max_idle: seconds an idle connection beyond ``min_size`` is kept (600).
    :param reconnect_timeout: seconds to keep trying to open a connection before giving
        up on it (300); ``reconnect_failed(pool)`` is then called.
    :param configure: ``configure(conn)``, called on every new connection (and after a
        session reset) before it is used; it must leave no transaction open.
    :param reset: ``reset(conn)``, called on every returned connection, in the thread
        that returns it.
    :param num_workers: background threads that open, reset and close connections (2).
    :param open: open the pool at once (default False, as replpool opens it itself).
    """

    def __init__(
        self,
        conninfo: Mapping[str, Any],
        *,
        kwargs: Mapping[str, Any] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        name: str | None = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        reconnect_timeout: float = 300.0,
        reconnect_failed: Callable[[MySQLPool], None] | None = None,
        configure: Callable[[Connection], None] | None = None,
        reset: Callable[[Connection], None] | None = None,
        num_workers: int = 2,
        open: bool = False,
    ) -> None:
        if max_size is None:
            max_size = min_size
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, not {min_size}, {max_size}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, not {num_workers}")
        self.name = name or f"pool-{next(_pool_numbers)}"
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self.max_waiting = max_waiting
        self.max_lifetime = float(max_lifetime)
        self.max_idle = float(max_idle)
        self.reconnect_timeout = float(reconnect_timeout)
        self._reconnect_failed = reconnect_failed
        self._configure = configure
        self._reset = reset
        self._num_workers = num_workers
        self._track_state = True  # turned off if the server cannot track session state
        self._kwargs = connection_kwargs({**conninfo, **(kwargs or {})}, track_state=True)

        self._lock = threading.Lock()
        # Failing to connect lasts while the server is away: said when it starts and
        # when a connection succeeds again, not at every attempt.
        self._episodes: Episodes[str] = Episodes()
        self._idle: list[Connection] = []  # a stack: the most recently returned on top
        self._waiting: deque[_Waiter] = deque()
        self._nconns = 0  # open, or being opened
        self._nopen = 0  # open
        self._growing = False
        self._opened = False
        self._closed = True
        self._ready = threading.Condition(self._lock)  # a connection joined the pool
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._sched: _Scheduler | None = None
        if open:
            self.open()

    def __repr__(self) -> str:
        state = "open" if not self._closed else "closed"
        return f"<replpool MySQLPool {self.name!r} {state} size={self._nconns} idle={len(self._idle)}>"

    # -- life cycle ------------------------------------------------------------------------

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start the background workers and open ``min_size`` connections. With
        ``wait``, return once they are open, or close the pool and raise
        :class:`PoolTimeout` after ``timeout`` seconds."""
        with self._lock:
            if self._opened and self._closed:
                raise PoolClosed(f"the pool {self.name!r} was closed; make a new one")
            if not self._opened:
                self._opened = True
                self._closed = False
                self._sched = _Scheduler(f"replpool-pool-{self.name}", self._num_workers)
                self._nconns += self.min_size
                for _ in range(self.min_size):
                    self._sched.run(lambda: self._add_connection(None, growing=False))
                self._schedule_maintenance()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are open (see :meth:`open`)."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._nopen < self.min_size:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._ready.wait(left)
            ready = self._nopen >= self.min_size
        if not ready:
            self.close()
            raise PoolTimeout(
                f"the pool {self.name!r} could not open {self.min_size} connection(s) "
                f"within {timeout:g} s"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Close the idle connections, fail the waiting requests, stop the workers.
        Connections in use are closed when they are returned."""
        with self._lock:
            if self._closed:
                self._opened = True
                return
            self._closed = True
            self._opened = True
            idle, self._idle = self._idle, []
            self._nconns -= len(idle)
            self._nopen -= len(idle)
            waiting, self._waiting = self._waiting, deque()
            sched, self._sched = self._sched, None
            self._ready.notify_all()
        for w in waiting:
            w.error = PoolClosed(f"the pool {self.name!r} was closed while waiting")
            w.event.set()
        if sched is not None:
            sched.stop(timeout)
        for conn in idle:
            close_quietly(conn)

    def __enter__(self) -> MySQLPool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- checkouts ----------------------------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> Connection:
        """A connection, waiting up to ``timeout`` seconds (default: the pool's) for one
        to be free. Give it back with :meth:`putconn`."""
        start = time.monotonic()
        with self._lock:
            if self._closed:
                raise PoolClosed(f"the pool {self.name!r} is {'closed' if self._opened else 'not open yet'}")
            self._stats["requests_num"] += 1
            if self._idle:
                conn = self._idle.pop()
                conn._rp_out_since = start
                return conn
            if self.max_waiting and len(self._waiting) >= self.max_waiting:
                self._stats["requests_errors"] += 1
                raise TooManyRequests(
                    f"the pool {self.name!r} already has {len(self._waiting)} requests waiting"
                )
            waiter = _Waiter()
            self._waiting.append(waiter)
            self._stats["requests_queued"] += 1
            self._grow_locked()
        if timeout is None:
            timeout = self.timeout
        waiter.event.wait(max(0.0, timeout))
        with self._lock:
            if waiter.conn is None and waiter.error is None:
                try:
                    self._waiting.remove(waiter)
                except ValueError:
                    pass
            waited = time.monotonic() - start
            self._stats["requests_wait_ms"] += int(1000 * waited)
            if waiter.conn is None:
                self._stats["requests_errors"] += 1
        if waiter.conn is not None:
            waiter.conn._rp_out_since = time.monotonic()
            return waiter.conn
        if waiter.error is not None:
            raise waiter.error
        raise PoolTimeout(f"couldn't get a connection from {self.name!r} after {timeout:g} s")

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A connection for a ``with`` block: committed on success, rolled back on an
        error, returned either way."""
        conn = self.getconn(timeout)
        try:
            yield conn
        except BaseException:
            if conn.in_transaction and socket_ok(conn):
                try:
                    conn.rollback()
                except Exception:
                    pass
            raise
        else:
            if conn.in_transaction:
                conn.commit()
        finally:
            self.putconn(conn)

    def putconn(self, conn: Connection) -> None:
        """Give a connection back. A transaction left open is rolled back; a broken or
        expired connection is closed and replaced in the background; a connection
        whose session the caller changed is reset in the background first."""
        if conn._rp_pool is not self:
            raise ValueError(f"{conn!r} does not belong to the pool {self.name!r}")
        now = time.monotonic()
        with self._lock:
            self._stats["usage_ms"] += int(1000 * (now - conn._rp_out_since))
        if self._closed:
            self._discard(conn)
            return
        if not conn.closed and socket_ok(conn):
            try:
                if conn.unread_result:
                    conn.consume_results()
                if conn.in_transaction:
                    logger.info("pool %r: rolling back a connection returned in a transaction", self.name)
                    conn.rp_execute("ROLLBACK")
                if self._reset is not None:
                    self._reset(conn)
                    if conn.in_transaction:
                        raise mysql_errors.ProgrammingError("reset() left a transaction open")
            except Exception as exc:
                logger.warning("pool %r: discarding a returned connection: %s", self.name, exc)
                self._bad_return(conn)
                return
        else:
            self._bad_return(conn)
            return
        if now >= conn._rp_expires:
            self._discard(conn)
            return
        if conn._rp_dirty or conn.autocommit != conn._rp_base_autocommit:
            sched = self._sched
            if sched is None or not sched.run(lambda: self._reset_session(conn)):
                self._discard(conn)  # closing
            return
        self._return(conn)

    def _bad_return(self, conn: Connection) -> None:
        with self._lock:
            self._stats["returns_bad"] += 1
        self._discard(conn)
        self._purge_dead()

    def _purge_dead(self) -> None:
        """One connection found dead usually means the server went away, taking the
        idle ones with it: drop those too (it costs a poll() each), rather than let the
        next requests find them one by one after the server is back."""
        with self._lock:
            dead = [c for c in self._idle if not socket_ok(c)]
            if dead:
                gone = {id(c) for c in dead}
                self._idle = [c for c in self._idle if id(c) not in gone]
                self._stats["connections_lost"] += len(dead)
        for conn in dead:
            self._discard(conn)

    # -- inside the pool -------------------------------------------------------------------------

    def _return(self, conn: Connection) -> None:
        """Hand a ready connection to the first waiting request, or make it idle."""
        conn._rp_returned = time.monotonic()
        with self._lock:
            if not self._closed:
                if self._waiting:
                    w = self._waiting.popleft()
                    w.conn = conn
                    w.event.set()
                else:
                    self._idle.append(conn)
                    self._ready.notify_all()
                return
        self._discard(conn)

    def _discard(self, conn: Connection) -> None:
        """Close a connection that leaves the pool, and open another if needed."""
        with self._lock:
            self._nconns -= 1
            self._nopen -= 1
            self._maybe_add_locked()
        close_quietly(conn)  # a QUIT packet and close(): nothing to wait for

    def _maybe_add_locked(self) -> None:
        if self._closed or self._sched is None:
            return
        if self._nconns < self.min_size:
            self._nconns += 1
            self._sched.run(lambda: self._add_connection(None, growing=False))
        elif self._waiting:
            self._grow_locked()

    def _grow_locked(self) -> None:
        """psycopg_pool's growth: while requests wait, open one more connection at a
        time, up to ``max_size``."""
        if not self._growing and self._nconns < self.max_size and self._sched is not None:
            self._growing = True
            self._nconns += 1
            self._sched.run(lambda: self._add_connection(None, growing=True))

    def _add_connection(self, attempt: _Attempt | None, growing: bool) -> None:
        if self._closed:
            self._abandon_attempt(growing)
            return
        try:
            conn = self._connect()
        except Exception as exc:
            with self._lock:
                self._stats["connections_errors"] += 1
            attempt = attempt or _Attempt(self.reconnect_timeout)
            delay = attempt.next_delay()
            with self._lock:
                started = self._episodes.begin("connect", time.monotonic())
            if started:
                logger.warning(
                    "pool %r: could not connect: %s (retrying; said again when it connects)",
                    self.name, _describe(exc),
                )
            else:
                logger.debug("pool %r: could not connect again: %s", self.name, _describe(exc))
            if delay is None or self._sched is None:
                self._abandon_attempt(growing)
                if delay is None:
                    logger.warning(
                        "pool %r: gave up connecting after %g s", self.name, self.reconnect_timeout
                    )
                    if self._reconnect_failed is not None:
                        self._reconnect_failed(self)
                return
            self._sched.later(delay, lambda: self._add_connection(attempt, growing), tag="connect")
            return
        if self._closed:
            close_quietly(conn)
            self._abandon_attempt(growing)
            return
        now = time.monotonic()
        with self._lock:
            ended = self._episodes.end("connect", now)
        if ended is not None:
            logger.info("pool %r: connected again %s", self.name, ended.summary(now, "failed attempts"))
        self._return(conn)
        if growing:
            with self._lock:
                self._growing = False
                if self._waiting:
                    self._grow_locked()

    def _abandon_attempt(self, growing: bool) -> None:
        with self._lock:
            self._nconns -= 1
            if growing:
                self._growing = False

    def _connect(self) -> Connection:
        start = time.monotonic()
        conn = Connection(**self._kwargs)
        try:
            self._setup(conn)
        except BaseException:
            close_quietly(conn)
            raise
        now = time.monotonic()
        with self._lock:
            self._nopen += 1
            self._stats["connections_num"] += 1
            self._stats["connections_ms"] += int(1000 * (now - start))
        conn._rp_pool = self
        conn._rp_created = now
        conn._rp_expires = now + self.max_lifetime * (1 - 0.05 * random.random())
        return conn

    def _setup(self, conn: Connection) -> None:
        """What every connection gets before use, when opened and after a reset."""
        if self._track_state:
            try:
                conn.rp_execute("SET SESSION session_track_state_change = 1")
            except mysql_errors.DatabaseError as exc:
                self._track_state = False
                logger.info(
                    "pool %r: the server cannot track session state (%s): sessions are "
                    "not reset on return; use the pool's reset= to do it", self.name, exc,
                )
        if self._configure is not None:
            self._configure(conn)
            if conn.in_transaction:
                raise mysql_errors.ProgrammingError(
                    "configure() left a transaction open: commit or roll it back"
                )
        conn._rp_dirty = False
        conn._rp_want_ro = conn._rp_session_ro = False
        # What the driver re-applies after a reset, as configured (a caller may have
        # changed them through the connection's properties).
        conn._rp_baseline = (conn._autocommit, conn._sql_mode, conn._time_zone, conn._database)
        conn._rp_base_autocommit = conn.autocommit

    def _reset_session(self, conn: Connection) -> None:
        """Background: give a connection whose session the caller changed its initial
        state back (``COM_RESET_CONNECTION`` drops variables, temporary tables, prepared
        statements and user locks), then return it to the pool."""
        if self._closed:
            self._discard(conn)
            return
        try:
            autocommit, sql_mode, time_zone, database = conn._rp_baseline
            conn._autocommit, conn._sql_mode, conn._time_zone = autocommit, sql_mode, time_zone
            conn._rp_want_ro = conn._rp_session_ro = False  # the reset makes it read-write
            conn._rp_lock_timeout = None  # and gives lock_wait_timeout its default back
            if not conn.cmd_reset_connection():
                raise mysql_errors.OperationalError("the server refused COM_RESET_CONNECTION")
            if database:
                conn.cmd_init_db(database)  # the reset keeps the current schema
            self._setup(conn)
        except Exception as exc:
            logger.info("pool %r: could not reset a connection (%s); replacing it", self.name, exc)
            self._discard(conn)
            return
        self._return(conn)

    # -- maintenance -----------------------------------------------------------------------------

    def _maintenance_period(self) -> float:
        return max(0.05, min(5.0, self.max_idle / 4, self.max_lifetime / 4))

    def _schedule_maintenance(self) -> None:
        if self._sched is not None:
            self._sched.later(self._maintenance_period(), self._maintain)

    def _maintain(self) -> None:
        """Replace expired idle connections; close those idle longer than ``max_idle``
        beyond ``min_size`` (the bottom of the stack has been idle longest)."""
        now = time.monotonic()
        gone: list[Connection] = []
        with self._lock:
            if self._closed:
                return
            keep = []
            for conn in self._idle:
                if now >= conn._rp_expires:
                    gone.append(conn)
                else:
                    keep.append(conn)
            self._idle = keep
            surplus = self._nconns - len(gone) - self.min_size
            while surplus > 0 and self._idle and now - self._idle[0]._rp_returned > self.max_idle:
                gone.append(self._idle.pop(0))
                surplus -= 1
        for conn in gone:
            self._discard(conn)
        self._schedule_maintenance()

    def check(self) -> None:
        """Check every idle connection (socket, then a ping) and replace the broken
        ones; retry at once a connection attempt that was backing off. replpool calls
        it when a member answers again after being down."""
        with self._lock:
            if self._closed:
                return
            idle, self._idle = self._idle, []
        good: list[Connection] = []
        for conn in idle:
            ok = socket_ok(conn)
            if ok:
                saved = conn._read_timeout
                try:
                    conn._read_timeout = min(5, max(1, int(self.timeout)))
                    conn.cmd_ping()
                except Exception:
                    ok = False
                finally:
                    conn._read_timeout = saved
            if ok:
                good.append(conn)
            else:
                with self._lock:
                    self._stats["connections_lost"] += 1
                self._discard(conn)
        for conn in reversed(good):
            self._return(conn)
        if self._sched is not None:
            self._sched.expedite("connect")

    # -- statistics ---------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's statistics: the pool now (``pool_*``, ``requests_waiting``),
        and the counters since the last :meth:`pop_stats` that are not zero."""
        with self._lock:
            return self._stats_locked()

    def pop_stats(self) -> dict[str, int]:
        """:meth:`get_stats`, resetting the counters."""
        with self._lock:
            out = self._stats_locked()
            self._stats = dict.fromkeys(_COUNTERS, 0)
        return out

    def _stats_locked(self) -> dict[str, int]:
        out = {
            "pool_min": self.min_size,
            "pool_max": self.max_size,
            "pool_size": self._nconns,
            "pool_available": len(self._idle),
            "requests_waiting": len(self._waiting),
        }
        out.update({k: v for k, v in self._stats.items() if v})
        return out


_pool_numbers = itertools.count(1)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()
