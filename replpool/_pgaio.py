"""PostgreSQL for the asyncio front: psycopg's ``AsyncConnection`` through psycopg_pool's
``AsyncConnectionPool``. Only what does I/O on a connection is here; what does none
(naming members, checking an idle connection without a round trip, cutting one, telling
errors apart) is :class:`~replpool._pg.PostgresEngine`'s, shared with the thread front."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
import psycopg_pool
from psycopg import pq

from ._engine import MemberSpec
from ._pg import _CONNECT_ERRORS, PostgresEngine, lock_timeout_value, lock_timeout_was_set

_IDLE = pq.TransactionStatus.IDLE


class AsyncLifoConnectionPool(psycopg_pool.AsyncConnectionPool):  # type: ignore[type-arg]
    """psycopg_pool's asyncio pool, handing out the most recently returned idle
    connection (see :class:`replpool._pg.LifoConnectionPool`: on loopback a warm
    connection answers measurably faster), stamped with the time it entered the idle
    pool, as the thread pool's are."""

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        # Called with the pool's lock held, as the base class does.
        if self._pool and (timeout is None or timeout > 0):
            conn = self._pool.pop()
            if len(self._pool) < self._nconns_min:
                self._nconns_min = len(self._pool)
            return conn
        return await super()._get_ready_connection(timeout)

    async def _add_to_pool(self, conn: Any) -> None:
        # Every way into the idle pool (a return, a new connection, one that passed
        # check()): the connection worked just now (see PostgresEngine.alive).
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
        ro_sessions = self.engine._ro_sessions
        if not conn.autocommit:
            await conn.set_read_only(True if read_only else None)
        elif read_only:
            await conn.execute("SET default_transaction_read_only = on")
            ro_sessions.add(conn)
        else:
            await conn.execute("SET default_transaction_read_only = off")
            ro_sessions.discard(conn)

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
