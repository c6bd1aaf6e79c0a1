"""What the replpool Django engines share: the cluster behind each alias, built from
``DATABASES`` settings, and the wrapper methods that route through it."""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
import secrets
import threading
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.models.signals import post_migrate
from django.utils.functional import cached_property

from .. import _session
from .._cluster import Cluster
from .._engine import engine_for
from .._errors import ConfigurationError, Error
from ..django import _liveserver
from ..django import checks as _checks  # noqa: F401  (registers replpool's system checks)
from ..django._routed import CursorKit, RoutedConnection, RoutingCursor

# OPTIONS keys that belong to replpool, not to the driver.
CLUSTER_OPTIONS = (
    "max_replica_lag", "max_replica_lag_bytes", "monitor_interval", "monitor_idle_interval",
    "monitor_demand_interval", "causal_wait", "replica_selection", "replica_lock_timeout",
    "failover_wait", "probe_timeout", "connect_timeout",
)
REPLPOOL_OPTIONS = ("replicas", "pool", "replica_functions", *CLUSTER_OPTIONS)
_REPLPOOL_OPTION_SET = frozenset(REPLPOOL_OPTIONS)
# What a replica entry may set; everything else is the primary's (a physical replica
# serves the same databases, so NAME is the primary's, test databases included).
REPLICA_KEYS = ("HOST", "PORT", "USER", "PASSWORD", "OPTIONS")


# The system checks that report each kind of settings mistake (replpool/django/checks.py).
E_UNKNOWN_OPTION = "replpool.E001"
E_CONN_MAX_AGE = "replpool.E002"
E_CLUSTER_OPTION = "replpool.E003"
E_REPLICAS = "replpool.E004"
E_POOL = "replpool.E005"
E_OTHER = "replpool.E009"


class SettingsError(ImproperlyConfigured):
    """A setting the engine refuses, and the system check (``check_id``) that reports
    it before the first connection does."""

    def __init__(self, message: str, check_id: str) -> None:
        super().__init__(message)
        self.check_id = check_id


def unknown_options(
    alias: str, options: Mapping[str, Any], known: frozenset[str], replica_known: frozenset[str],
    who: str,
) -> list[str]:
    """A message for each OPTIONS key (the alias's, and each replica's) that neither
    replpool nor the connection reads, with the likely meaning when one is close: the
    driver would otherwise refuse it at the first connection, or ignore it."""
    out = []
    everything = known | set(REPLPOOL_OPTIONS)
    where = f"DATABASES[{alias!r}]['OPTIONS']"
    entries: list[tuple[str, Mapping[str, Any], frozenset[str]]] = [(where, options, frozenset(everything))]
    replicas = options.get("replicas")
    if isinstance(replicas, (list, tuple)):
        for i, entry in enumerate(replicas):
            if isinstance(entry, Mapping) and isinstance(entry.get("OPTIONS"), Mapping):
                entries.append((f"{where}['replicas'][{i}]['OPTIONS']", entry["OPTIONS"], replica_known))
    for place, given, allowed in entries:
        for key in given:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.75)
            meant = f"; did you mean {close[0]!r}?" if close else ""
            out.append(
                f"{place} has {key!r}, which is neither a replpool option nor a connection "
                f"option of {who}: remove it{meant}"
            )
    return out


def replica_settings(alias: str, settings_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each replica's settings: its own keys over the primary's."""
    entries = settings_dict.get("OPTIONS", {}).get("replicas", [])
    if not isinstance(entries, (list, tuple)):
        raise SettingsError(
            f"DATABASES[{alias!r}]['OPTIONS']['replicas'] must be a list of dicts such as "
            f"{{'HOST': 'db2'}}, not {type(entries).__name__}", E_REPLICAS,
        )
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise SettingsError(
                f"DATABASES[{alias!r}]['OPTIONS']['replicas'][{i}] must be a dict such as "
                f"{{'HOST': 'db2', 'PORT': '5432'}}, not a {type(entry).__name__}", E_REPLICAS,
            )
        unknown = sorted(set(entry) - set(REPLICA_KEYS))
        if unknown:
            hint = (
                " (a replica serves the primary's databases; NAME is always the primary's)"
                if "NAME" in unknown else ""
            )
            raise SettingsError(
                f"DATABASES[{alias!r}]['OPTIONS']['replicas'][{i}] sets {', '.join(unknown)}, "
                f"but a replica may only set {', '.join(REPLICA_KEYS)}{hint}", E_REPLICAS,
            )
        merged = {k: settings_dict.get(k) for k in ("HOST", "PORT", "USER", "PASSWORD")}
        merged.update({k: v for k, v in entry.items() if k != "OPTIONS"})
        merged["OPTIONS"] = dict(entry.get("OPTIONS") or {})
        out.append(merged)
    return out


def replica_functions(alias: str, options: Mapping[str, Any]) -> frozenset[str]:
    """``OPTIONS["replica_functions"]``: names of the project's own SQL functions that
    only read (``"f"`` or ``"schema.f"``), so that statements calling them may still run
    on a replica (see :func:`replpool._sql.classify`); lower-cased, as the classifier
    compares them. Default: none. Raises :class:`SettingsError` (``replpool.E003``) for
    anything but a list, tuple or set of such names."""
    given = options.get("replica_functions")
    if given is None:
        return frozenset()
    if isinstance(given, (list, tuple, set, frozenset)) and all(
        isinstance(name, str) and _FUNCTION_NAME.fullmatch(name) for name in given
    ):
        return frozenset(name.lower() for name in given)
    raise SettingsError(
        f"DATABASES[{alias!r}]['OPTIONS']['replica_functions'] must be a list of the names "
        "of your SQL functions that only read, each 'name' or 'schema.name' (for example "
        f"['order_total', 'reports.monthly']), not {given!r}", E_CLUSTER_OPTION,
    )


# An identifier as both servers take it unquoted, optionally qualified by its schema.
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?")


def cluster_arguments(alias: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Cluster keyword arguments from an alias's OPTIONS (pool sizes included)."""
    args = {k: options[k] for k in CLUSTER_OPTIONS if k in options}
    pool = options.get("pool")
    if pool is None or isinstance(pool, bool):
        # Django's values: True (its pool with default options), False or absent (no
        # pool). replpool pools every member whatever the value.
        pool = {}
    if not isinstance(pool, Mapping):
        raise SettingsError(
            f"DATABASES[{alias!r}]['OPTIONS']['pool'] must be True, False or a dict of pool "
            f"options such as {{'min_size': 2, 'max_size': 20}}, not {pool!r}", E_POOL,
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

    # Per alias, its clusters by the settings they were made from.
    _replpool_clusters: ClassVar[dict[str, dict[tuple[Any, ...], Cluster]]] = {}
    _replpool_lock: ClassVar[threading.Lock] = threading.Lock()
    # The wrappers that have connected (which settings, and clusters, are in use).
    _replpool_wrappers: ClassVar[weakref.WeakSet[ClusterWrapperMixin]] = weakref.WeakSet()
    _replpool_wrappers_lock: ClassVar[threading.Lock] = threading.Lock()

    alias: str
    settings_dict: dict[str, Any]
    connection: Any
    _replpool_options_memo: tuple[Any, str] | None = None
    _replpool_params_memo: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    _replpool_kit_memo: tuple[Any, CursorKit] | None = None
    _replpool_known: bool
    # While Django shares the wrapper with other threads: the sharing thread and its session.
    _replpool_shared: tuple[int, _session.Session] | None = None

    @cached_property
    def routed(self) -> bool:
        """Whether this wrapper routes (the ``NO_DB_ALIAS`` wrappers Django makes to
        create and drop test databases talk to the primary alone, unrouted). A
        wrapper's alias never changes: worked out once (it is asked several times a
        query)."""
        return self.alias != NO_DB_ALIAS

    def get_connection_params(self) -> dict[str, Any]:
        """Django's connection parameters, less replpool's OPTIONS keys. Django's
        ``connect()`` asks for them on every connection, which a routed wrapper does
        not use (its cluster was made from the same parameters): worked out once per
        settings (see :meth:`_settings_key`), and a copy returned."""
        if not self.routed:
            return self._connection_params()
        key = self._settings_key()
        memo = self._replpool_params_memo
        if memo is None or memo[0] != key:
            memo = self._replpool_params_memo = (key, self._connection_params())
        return dict(memo[1])

    def _connection_params(self) -> dict[str, Any]:
        """Django's parameters, worked out now (which validates the settings)."""
        return self.strip_replpool_options(super().get_connection_params())  # type: ignore[misc]

    @property
    def pool(self) -> Any:
        """The pool the alias's primary connections come from now (psycopg_pool's, or
        replpool's MySQL pool: ``get_stats()``...; the configured primary's while no
        primary is known). replpool pools every member whatever
        ``OPTIONS["pool"]`` says; the replicas' pools show in ``cluster.status()``.
        Raises ImproperlyConfigured, as Django's pool does, when ``CONN_MAX_AGE`` is
        not 0. None for the unrouted ``NO_DB_ALIAS`` wrappers."""
        if not self.routed:
            return None
        cluster = self.replpool_cluster()
        view = cluster._monitor.topology.primary_view  # none known: the configured primary
        return cluster._members[view.index if view is not None else 0].pool

    def _settings_key(self) -> tuple[Any, ...]:
        # What the pools are made from. OPTIONS by content, so that copies of the wrapper
        # (connection.copy()) share the cluster; its digest is worked out once per OPTIONS
        # dict, not on every request (like Django's own pool, a dict changed in place
        # after the first connection needs close_pool()). A keyed digest, not the text:
        # OPTIONS hold the replicas' passwords, and this key is a local variable of frames
        # Django's DEBUG page shows. And what else the engine's set-up reads (the time zone).
        # Asked twice per connection: subscripts (Django's backends read these keys so
        # too), and the memo a class attribute until set, not a __dict__ lookup.
        s = self.settings_dict
        options = s["OPTIONS"]
        memo = self._replpool_options_memo
        if memo is None or memo[0] is not options:
            digest = hashlib.blake2b(repr(options).encode(), key=_DIGEST_KEY, digest_size=16).hexdigest()
            memo = self._replpool_options_memo = (options, digest)
        return (s["NAME"], s["USER"], s["HOST"], s["PORT"], memo[1], self.pool_setup_key())

    def pool_setup_key(self) -> Any:
        """What else the engine sets up pooled connections from (default: nothing)."""
        return None

    def replpool_cluster(self) -> Cluster:
        """The cluster for this wrapper's settings, made on first use. An alias has one
        cluster per distinct settings: when they change (the test runner switches NAME
        to the test database; a copy of the wrapper with other OPTIONS or another time
        zone), the wrapper gets a new cluster; a cluster closes once no wrapper of the
        alias has its settings any more (the wrapper was dropped, or its settings
        changed) and no open connection uses it."""
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
            try:
                cluster = self._new_cluster()
            except BaseException as exc:
                # The frames that built the cluster held the connection settings,
                # passwords included; Django's DEBUG page would list them.
                forget_locals(exc)
                raise
            clusters[key] = cluster
            self._known()
            retired = self._retire_unused(self.alias)
        for old in retired:
            old.close()
        return cluster

    def _known(self) -> None:
        """Count this wrapper among those whose settings are in use (once)."""
        if "_replpool_known" not in self.__dict__:
            with self._replpool_wrappers_lock:
                self._replpool_wrappers.add(self)
            self._replpool_known = True

    @classmethod
    def _retire_unused(cls, alias: str) -> list[Cluster]:
        """Take out the alias's clusters whose settings no wrapper of the alias has now
        and that no open connection uses (the caller holds the lock, and closes them
        after releasing it)."""
        clusters = cls._replpool_clusters.get(alias)
        if not clusters or len(clusters) < 2:
            return []
        with cls._replpool_wrappers_lock:
            wrappers = [w for w in cls._replpool_wrappers if w.alias == alias]
        keys, used = set(), set()
        for w in wrappers:
            rc = w.connection
            if isinstance(rc, RoutedConnection) and not rc.closed:
                used.add(id(rc.cluster))
            try:
                keys.add(w._settings_key())
            except Exception:  # settings that make no cluster (a test's mock...)
                continue
        retired = []
        for key, cluster in list(clusters.items()):
            if cluster.closed or (key not in keys and id(cluster) not in used):
                del clusters[key]
                retired.append(cluster)
        return retired

    def _new_cluster(self) -> Cluster:
        conn_max_age = self.conn_max_age_problem()
        if conn_max_age is not None:
            raise SettingsError(conn_max_age, E_CONN_MAX_AGE)
        unknown = self.unknown_options()
        if unknown:
            raise SettingsError(unknown[0], E_UNKNOWN_OPTION)
        cluster = self.build_cluster()
        cluster.open()
        try:
            self.check_configuration(cluster)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def check_configuration(self, cluster: Cluster) -> None:
        """Once the cluster is open: raise what the server says to the engine's set-up of
        a connection, if it refuses it (by default, nothing is checked)."""

    # -- settings ------------------------------------------------------------------------

    # OPTIONS keys the connection reads, besides replpool's own, on the alias and on a
    # replica entry (set by each engine).
    connection_options: ClassVar[frozenset[str]] = frozenset()
    replica_connection_options: ClassVar[frozenset[str]] = frozenset()
    options_owner: ClassVar[str] = "the driver"

    def conn_max_age_problem(self) -> str | None:
        value = self.settings_dict.get("CONN_MAX_AGE", 0)
        if value == 0:
            return None
        # Django's own words first: its pool refuses the same setting.
        return (
            f"DATABASES[{self.alias!r}]['CONN_MAX_AGE'] is {value!r}. Pooling doesn't support "
            "persistent connections. replpool pools connections itself, and hands them back "
            "at the end of each request; set CONN_MAX_AGE to 0 (the default)"
        )

    def unknown_options(self) -> list[str]:
        """A message for each OPTIONS key nobody reads (see :func:`unknown_options`)."""
        return unknown_options(
            self.alias, self.settings_dict.get("OPTIONS") or {}, self.connection_options,
            self.replica_connection_options, self.options_owner,
        )

    def settings_problems(self) -> list[tuple[str, str]]:
        """Every mistake in this alias's settings the engine can tell without
        connecting, as ``(check id, message)``: what the system checks report, and
        what the first connection would otherwise fail on."""
        problems: list[tuple[str, str]] = []
        conn_max_age = self.conn_max_age_problem()
        if conn_max_age is not None:
            problems.append((E_CONN_MAX_AGE, conn_max_age))
        unknown = self.unknown_options()
        problems += [(E_UNKNOWN_OPTION, message) for message in unknown]
        try:
            replica_functions(self.alias, self.settings_dict.get("OPTIONS") or {})
        except SettingsError as exc:
            problems.append((exc.check_id, str(exc)))
        # The rest, as building the cluster finds it (no connection is made), on a copy
        # without the unknown keys, which would stop it before the others are seen.
        settings_dict = dict(self.settings_dict)
        options = dict(settings_dict.get("OPTIONS") or {})
        allowed = self.connection_options | set(REPLPOOL_OPTIONS)
        settings_dict["OPTIONS"] = {k: v for k, v in options.items() if k in allowed}
        replicas = settings_dict["OPTIONS"].get("replicas")
        if isinstance(replicas, list):  # and each replica's unknown keys (reported above)
            settings_dict["OPTIONS"]["replicas"] = [
                {**entry, "OPTIONS": {k: v for k, v in entry["OPTIONS"].items()
                                      if k in self.replica_connection_options}}
                if isinstance(entry, dict) and isinstance(entry.get("OPTIONS"), dict) else entry
                for entry in replicas
            ]
        try:
            type(self)(settings_dict, self.alias).build_cluster()  # type: ignore[call-arg]
        except SettingsError as exc:
            problems.append((exc.check_id, str(exc)))
        except ImproperlyConfigured as exc:
            # Django's own messages name no alias; the engine's name their setting.
            message = str(exc)
            if not message.startswith("DATABASES["):
                message = f"DATABASES[{self.alias!r}]: {message}"
            problems.append((E_OTHER, message))
        except ConfigurationError as exc:
            problems.append((E_CLUSTER_OPTION, f"DATABASES[{self.alias!r}]['OPTIONS']: {exc}"))
        except Exception as exc:
            forget_locals(exc)
            problems.append((E_OTHER, f"DATABASES[{self.alias!r}]: {type(exc).__name__}: {exc}"))
        return problems

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
        if self.connection is not None and self.health_check_enabled and not self.health_check_done:  # type: ignore[attr-defined]
            BaseDatabaseWrapper.close_if_health_check_failed(self)  # type: ignore[arg-type]

    def member_connection(self) -> Any:
        """A DB-API connection to any member, for what every member shares (the
        server's version, its SQL mode): the primary connection if one is held, else
        the one a read would use now (a replica when one is fresh), so that start-up
        questions such as Django's version check need no primary. The caller holds
        the wrapper connected (``temporary_connection()``)."""
        rc = self.connection
        conn = rc.held_primary
        if conn is not None:
            return conn
        decision = rc._current_cluster().decide_read()
        if decision.member is not None:
            lease = rc.replica(decision.member)
            if lease is not None:
                return lease.conn
        return rc.primary()

    def on_primary_connection(self, conn: Any) -> None:
        """Per-lease setup of the primary connection (isolation level, ...)."""

    def routed_connection(self) -> RoutedConnection:
        self._known()
        return RoutedConnection(self, self.replpool_cluster, self.on_primary_connection)  # type: ignore[arg-type]

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
            self._connection_closed()
        return None

    def _connection_closed(self) -> None:
        """A connection closed: the alias's clusters that nobody uses any more close."""
        clusters = self._replpool_clusters.get(self.alias)
        if not clusters or len(clusters) < 2:
            return  # the common case: one cluster per alias
        with self._replpool_lock:
            retired = self._retire_unused(self.alias)
        for old in retired:
            old.close()

    def routing_cursor(self) -> RoutingCursor:
        return RoutingCursor(self, self.cursor_kit())  # type: ignore[arg-type]

    def cursor_kit(self) -> CursorKit:
        """What the alias's cursors need of the engine: made once per OPTIONS dict (it
        holds ``replica_functions``, see :func:`replica_functions`)."""
        options = self.settings_dict["OPTIONS"]
        memo = self._replpool_kit_memo
        if memo is None or memo[0] is not options:
            cls = type(self)
            kit = CursorKit(
                self.vendor, replica_functions(self.alias, options),  # type: ignore[attr-defined]
                cls.make_plain_cursor, cls.is_read_only_error, cls.is_retryable_read,
                cls.closed_cursor_error,
            )
            memo = self._replpool_kit_memo = (options, kit)
        return memo[1]

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
        # Every connect() asks: only the keys there are (often none) are looked at.
        for key in _REPLPOOL_OPTION_SET.intersection(params):
            del params[key]
        return params


# Keys the digest of each alias's OPTIONS (see _settings_key), fresh in each process.
_DIGEST_KEY = secrets.token_bytes(16)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def forget_locals(exc: BaseException) -> None:
    """Clear the local variables of replpool's frames that an exception (and those it
    was raised from) passed through, bar the ones still running: they held connection
    settings, and Django's DEBUG page shows every frame's variables. The frames
    themselves (file, line, code) stay in the traceback, and so do other code's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                try:
                    tb.tb_frame.clear()
                except RuntimeError:
                    pass  # still running (the frame handling the exception)
            tb = tb.tb_next
        current = current.__cause__ or current.__context__


class TestDatabasesMixin:
    """Mixed into an engine's ``DatabaseCreation``: a process that creates (or, as a
    worker of the parallel test runner, clones) a test database runs tests, and a live
    server's requests there read the primary (see :mod:`replpool.django._liveserver`)."""

    def create_test_db(self, *args: Any, **kwargs: Any) -> Any:
        _liveserver.enable()
        return super().create_test_db(*args, **kwargs)  # type: ignore[misc]

    def setup_worker_connection(self, *args: Any, **kwargs: Any) -> Any:
        _liveserver.enable()
        return super().setup_worker_connection(*args, **kwargs)  # type: ignore[misc]


def pool_problem(alias: str, pool: Mapping[str, Any], pool_option_names: frozenset[str], who: str) -> str | None:
    """What is wrong with the keys of an alias's ``OPTIONS['pool']`` (its sizes taken
    out), every wrong key named at once; None if nothing. ``pool_option_names``: what the
    engine's pools take (:meth:`~replpool._engine.Engine.pool_option_names`)."""
    where = f"DATABASES[{alias!r}]['OPTIONS']['pool']"
    problems = []
    own = [key for key in ("configure", "kwargs") if key in pool]
    if own:
        problems.append(
            f"{where} sets {_listed(own)}, which the engine sets itself (it configures "
            f"connections the way {who} does): remove {'it' if len(own) == 1 else 'them'}"
        )
    # Named as the user wrote them (not as Cluster's pool_options), sizes included.
    allowed = sorted({"min_size", "max_size"} | (set(pool_option_names) - {"configure", "kwargs"}))
    unknown = [key for key in pool if key not in allowed and key not in own]
    if unknown:
        named = [
            f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            for key in unknown
            for close in [difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)]
        ]
        problems.append(
            f"{where} sets {_listed(named, quoted=True)}, which "
            f"{'is not a pool option' if len(unknown) == 1 else 'are not pool options'}; "
            f"the pool options are: {', '.join(allowed)}"
        )
    return "; ".join(problems) or None


def _listed(items: list[Any], quoted: bool = False) -> str:
    words = [str(i) if quoted else repr(i) for i in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def engine_cluster(
    alias: str, options: Mapping[str, Any], primary: str, replicas: list[str],
    kwargs: Mapping[str, Any], configure: Any, who: str, check: Any = None,
) -> Cluster:
    """The alias's Cluster, its pools opening connections with ``kwargs`` and running
    ``configure`` on each, as the engine's backend would (``who``), and ``check`` on
    each connection they hand out unless ``OPTIONS["pool"]`` names its own."""
    args = cluster_arguments(alias, options)
    pool_options = args.pop("pool_options")
    problem = pool_problem(alias, pool_options, engine_for(primary, None).pool_option_names(), who)
    if problem is not None:
        raise SettingsError(problem, E_POOL)
    if check is not None:
        pool_options.setdefault("check", check)
    pool_options["kwargs"] = dict(kwargs)
    pool_options["configure"] = configure
    try:
        return Cluster(primary, replicas, name=alias, pool_options=pool_options, **args)
    except ConfigurationError as exc:
        check_id = E_POOL if "pool_options" in str(exc) else E_CLUSTER_OPTION
        raise SettingsError(f"DATABASES[{alias!r}]['OPTIONS']: {exc}", check_id) from None


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
