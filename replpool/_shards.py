"""A shard set: several clusters, each a primary with its replicas, holding the rows of
one data set split by a shard key.

Everything goes through the clusters' own public API (``connection()``, ``query()``),
so routing to replicas, sessions and tokens work on each shard as on any cluster: a
session keeps one position per cluster *name*, so one token covers every shard it
wrote to, and a read on a shard waits only for that shard's writes.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from . import _session
from ._cluster import Cluster, _Checkout
from ._errors import ConfigurationError, Error
from ._shardmap import Placement, ShardIds, ShardMap
from ._status import ClusterStatus

T = TypeVar("T")


def in_callers_session(func: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``func(*args)``, ready to run in another thread as if in the calling one: in a
    copy of the caller's context (made now: its pins, consistency scope, explicit
    session), with the caller's session current, so that what the call observes is
    recorded there. Implicit sessions belong to threads, so the caller gets one now if it
    has none."""
    s = _session.writing_session()
    ctx = contextvars.copy_context()

    def run() -> T:
        # In the copy only, which is dropped after the call: nothing to reset.
        _session._current.set(s)
        return func(*args)

    return lambda: ctx.run(run)


class ShardRow(NamedTuple):
    """One row of a fan-out, and the name of the shard cluster it came from."""

    shard: str
    row: Any


class ShardError(Error):
    """A fan-out failed on some shards. ``errors`` maps each failed shard's name to its
    exception; ``results`` holds what the other shards returned (``{name: result}``)."""

    def __init__(
        self, message: str, errors: Mapping[str, BaseException], results: Mapping[str, Any]
    ) -> None:
        super().__init__(message, cluster=next(iter(errors), None))
        self.errors = dict(errors)
        self.results = dict(results)


class Misplaced(NamedTuple):
    """What :meth:`ShardSet.misplaced` found on one shard cluster: how many rows of the
    table it holds whose key belongs on another cluster, and a few of them as
    ``(key, logical shard, the cluster it belongs on)``."""

    shard: str
    rows: int
    examples: list[tuple[Any, int, str]]


def _quote(engine: str, name: str) -> str:
    """A table or column name (``schema.table`` allowed) quoted for the engine."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigurationError(f"not a table or column name: {name!r}")
    q = '"' if engine == "postgresql" else "`"
    return ".".join(q + part.replace(q, q + q) + q for part in name.split("."))


class ShardSet:
    """Clusters that share the rows of one data set by a shard key.

    :param clusters: the shard clusters (:class:`replpool.Cluster`), each with a name of
        its own (sessions and tokens know clusters by name): a list, or a mapping whose
        keys are their names.
    :param placement: a :class:`ShardMap`, or a placement (:class:`HashPlacement`,
        :class:`RangePlacement`, :class:`DirectoryPlacement`) whose logical shards are
        then spread over the clusters in contiguous blocks, in the order given.
    :param ids: the :class:`ShardIds` layout of ids that carry their logical shard, for
        :meth:`cluster_for_id` and :meth:`new_id` (None: ids carry no shard).
    :param fan_out_threads: threads running fan-outs (default: 4 per cluster). The
        calling thread runs one shard's part itself.

    Raises :class:`ConfigurationError` for clusters sharing a name, or a shard map
    naming a cluster that is not given (or leaving one out).
    """

    def __init__(
        self,
        clusters: Sequence[Cluster] | Mapping[str, Cluster],
        placement: ShardMap | Placement,
        *,
        ids: ShardIds | None = None,
        fan_out_threads: int | None = None,
    ) -> None:
        if isinstance(clusters, Mapping):
            for name, c in clusters.items():
                if not isinstance(c, Cluster):
                    raise ConfigurationError(f"ShardSet: {name!r} is not a replpool.Cluster: {c!r}")
                if c.name != name:
                    raise ConfigurationError(
                        f"ShardSet: the cluster given as {name!r} is named {c.name!r}; sessions and "
                        "tokens know clusters by their name, so use it as the key"
                    )
            listed = list(clusters.values())
        else:
            listed = list(clusters)
            for c in listed:
                if not isinstance(c, Cluster):
                    raise ConfigurationError(f"ShardSet: {c!r} is not a replpool.Cluster")
        if not listed:
            raise ConfigurationError("ShardSet: give at least one cluster")
        names = [c.name for c in listed]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(
                f"ShardSet: several clusters are named {', '.join(map(repr, dupes))}; sessions and "
                "tokens keep one position per cluster name, so give each shard cluster its own "
                "name (Cluster(..., name='shard1'))"
            )
        self._clusters: dict[str, Cluster] = {c.name: c for c in listed}
        if isinstance(placement, ShardMap):
            shard_map = placement
        else:
            shard_map = ShardMap(placement, names)
        self._check_map(shard_map)
        self._map = shard_map
        if ids is not None:
            if not isinstance(ids, ShardIds):
                raise ConfigurationError(f"ShardSet: ids must be a ShardIds layout, not {ids!r}")
            if shard_map.shards > ids.max_shards:
                raise ConfigurationError(
                    f"ShardSet: {shard_map.shards} logical shards do not fit in the ids' "
                    f"{ids.shard_bits} shard bits; raise ShardIds(shard_bits=...)"
                )
        self.ids = ids
        if fan_out_threads is None:
            fan_out_threads = 4 * len(listed)
        if isinstance(fan_out_threads, bool) or not isinstance(fan_out_threads, int) or fan_out_threads < 1:
            raise ConfigurationError(f"fan_out_threads must be a whole number >= 1, not {fan_out_threads!r}")
        self._threads = fan_out_threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _check_map(self, shard_map: ShardMap) -> None:
        unknown = [n for n in shard_map.clusters if n not in self._clusters]
        if unknown:
            raise ConfigurationError(
                f"ShardSet: the shard map names {', '.join(map(repr, unknown))}, which is not "
                f"among the clusters ({', '.join(map(repr, self._clusters))})"
            )
        left_out = [n for n in self._clusters if n not in shard_map.clusters]
        if left_out:
            raise ConfigurationError(
                f"ShardSet: the shard map leaves out {', '.join(map(repr, left_out))}; list every "
                "cluster in it (a cluster may hold no logical shard)"
            )

    # -- the map --------------------------------------------------------------------------

    @property
    def shard_map(self) -> ShardMap:
        return self._map

    @property
    def clusters(self) -> dict[str, Cluster]:
        """``{name: cluster}``, in order."""
        return dict(self._clusters)

    def use_map(self, shard_map: ShardMap) -> None:
        """Route by another map from now on (e.g. ``shard_map.moved(17, "db3")`` once the
        rows of logical shard 17 are copied to db3). It must place keys on the same
        logical shards: only their clusters may change."""
        if not isinstance(shard_map, ShardMap):
            raise ConfigurationError(f"use_map needs a ShardMap, not {shard_map!r}")
        if shard_map.placement != self._map.placement or shard_map.shards != self._map.shards:
            raise ConfigurationError(
                "use_map: the new map places keys differently (another placement); only the "
                "clusters of logical shards may change, or rows would be looked for in the "
                "wrong place"
            )
        self._check_map(shard_map)
        self._map = shard_map

    def logical_shard(self, key: Any) -> int:
        return self._map.placement.logical_shard(key)

    def cluster_for(self, key: Any) -> Cluster:
        """The cluster holding ``key``'s rows. Raises what the placement raises for a key
        it cannot place (TypeError, ValueError, :class:`ShardKeyError`)."""
        return self._clusters[self._map.cluster_of(key)]

    def cluster_for_shard(self, logical_shard: int) -> Cluster:
        return self._clusters[self._map.cluster_of_shard(logical_shard)]

    def cluster_for_id(self, id: int) -> Cluster:
        """The cluster holding the row with this id (ids made by :meth:`new_id` or the
        :class:`ShardIds` SQL function carry their logical shard)."""
        if self.ids is None:
            raise ConfigurationError(
                "this ShardSet's ids carry no shard: give it ShardSet(..., ids=ShardIds())"
            )
        return self.cluster_for_shard(self.ids.logical_shard(id))

    # -- life cycle -------------------------------------------------------------------------

    def open(self) -> ShardSet:
        """Open every cluster, concurrently (each waits for its first monitor round). If
        one fails to open, the others are closed again and its error is raised."""
        results, errors = self._run(lambda c: c.open(), list(self._clusters), share_session=False)
        if errors:
            self.close()
            raise next(iter(errors.values()))
        return self

    def close(self) -> None:
        for c in self._clusters.values():
            c.close()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def __enter__(self) -> ShardSet:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one shard --------------------------------------------------------------------------

    def connection(self, key: Any, read_only: bool = False, **kwargs: Any) -> _Checkout:
        """``cluster_for(key).connection(read_only=read_only, **kwargs)``: a pooled
        connection of the key's shard (its primary, or with ``read_only=True`` a replica
        that has this session's writes on that shard)."""
        return self.cluster_for(key).connection(read_only=read_only, **kwargs)

    def query(self, key: Any, query: Any, params: Any = None, **kwargs: Any) -> list[Any]:
        """``cluster_for(key).query(query, params, **kwargs)``: one statement on the
        key's shard; its rows."""
        return self.cluster_for(key).query(query, params, **kwargs)

    def new_id(self, key: Any = None, *, logical_shard: int | None = None, function: str = "replpool_shard_id") -> int:
        """A new id for a row of ``key`` (or of ``logical_shard``), made on that shard's
        primary by the :class:`ShardIds` function (see :meth:`install_ids`)."""
        if self.ids is None:
            raise ConfigurationError("this ShardSet has no ids layout: ShardSet(..., ids=ShardIds())")
        if (key is None) == (logical_shard is None):
            raise TypeError("new_id takes a key or a logical_shard=, one of the two")
        n = self.logical_shard(key) if logical_shard is None else logical_shard
        rows = self.cluster_for_shard(n).query(f"SELECT {function}(%s)", (n,))
        return int(rows[0][0])

    def install_ids(self, name: str = "replpool_shard_id", sequence: str = "replpool_shard_id_seq") -> None:
        """Create the id function of the ``ids`` layout on every shard's primary
        (PostgreSQL), concurrently."""
        if self.ids is None:
            raise ConfigurationError("this ShardSet has no ids layout: ShardSet(..., ids=ShardIds())")
        ddl = self.ids.postgresql_function(name, sequence)
        for name_, cluster in self._clusters.items():
            if cluster.engine_name != "postgresql":
                raise ConfigurationError(
                    f"install_ids: shard {name_!r} is {cluster.engine_name}; the id function is "
                    "PostgreSQL's (make ids with ShardIds.compose() elsewhere)",
                    cluster=name_,
                )

        def install(c: Cluster) -> None:
            with c.connection() as conn:
                conn.execute(ddl)

        self.each(install)

    # -- every shard --------------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="replpool-shards")
                executor = self._executor
        return executor

    def _run(
        self, func: Callable[[Cluster], T], names: list[str], *, share_session: bool = True
    ) -> tuple[dict[str, T], dict[str, Exception]]:
        """``func`` on the named clusters at once: the caller's thread runs the first,
        the pool the others, each as if in the caller's thread (see
        :func:`in_callers_session`; without ``share_session``, in a copy of its context)."""
        def prepared(c: Cluster) -> Callable[[], T]:
            if share_session:
                return in_callers_session(func, c)
            ctx = contextvars.copy_context()
            return lambda: ctx.run(func, c)

        futures: dict[str, Future[T]] = {}
        pool = self._pool() if len(names) > 1 else None
        for n in names[1:]:
            assert pool is not None
            futures[n] = pool.submit(prepared(self._clusters[n]))
        results: dict[str, T] = {}
        errors: dict[str, Exception] = {}
        if names:
            try:
                results[names[0]] = prepared(self._clusters[names[0]])()
            except Exception as exc:
                errors[names[0]] = exc
        for n, f in futures.items():
            try:
                results[n] = f.result()
            except Exception as exc:
                errors[n] = exc
        return results, errors

    def each(self, func: Callable[[Cluster], T], shards: Iterable[str] | None = None) -> dict[str, T]:
        """Run ``func(cluster)`` on every shard cluster (or the named ones) at once, and
        return ``{name: result}`` in the set's order.

        Each call runs in a copy of the caller's context, so it sees the caller's
        session, pins and consistency scope, and records its writes in the caller's
        session (one is made for the caller first if it has none). If some calls fail,
        the others still run to the end, then :class:`ShardError` names the failed
        shards, with the others' results."""
        names = list(self._clusters) if shards is None else list(dict.fromkeys(shards))
        for n in names:
            if n not in self._clusters:
                raise ConfigurationError(f"no shard cluster named {n!r} ({', '.join(self._clusters)})")
        results, errors = self._run(func, names)
        if errors:
            failed = "; ".join(f"{n!r}: {type(e).__name__}: {e}" for n, e in errors.items())
            raise ShardError(
                f"failed on {len(errors)} of {len(names)} shards ({failed}); "
                f"{len(results)} answered (their results are in .results)",
                errors, {n: results[n] for n in names if n in results},
            )
        return {n: results[n] for n in names}

    def fan_out(
        self, query: Any, params: Any = None, *, shards: Iterable[str] | None = None, **kwargs: Any
    ) -> list[ShardRow]:
        """Run one statement on every shard cluster (or the named ones) concurrently,
        each through ``cluster.query(query, params, **kwargs)``, and return every row
        with the name of its shard: shards in the set's order, each shard's rows in its
        order. Pass ``read_only=True`` for reads (replicas that have this session's
        writes on that shard). Raises :class:`ShardError` naming the shards that failed,
        after the others have finished."""
        per_shard = self.each(lambda c: c.query(query, params, **kwargs), shards)
        return [ShardRow(name, row) for name, rows in per_shard.items() for row in rows]

    # -- checking placement -------------------------------------------------------------------

    def misplaced(
        self, table: str, column: str, *, ids: bool = False, examples: int = 10
    ) -> dict[str, Misplaced]:
        """Rows of ``table`` stored on the wrong shard cluster, by the shard key in
        ``column`` (or, with ``ids=True``, by the logical shard the ids in ``column``
        carry): ``{cluster name: Misplaced}`` for every cluster, read on each primary,
        concurrently.

        The server computes each row's logical shard and sends back only the misplaced
        rows when it can: ids on any engine (bit operations), and keys on PostgreSQL
        under a :class:`HashPlacement` in a ``smallint``, ``integer``, ``bigint``,
        ``text``, ``varchar``, ``uuid`` or ``bytea`` column, with its own hash function
        (what ``PARTITION BY HASH`` uses). Otherwise (MariaDB/MySQL keys, range and
        directory placements, other column types) the keys are read and placed by
        replpool. Raises
        :class:`ShardError` if a shard fails (no such table...)."""
        from ._placement import postgresql_hash_type, postgresql_remainder_sql
        from ._session import pinned_to_master
        from ._shardmap import HashPlacement

        shard_map, layout = self._map, self.ids
        if ids and layout is None:
            raise ConfigurationError("misplaced(ids=True) needs ShardSet(..., ids=ShardIds())")

        def check(c: Cluster) -> Misplaced:
            engine = "postgresql" if c.engine_name == "postgresql" else "mysql"
            t, col = _quote(engine, table), _quote(engine, column)
            mine = list(shard_map.shards_of(c.name))
            with pinned_to_master():  # what the primary holds, not a replica's past
                expr = None
                if ids:
                    assert layout is not None
                    expr = f"(({col} >> {layout.sequence_bits}) & {layout.max_shards - 1})"
                elif engine == "postgresql" and isinstance(shard_map.placement, HashPlacement):
                    rows = c.query(
                        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                        "WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped",
                        (t, column), read_only=True,
                    )
                    if not rows:
                        raise ConfigurationError(f"{table} has no column {column!r}", cluster=c.name)
                    if postgresql_hash_type(rows[0][0]) is not None:
                        expr = postgresql_remainder_sql(col, rows[0][0], shard_map.shards)
                if expr is None:
                    return self._misplaced_by_reading(c, t, col, set(mine), examples)
                where = f"NOT ({expr} = ANY(%s))" if engine == "postgresql" else (
                    f"{expr} NOT IN ({', '.join(map(str, mine))})" if mine else "TRUE"
                )
                params: tuple[Any, ...] = (mine, max(1, examples)) if engine == "postgresql" else (max(1, examples),)
                rows = c.query(
                    f"SELECT {col}, {expr}, count(*) OVER () FROM {t} WHERE {where} LIMIT %s",
                    params, read_only=True,
                )
                found = [(k, int(n), shard_map.cluster_of_shard(int(n))) for k, n, _ in rows]
                return Misplaced(c.name, int(rows[0][2]) if rows else 0, found[:examples])

        return self.each(check)

    def _misplaced_by_reading(self, c: Cluster, table: str, column: str, mine: set[int], examples: int) -> Misplaced:
        shard_map = self._map
        count = 0
        found: list[tuple[Any, int, str]] = []
        with c.connection(read_only=True) as conn:
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT {column} FROM {table}")
                while True:
                    batch = cur.fetchmany(5000)
                    if not batch:
                        break
                    for (key,) in batch:
                        if isinstance(key, (bytearray, memoryview)):
                            key = bytes(key)
                        n = shard_map.logical_shard(key)
                        if n not in mine:
                            count += 1
                            if len(found) < examples:
                                found.append((key, n, shard_map.cluster_of_shard(n)))
            finally:
                cur.close()
        return Misplaced(c.name, count, found)

    # -- state ----------------------------------------------------------------------------------

    def status(self) -> dict[str, ClusterStatus]:
        return {name: c.status() for name, c in self._clusters.items()}

    def __repr__(self) -> str:
        return f"<replpool.ShardSet {self._map!r}>"

