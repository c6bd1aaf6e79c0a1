"""PostgreSQL for the asyncio front: psycopg's ``AsyncConnection`` through psycopg_pool's
``AsyncConnectionPool``. Only what does I/O on a connection is here; what does none
(naming members, checking an idle connection without a round trip, cutting one, telling
errors apart) is :class:`~replpool._pg.PostgresEngine`'s, shared with the thread front."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg import pq
from psycopg_pool import pool_async as _pool_async

from ._engine import MemberSpec
from ._pg import (
    _CONNECT_ERRORS,
    FAST_PATH,
    PostgresEngine,
    clean_return_time,
    lock_timeout_value,
    lock_timeout_was_set,
)

_IDLE = pq.TransactionStatus.IDLE
# What psycopg_pool's asyncio pool catches around a client's wait (its CLIENT_EXCEPTIONS).
_CLIENT_EXCEPTIONS = (Exception, asyncio.CancelledError)
# The two classes of psycopg_pool's the short path uses (3.2 and 3.3 have them); should a
# later version lack them, no short path rather than no import.
_WaitingClient: Any = getattr(_pool_async, "WaitingClient", object)
_ReturnConnection: Any = getattr(_pool_async, "ReturnConnection", None)
_FAST_PATH = FAST_PATH and _WaitingClient is not object and _ReturnConnection is not None


class AsyncLifoConnectionPool(psycopg_pool.AsyncConnectionPool):  # type: ignore[type-arg]
    """psycopg_pool's asyncio pool, handing out the most recently returned idle
    connection (see :class:`replpool._pg.LifoConnectionPool`: on loopback a warm
    connection answers measurably faster), stamped with the time it entered the idle
    pool, as the thread pool's are, with a short path for the common checkout.

    The short path, as the thread pool's: ``getconn`` takes an idle connection or, with
    none idle, queues for one, and ``putconn`` puts a clean connection (idle, not
    expired, not drained, no ``reset`` callback) back or hands it to the first client
    waiting, doing what psycopg_pool does in those cases and skipping its logging and
    coroutine layers. A client queued by the short path waits on a future with a timer,
    not on psycopg_pool's condition through ``asyncio.wait_for`` (a task per wait). The
    short path runs only while no one holds the pool's lock: code between two awaits
    runs whole on the loop, so it is one critical section as psycopg_pool's are. Every
    other case (a ``check`` callback, a connection to roll back, replace or close, a
    closed pool, the lock held, a client of psycopg_pool's own path first in the queue)
    goes through psycopg_pool's own code. Enabled on the psycopg_pool versions the
    thread pool's short path was checked against (:data:`replpool._pg.FAST_PATH`); the
    test suite pins each behaviour it must keep, with and without it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_get = _FAST_PATH and self._check is None
        self._fast_put = _FAST_PATH and self._reset is None

    def take_idle(self) -> Any:
        """The idle connection returned last, taken without awaiting anything, or None
        when the short path cannot take one (none idle, or psycopg_pool's own path
        needed): then ``getconn``."""
        if self._fast_get and self._pool and not self._closed and not self._open_implicit and not self._lock.locked():
            idle = self._pool
            conn = idle.pop()
            if len(idle) < self._nconns_min:
                self._nconns_min = len(idle)
            self._stats[self._REQUESTS_NUM] += 1
            conn._pool = self
            return conn
        return None

    async def getconn(self, timeout: float | None = None) -> Any:
        conn = self.take_idle()
        if conn is not None:
            return conn
        if self._fast_get and not self._closed and not self._open_implicit and not self._lock.locked():
            # None idle: queue, as psycopg_pool does (nothing awaited until queued).
            if timeout is None:
                timeout = self.timeout
            if timeout > 0 and not self._pool and not (self.max_waiting and len(self._waiting) >= self.max_waiting):
                self._stats[self._REQUESTS_NUM] += 1
                t0 = time.monotonic()
                pos = _Waiter()
                self._waiting.append(pos)
                self._stats[self._REQUESTS_QUEUED] += 1
                self._maybe_grow_pool()
                try:
                    conn = await pos.wait(timeout)
                except _CLIENT_EXCEPTIONS:
                    if pos.conn is not None:  # given, but too late: back to the pool
                        self.run_task(_ReturnConnection(self, pos.conn, from_getconn=True))
                    self._stats[self._REQUESTS_ERRORS] += 1
                    raise
                finally:
                    self._stats[self._REQUESTS_WAIT_MS] += int(1000.0 * (time.monotonic() - t0))
                conn._pool = self
                return conn
        return await super().getconn(timeout)

    def put_idle(self, conn: Any) -> bool:
        """Return ``conn`` without awaiting anything, to the first client waiting or to
        the idle pool; False when the short path cannot (then ``putconn``)."""
        if (
            self._fast_put
            and (now := clean_return_time(self, conn))
            and not self._closed
            and self._pool_full_event is None
            and not self._lock.locked()
        ):
            waiting = self._waiting
            while waiting and type(waiting[0]) is _Waiter:
                conn._pool = None
                conn._replpool_returned = now
                if waiting.popleft().give(conn):  # type: ignore[attr-defined]  # a _Waiter, checked above
                    return True
            if not waiting:
                conn._pool = None
                conn._replpool_returned = now
                self._pool.append(conn)
                return True
            conn._pool = self  # a client of psycopg_pool's own path is first
        return False

    async def putconn(self, conn: Any) -> None:
        if not self.put_idle(conn):
            await super().putconn(conn)

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        # Called with the pool's lock held, as the base class does.
        if self._pool and (timeout is None or timeout > 0):
            conn = self._pool.pop()
            if len(self._pool) < self._nconns_min:
                self._nconns_min = len(self._pool)
            return conn
        return await super()._get_ready_connection(timeout)

    async def _add_to_pool(self, conn: Any) -> None:
        # Every other way into the idle pool (psycopg_pool's return, a new connection,
        # one that passed check()): the connection worked just now (see
        # PostgresEngine.alive).
        conn._replpool_returned = time.monotonic()
        await super()._add_to_pool(conn)

    def get_stats(self) -> dict[str, int]:
        stats = super().get_stats()
        # As the thread pool's: only the clients still waiting. Called from the
        # monitor's thread too, so it reads a copy of the queue, without the lock.
        stats["requests_waiting"] = sum(
            1 for w in list(self._waiting) if w.conn is None and w.error is None
        )
        return stats


class _Waiter(_WaitingClient):  # type: ignore[misc]
    """A client queued by the short path of :class:`AsyncLifoConnectionPool`: what
    psycopg_pool's ``WaitingClient`` does (the pool calls its ``set`` and ``fail``), on
    a future and a timer. It takes the first of a connection, an error, its timeout or
    its cancellation; one given after that is refused (``set`` returns False) and the
    giver passes it on."""

    def __init__(self) -> None:  # not the base's: no condition to make
        self.conn: Any = None
        self.error: BaseException | None = None
        self._future: asyncio.Future[None] | None = None

    async def wait(self, timeout: float) -> Any:
        if self.conn is None and self.error is None:
            loop = asyncio.get_running_loop()
            future = self._future = loop.create_future()
            timer = loop.call_later(timeout, self._expire, timeout)
            try:
                await future
            except _CLIENT_EXCEPTIONS as exc:
                self.error = exc  # a connection given meanwhile: the caller returns it
                raise
            finally:
                timer.cancel()
        if self.error is not None:
            raise self.error
        return self.conn

    def _expire(self, timeout: float) -> None:
        if self.conn is None and self.error is None:
            self.error = psycopg_pool.PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec")
            self._wake()

    def _wake(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def give(self, conn: Any) -> bool:
        """``set``, without a coroutine."""
        if self.conn is not None or self.error is not None:
            return False
        self.conn = conn
        self._wake()
        return True

    async def set(self, conn: Any) -> bool:
        return self.give(conn)

    async def fail(self, error: Exception) -> bool:
        if self.conn is not None or self.error is not None:
            return False
        self.error = error
        self._wake()
        return True


class AsyncPostgres:
    """The asyncio connection operations of the PostgreSQL engine ``engine``."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine

    def make_pool(
        self,
        spec: MemberSpec,
        *,
        cluster: str,
        min_size: int,
        max_size: int,
        options: Mapping[str, Any],
        connect_timeout: float,
    ) -> AsyncLifoConnectionPool:
        """The pool of one member. ``options`` are ``AsyncConnectionPool`` arguments: a
        ``configure``, ``check`` or ``reset`` callback there is an ``async`` function."""
        opts = dict(options)
        kwargs = dict(opts.pop("kwargs", None) or {})
        if "connect_timeout" not in spec.params:
            kwargs.setdefault("connect_timeout", max(2, int(round(connect_timeout))))
        user_configure: Callable[[Any], Awaitable[None]] | None = opts.pop("configure", None)
        name = f"{cluster}/{spec.name}"
        _CONNECT_ERRORS.pools.add(name)
        engine = self.engine

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            _CONNECT_ERRORS.connected(name)
            engine._watch_farewell(conn)  # type: ignore[arg-type]
            if user_configure is not None:
                await user_configure(conn)

        return AsyncLifoConnectionPool(
            spec.conninfo,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            configure=configure,
            **opts,
        )

    def exit(self, conn: psycopg.AsyncConnection[Any], exc: BaseException | None) -> Awaitable[None]:
        """End the block's transaction as psycopg does (commit, or roll back on an
        error): psycopg's own coroutine, for the caller to await (one coroutine less
        between the task and the round trip, which every resumption passes through).
        The caller asks ``PostgresEngine.in_transaction`` first: outside a transaction
        there is nothing to end (see ``PostgresEngine.exit``)."""
        if exc is None:
            return conn.__aexit__(None, None, None)
        return conn.__aexit__(type(exc), exc, exc.__traceback__)

    async def set_read_only(self, conn: psycopg.AsyncConnection[Any], read_only: bool) -> None:
        """``PostgresEngine.set_read_only``, on an asyncio connection. The caller asks
        ``PostgresEngine.needs_read_only`` first (a coroutine costs even when it has
        nothing to do)."""
        if not conn.autocommit:
            await conn.set_read_only(True if read_only else None)
        elif read_only:
            await conn.execute("SET default_transaction_read_only = on")
            conn._replpool_ro_session = True  # type: ignore[attr-defined]
        else:
            await conn.execute("SET default_transaction_read_only = off")
            conn._replpool_ro_session = False  # type: ignore[attr-defined]

    async def set_lock_timeout(self, conn: psycopg.AsyncConnection[Any], seconds: float | None) -> None:
        """``PostgresEngine.set_lock_timeout``, on an asyncio connection; the caller asks
        ``PostgresEngine.needs_lock_timeout`` first."""
        value = lock_timeout_value(seconds)
        idle = conn.pgconn.transaction_status == _IDLE
        await conn.execute("SELECT set_config('lock_timeout', %s, false)", (value,))
        if idle and conn.pgconn.transaction_status != _IDLE:
            await conn.commit()  # not autocommit: keep it, end the transaction it opened
        lock_timeout_was_set(conn, seconds, value)

    async def run(self, conn: psycopg.AsyncConnection[Any], query: Any, params: Any) -> list[Any]:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description is not None else []
