"""The asyncio front behind the thread front's calls, so one test runs on both.

:class:`AsyncFront` wraps an :class:`replpool.AsyncCluster` and exposes the blocking
calls of :class:`replpool.Cluster` that the tests make (``query``, ``connection`` with a
DB-API cursor, ``raise_floor``, ``open``/``close``, the context manager; everything else,
such as ``status()``, is the cluster's own). The cluster lives on an event loop of its
own, running in a thread for the cluster's life, as in an asyncio application; each call
is a task on that loop, run in a copy of the caller's context (its explicit session and
consistency scope). Without an explicit session the caller thread's implicit session is
passed in as the task's, so the sessions a test sees are the ones it would see on the
thread front: the caller thread plays the part of the application's thread (whose tasks
share its implicit session). Calls from several threads run as concurrent tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any

import replpool
from replpool import _session


class AsyncFront:
    def __init__(self, cluster: replpool.AsyncCluster) -> None:
        self.cluster = cluster
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="async-front", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the cluster's loop as the calling thread would; its result."""
        ctx = contextvars.copy_context()
        if ctx.get(_session._current) is None:
            ctx.run(_session._current.set, _session.writing_session())
        return ctx.run(asyncio.run_coroutine_threadsafe, coro, self.loop).result(timeout=120)

    # -- Cluster's blocking calls ------------------------------------------------------------

    def open(self, wait: bool = True) -> AsyncFront:
        self.call(self.cluster.open(wait))
        return self

    def close(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.call(self.cluster.close(timeout))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> AsyncFront:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, *args: Any, **kwargs: Any) -> list[Any]:
        rows: list[Any] = self.call(self.cluster.query(*args, **kwargs))
        return rows

    def connection(self, *args: Any, **kwargs: Any) -> _Block:
        return _Block(self, self.cluster.connection(*args, **kwargs))

    def raise_floor(self, timeout: float | None = None) -> Any:
        return self.call(self.cluster.raise_floor(timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster, name)

    def __repr__(self) -> str:
        return repr(self.cluster)


class _Block:
    """``with front.connection(...) as conn``: the cluster's ``async with`` block."""

    def __init__(self, front: AsyncFront, checkout: Any) -> None:
        self.front = front
        self.checkout = checkout

    def __enter__(self) -> _Connection:
        return _Connection(self.front, self.front.call(self.checkout.__aenter__()))

    def __exit__(self, et: Any, exc: Any, tb: Any) -> None:
        self.front.call(self.checkout.__aexit__(et, exc, tb))


class _Connection:
    """An ``AsyncConnection`` seen through the DB-API calls the tests make."""

    def __init__(self, front: AsyncFront, conn: Any) -> None:
        self.front = front
        self.conn = conn

    def cursor(self) -> _Cursor:
        return _Cursor(self.front, self.conn.cursor())


class _Cursor:
    def __init__(self, front: AsyncFront, cursor: Any) -> None:
        self.front = front
        self.cursor = cursor

    @property
    def description(self) -> Any:
        return self.cursor.description

    def execute(self, sql: str, params: Any = None) -> None:
        self.front.call(self.cursor.execute(sql, params))

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self.front.call(self.cursor.fetchall())
        return rows

    def close(self) -> None:
        self.front.call(self.cursor.close())


def make(front: str, primary: str, replicas: list[str], **options: Any) -> Any:
    """A cluster on ``front`` (``"sync"``: a Cluster; ``"async"``: an AsyncCluster
    behind an :class:`AsyncFront`), not opened: open it with ``with``."""
    if front == "sync":
        return replpool.Cluster(primary, replicas, **options)
    return AsyncFront(replpool.AsyncCluster(primary, replicas, **options))
