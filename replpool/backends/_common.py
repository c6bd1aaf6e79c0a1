"""What the replpool Django engines share: the cluster behind each alias, built from
``DATABASES`` settings, and the wrapper methods that route through it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper

from .._cluster import Cluster
from .._engine import engine_for
from .._errors import ConfigurationError
from ..django._routed import RoutedConnection, RoutingCursor

# OPTIONS keys that belong to replpool, not to the driver.
CLUSTER_OPTIONS = (
    "max_replica_lag", "max_replica_lag_bytes", "monitor_interval", "monitor_idle_interval",
    "monitor_demand_interval", "causal_wait", "replica_selection", "failover_wait",
    "probe_timeout", "connect_timeout",
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
    pool = options.get("pool", {})
    if pool is True:
        pool = {}
    if not isinstance(pool, Mapping):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] must be a dict of pool options such as "
            f"{{'min_size': 2, 'max_size': 20}}, not {pool!r}"
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

    _replpool_clusters: ClassVar[dict[str, tuple[tuple[Any, ...], Cluster]]] = {}
    _replpool_lock: ClassVar[threading.Lock] = threading.Lock()

    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    _replpool_options_memo: tuple[Any, str]

    @property
    def routed(self) -> bool:
        """Whether this wrapper routes (the ``NO_DB_ALIAS`` wrappers Django makes to
        create and drop test databases talk to the primary alone, unrouted)."""
        return self.alias != NO_DB_ALIAS

    @property
    def pool(self) -> None:
        # Django's own pool stays off: the cluster pools every member itself.
        return None

    def _settings_key(self) -> tuple[Any, ...]:
        # OPTIONS by content, so that copies of the wrapper (connection.copy()) share the
        # cluster; its text is worked out once per OPTIONS dict, not on every request
        # (like Django's own pool, a dict changed in place after the first connection
        # needs close_pool()).
        s = self.settings_dict
        options = s.get("OPTIONS")
        memo = self.__dict__.get("_replpool_options_memo")
        if memo is None or memo[0] is not options:
            memo = self._replpool_options_memo = (options, repr(options))
        return (s.get("NAME"), s.get("USER"), s.get("HOST"), s.get("PORT"), memo[1])

    def replpool_cluster(self) -> Cluster:
        """The alias's cluster, made on first use and remade when its settings change
        (the test runner switches NAME to the test database)."""
        key = self._settings_key()
        found = self._replpool_clusters.get(self.alias)
        if found is not None and found[0] == key and not found[1].closed:
            return found[1]  # the common case, without the lock
        with self._replpool_lock:
            found = self._replpool_clusters.get(self.alias)
            if found is not None and found[0] == key and not found[1].closed:
                return found[1]
            if found is not None:
                found[1].close()
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured(
                    f"DATABASES[{self.alias!r}]: replpool pools connections itself; set "
                    "CONN_MAX_AGE to 0 (the default)"
                )
            try:
                cluster = self.build_cluster()
            except ConfigurationError as exc:
                raise ImproperlyConfigured(f"DATABASES[{self.alias!r}]: {exc}") from None
            cluster.open()
            self._replpool_clusters[self.alias] = (key, cluster)
            return cluster

    def close_pool(self) -> None:
        """Close the alias's cluster (the test runner does this before it drops or
        clones a test database); the next connection makes a new one."""
        with self._replpool_lock:
            found = self._replpool_clusters.pop(self.alias, None)
        if found is not None:
            found[1].close()

    def build_cluster(self) -> Cluster:
        raise NotImplementedError

    def make_plain_cursor(self, conn: Any) -> Any:
        raise NotImplementedError

    def is_read_only_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def is_retryable_read(self, exc: BaseException, conn: Any) -> bool:
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
        # Pooled connections are checked at every checkout.

    def on_primary_connection(self, conn: Any) -> None:
        """Per-lease setup of the primary connection (isolation level, ...)."""

    def routed_connection(self) -> RoutedConnection:
        return RoutedConnection(self, self.replpool_cluster, self.on_primary_connection)  # type: ignore[arg-type]

    def routing_cursor(self) -> RoutingCursor:
        return RoutingCursor(
            self,  # type: ignore[arg-type]
            self.make_plain_cursor, self.is_read_only_error, self.is_retryable_read,
        )

    def strip_replpool_options(self, params: dict[str, Any]) -> dict[str, Any]:
        for key in REPLPOOL_OPTIONS:
            params.pop(key, None)
        return params


def engine_cluster(
    alias: str, options: Mapping[str, Any], primary: str, replicas: list[str],
    kwargs: Mapping[str, Any], configure: Any, who: str,
) -> Cluster:
    """The alias's Cluster, its pools opening connections with ``kwargs`` and running
    ``configure`` on each, as the engine's backend would (``who``)."""
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
    pool_options["kwargs"] = dict(kwargs)
    pool_options["configure"] = configure
    return Cluster(primary, replicas, name=alias, pool_options=pool_options, **args)


def base_init_connection_state(wrapper: Any) -> None:
    """Django's generic connection setup (the version check), skipping the engine's
    per-connection configuration, which the pools run on each new connection."""
    BaseDatabaseWrapper.init_connection_state(wrapper)
