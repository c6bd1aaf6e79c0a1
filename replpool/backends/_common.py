"""What the replpool Django engines share: the cluster behind each alias, built from
``DATABASES`` settings, and the wrapper methods that route through it."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.models.signals import post_migrate

from .. import _session
from .._cluster import Cluster
from .._engine import engine_for
from .._errors import ConfigurationError, Error
from ..django._routed import RoutedConnection, RoutingCursor

# OPTIONS keys that belong to replpool, not to the driver.
CLUSTER_OPTIONS = (
    "max_replica_lag", "max_replica_lag_bytes", "monitor_interval", "monitor_idle_interval",
    "monitor_demand_interval", "causal_wait", "replica_selection", "replica_lock_timeout",
    "failover_wait", "probe_timeout", "connect_timeout",
)
REPLPOOL_OPTIONS = ("replicas", "pool", *CLUSTER_OPTIONS)
# What a replica entry may set; everything else is the primary's (a physical replica
# serves the same databases, so NAME is the primary's, test databases included).
REPLICA_KEYS = ("HOST", "PORT", "USER", "PASSWORD", "OPTIONS")


def replica_settings(alias: str, settings_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each replica's settings: its own keys over the primary's."""
    entries = settings_dict.get("OPTIONS", {}).get("replicas", [])
    if not isinstance(entries, (list, tuple)):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['replicas'] must be a list of dicts such as "
            f"{{'HOST': 'db2'}}, not {type(entries).__name__}"
        )
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['replicas'][{i}] must be a dict such as "
                f"{{'HOST': 'db2', 'PORT': '5432'}}, not {entry!r}"
            )
        unknown = sorted(set(entry) - set(REPLICA_KEYS))
        if unknown:
            hint = (
                " (a replica serves the primary's databases; NAME is always the primary's)"
                if "NAME" in unknown else ""
            )
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['replicas'][{i}] sets {', '.join(unknown)}, "
                f"but a replica may only set {', '.join(REPLICA_KEYS)}{hint}"
            )
        merged = {k: settings_dict.get(k) for k in ("HOST", "PORT", "USER", "PASSWORD")}
        merged.update({k: v for k, v in entry.items() if k != "OPTIONS"})
        merged["OPTIONS"] = dict(entry.get("OPTIONS") or {})
        out.append(merged)
    return out


def cluster_arguments(alias: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Cluster keyword arguments from an alias's OPTIONS (pool sizes included)."""
    args = {k: options[k] for k in CLUSTER_OPTIONS if k in options}
    pool = options.get("pool")
    if pool is None or isinstance(pool, bool):
        # Django's values: True (its pool with default options), False or absent (no
        # pool). replpool pools every member whatever the value (see pool_settings).
        pool = {}
    if not isinstance(pool, Mapping):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] must be True, False or a dict of pool "
            f"options such as {{'min_size': 2, 'max_size': 20}}, not {pool!r}"
        )
    pool = dict(pool)
    for key in ("min_size", "max_size"):
        if key in pool:
            args[key] = pool.pop(key)
    args["pool_options"] = pool
    return args


class ClusterWrapperMixin:
    """Mixed into an engine's ``DatabaseWrapper`` before Django's own class.

    The engine provides :meth:`build_cluster`, :meth:`make_plain_cursor`,
    :meth:`is_read_only_error` and :meth:`is_retryable_read`.
    """

    # Per alias, its clusters by the settings they were made from, the newest last.
    _replpool_clusters: ClassVar[dict[str, dict[tuple[Any, ...], Cluster]]] = {}
    _replpool_lock: ClassVar[threading.Lock] = threading.Lock()
    # The routed connections not closed yet (which clusters are in use).
    _replpool_open: ClassVar[weakref.WeakSet[RoutedConnection]] = weakref.WeakSet()
    _replpool_open_lock: ClassVar[threading.Lock] = threading.Lock()

    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    timezone_name: str | None
    _replpool_options_memo: tuple[Any, str]
    # While Django shares the wrapper with other threads: the sharing thread and its session.
    _replpool_shared: tuple[int, _session.Session] | None = None

    @property
    def routed(self) -> bool:
        """Whether this wrapper routes (the ``NO_DB_ALIAS`` wrappers Django makes to
        create and drop test databases talk to the primary alone, unrouted)."""
        return self.alias != NO_DB_ALIAS

    @property
    def pool(self) -> Any:
        """The pool the alias's primary connections come from now (psycopg_pool's, or
        replpool's MySQL pool: ``get_stats()``...). replpool pools every member whatever
        ``OPTIONS["pool"]`` says; the replicas' pools show in ``cluster.status()``.
        Raises ImproperlyConfigured, as Django's pool does, when ``CONN_MAX_AGE`` is
        not 0. None for the unrouted ``NO_DB_ALIAS`` wrappers."""
        if not self.routed:
            return None
        cluster = self.replpool_cluster()
        index = cluster._primary_index(time.monotonic() + cluster.failover_wait)
        return cluster._members[index].pool

    def _settings_key(self) -> tuple[Any, ...]:
        # What the pools are made from: OPTIONS by content, so that copies of the wrapper
        # (connection.copy()) share the cluster; its text is worked out once per OPTIONS
        # dict, not on every request (like Django's own pool, a dict changed in place
        # after the first connection needs close_pool()). The time zone configures the
        # pools' connections too.
        s = self.settings_dict
        options = s.get("OPTIONS")
        memo = self.__dict__.get("_replpool_options_memo")
        if memo is None or memo[0] is not options:
            memo = self._replpool_options_memo = (options, repr(options))
        return (
            s.get("NAME"), s.get("USER"), s.get("HOST"), s.get("PORT"), memo[1],
            self.timezone_name,
        )

    def replpool_cluster(self) -> Cluster:
        """The cluster for this wrapper's settings, made on first use. An alias has one
        cluster per distinct settings: when they change (the test runner switches NAME
        to the test database; a copy of the wrapper with other OPTIONS or another time
        zone), the wrapper gets a new cluster, and the clusters of the alias's earlier
        settings close as soon as no open connection uses them."""
        key = self._settings_key()
        clusters = self._replpool_clusters.get(self.alias)
        if clusters is not None:
            found = clusters.get(key)
            if found is not None and not found.closed:
                return found  # the common case, without the lock
        with self._replpool_lock:
            clusters = self._replpool_clusters.setdefault(self.alias, {})
            found = clusters.get(key)
            if found is not None and not found.closed:
                return found
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                # Django's own words first: its pool refuses the same setting.
                raise ImproperlyConfigured(
                    f"DATABASES[{self.alias!r}]: Pooling doesn't support persistent "
                    "connections. replpool pools connections itself: set CONN_MAX_AGE to 0 "
                    "(the default)"
                )
            try:
                cluster = self.build_cluster()
            except ConfigurationError as exc:
                raise ImproperlyConfigured(f"DATABASES[{self.alias!r}]: {exc}") from None
            cluster.open()
            clusters.pop(key, None)
            clusters[key] = cluster  # the newest last
            retired = self._retire_idle(self.alias)
        for old in retired:
            old.close()
        return cluster

    @classmethod
    def _retire_idle(cls, alias: str) -> list[Cluster]:
        """Take out the alias's clusters that are neither its newest nor used by an open
        connection (the caller holds the lock, and closes them after releasing it)."""
        clusters = cls._replpool_clusters.get(alias)
        if not clusters or len(clusters) < 2:
            return []
        newest = next(reversed(clusters.values()))
        with cls._replpool_open_lock:
            used = {id(rc.cluster) for rc in cls._replpool_open if not rc.closed}
        retired = []
        for key, cluster in list(clusters.items()):
            if cluster is not newest and (cluster.closed or id(cluster) not in used):
                del clusters[key]
                retired.append(cluster)
        return retired

    def close_pool(self) -> None:
        """Close the alias's clusters (the test runner does this before it drops or
        clones a test database; a new time zone does it too); the next connection
        makes a new one."""
        with self._replpool_lock:
            clusters = self._replpool_clusters.pop(self.alias, None) or {}
        for cluster in clusters.values():
            cluster.close()

    def build_cluster(self) -> Cluster:
        raise NotImplementedError

    def make_plain_cursor(self, conn: Any) -> Any:
        raise NotImplementedError

    def is_read_only_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def is_retryable_read(self, exc: BaseException, conn: Any) -> bool:
        raise NotImplementedError

    def closed_cursor_error(self, connection_closed: bool = False) -> BaseException:
        """What the driver raises when a closed cursor is used (``connection_closed``:
        a cursor whose connection was closed)."""
        raise NotImplementedError

    def primary_usable(self, conn: Any) -> bool:
        """Whether a held primary connection still works, without a round trip."""
        raise NotImplementedError

    def is_usable(self) -> bool:
        if not self.routed:
            return super().is_usable()  # type: ignore[misc, no-any-return]
        rc = self.connection
        if rc is None or rc.closed:
            return False
        conn = rc.held_primary
        # Nothing held: the next lease is checked at checkout.
        return conn is None or self.primary_usable(conn)

    def close_if_health_check_failed(self) -> None:
        if not self.routed:
            return super().close_if_health_check_failed()  # type: ignore[misc, no-any-return]
        # As Django does for a connection of its own that outlives a request: with
        # CONN_HEALTH_CHECKS, once per request, is_usable() (no round trip here); the
        # pools check each connection they hand out besides (a round trip each with
        # CONN_HEALTH_CHECKS on PostgreSQL, as Django's pool does).
        BaseDatabaseWrapper.close_if_health_check_failed(self)  # type: ignore[arg-type]

    def on_primary_connection(self, conn: Any) -> None:
        """Per-lease setup of the primary connection (isolation level, ...)."""

    def routed_connection(self) -> RoutedConnection:
        rc = RoutedConnection(self, self.replpool_cluster, self.on_primary_connection)  # type: ignore[arg-type]
        with self._replpool_open_lock:
            self._replpool_open.add(rc)
        return rc

    def _close(self) -> None:
        if not self.routed:
            return super()._close()  # type: ignore[misc, no-any-return]
        rc = self.connection
        if rc is None:
            return None
        try:
            with self.wrap_database_errors:  # type: ignore[attr-defined]
                rc.close()
        finally:
            with self._replpool_open_lock:
                self._replpool_open.discard(rc)
            self._cluster_released(rc.cluster)
        return None

    def _cluster_released(self, cluster: Cluster) -> None:
        """A connection of ``cluster`` closed: if newer settings superseded it and no
        open connection uses it any more, close it."""
        clusters = self._replpool_clusters.get(self.alias)
        if not clusters or len(clusters) < 2:
            return  # the common case: one cluster per alias
        with self._replpool_lock:
            retired = self._retire_idle(self.alias)
        for old in retired:
            old.close()

    def routing_cursor(self) -> RoutingCursor:
        return RoutingCursor(
            self,  # type: ignore[arg-type]
            self.make_plain_cursor, self.is_read_only_error, self.is_retryable_read,
            self.closed_cursor_error,
        )

    # -- a connection shared with other threads carries its session ------------------------

    def inc_thread_sharing(self) -> None:
        """Django's ``inc_thread_sharing()``; besides, the calling thread's session goes
        with the connection: other threads that use it read in that session (they read
        what it wrote), and what they write binds it."""
        super().inc_thread_sharing()  # type: ignore[misc]
        if self._replpool_shared is None:
            self._replpool_shared = (threading.get_ident(), _session.writing_session())

    def dec_thread_sharing(self) -> None:
        super().dec_thread_sharing()  # type: ignore[misc]
        if not self.allow_thread_sharing:  # type: ignore[attr-defined]
            self._replpool_shared = None

    def strip_replpool_options(self, params: dict[str, Any]) -> dict[str, Any]:
        for key in REPLPOOL_OPTIONS:
            params.pop(key, None)
        return params


def engine_cluster(
    alias: str, options: Mapping[str, Any], primary: str, replicas: list[str],
    kwargs: Mapping[str, Any], configure: Any, who: str, check: Any = None,
) -> Cluster:
    """The alias's Cluster, its pools opening connections with ``kwargs`` and running
    ``configure`` on each, as the engine's backend would (``who``), and ``check`` on
    each connection they hand out unless ``OPTIONS["pool"]`` names its own."""
    args = cluster_arguments(alias, options)
    pool_options = args.pop("pool_options")
    for key in ("configure", "kwargs"):
        if key in pool_options:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['pool'][{key!r}] is set by the engine (it "
                f"configures connections the way {who} does)"
            )
    # Named as the user wrote them (not as Cluster's pool_options), sizes included.
    allowed = sorted({"min_size", "max_size"} | (
        set(engine_for(primary, None).pool_option_names()) - {"configure", "kwargs"}
    ))
    for key in pool_options:
        if key not in allowed:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['pool'] sets {key!r}, which is not a pool "
                f"option; the pool options are: {', '.join(allowed)}"
            )
    if check is not None:
        pool_options.setdefault("check", check)
    pool_options["kwargs"] = dict(kwargs)
    pool_options["configure"] = configure
    return Cluster(primary, replicas, name=alias, pool_options=pool_options, **args)


def base_init_connection_state(wrapper: Any) -> None:
    """Django's generic connection setup (the version check), skipping the engine's
    per-connection configuration, which the pools run on each new connection."""
    BaseDatabaseWrapper.init_connection_state(wrapper)


# -- migrate raises the cluster's floor ----------------------------------------------------

logger = logging.getLogger("replpool.django")
# The apps registry of the last migrate seen per alias: post_migrate comes once per app.
_migrated: dict[str, int] = {}


def raise_floor_after_migrate(sender: Any, using: str = "default", apps: Any = None, **kwargs: Any) -> None:
    """``migrate`` ended on ``using``: from now on this process reads no replica that has
    not replayed it (``Cluster.raise_floor``), so no request reads a schema older than
    the one it just migrated to. Once per migrate, not once per app."""
    key = id(apps)
    if _migrated.get(using) == key:
        return
    _migrated[using] = key
    wrapper = connections[using]
    if not isinstance(wrapper, ClusterWrapperMixin) or not wrapper.routed:
        return
    try:
        wrapper.replpool_cluster().raise_floor()
    except Error as exc:
        logger.warning("DATABASES[%r]: could not raise the floor after migrate: %s", using, exc)


post_migrate.connect(raise_floor_after_migrate, dispatch_uid="replpool.raise_floor_after_migrate")
