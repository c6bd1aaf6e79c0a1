"""``replpool.backends.postgresql``: Django's PostgreSQL backend over a replpool cluster.

Everything Django's backend does is inherited; what changes is where statements run
(see :mod:`replpool.django._routed`) and where connections come from: each alias has a
:class:`replpool.Cluster` (one per process), whose pools are configured exactly like
Django's own pool would be (time zone, role, isolation level, adapters, cursor class),
on every member.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.sql
import psycopg_pool
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base as pg_base
from django.db.backends.postgresql import creation as pg_creation
from django.db.backends.postgresql.psycopg_any import IsolationLevel, register_tzloader
from django.utils.functional import cached_property
from psycopg import pq
from psycopg.conninfo import make_conninfo
from psycopg.pq import Format

from ..._cluster import Cluster
from ..._pg import PostgresEngine
from .._common import (
    ClusterWrapperMixin,
    TestDatabasesMixin,
    base_init_connection_state,
    engine_cluster,
    replica_settings,
)

# Connection parameters that are psycopg arguments, not libpq keywords.
_PSYCOPG_KWARGS = ("context", "cursor_factory", "prepare_threshold", "row_factory", "autocommit")
_ENGINE = PostgresEngine()
# What OPTIONS may hold besides replpool's keys: libpq's connection parameters, psycopg's
# connection arguments, and the options Django's backend reads itself.
_LIBPQ_KEYWORDS = frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())
_DJANGO_OPTIONS = frozenset({"assume_role", "isolation_level", "server_side_binding"})


class DatabaseCreation(TestDatabasesMixin, pg_creation.DatabaseCreation):
    pass


class DatabaseWrapper(ClusterWrapperMixin, pg_base.DatabaseWrapper):
    creation_class = DatabaseCreation
    connection_options = _LIBPQ_KEYWORDS | _DJANGO_OPTIONS | frozenset(_PSYCOPG_KWARGS)
    replica_connection_options = _LIBPQ_KEYWORDS
    options_owner = "PostgreSQL (libpq), psycopg or Django's backend"

    # -- the cluster ---------------------------------------------------------------------

    def _split(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kwargs = {k: params.pop(k) for k in _PSYCOPG_KWARGS if k in params}
        libpq = {k: v for k, v in params.items() if v is not None and v != ""}
        return make_conninfo("", **libpq), kwargs

    def build_cluster(self) -> Cluster:
        params = self._connection_params()
        primary, kwargs = self._split(dict(params))
        kwargs["autocommit"] = True  # Django sets it per connection later, as with its pool
        replicas = []
        for rs in replica_settings(self.alias, self.settings_dict):
            p = {k: v for k, v in params.items() if k not in _PSYCOPG_KWARGS}
            for key, lib in (("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password")):
                if rs.get(key):
                    p[lib] = rs[key]
            p.update(rs["OPTIONS"])
            replicas.append(self._split(p)[0])
        return engine_cluster(
            self.alias, self.settings_dict["OPTIONS"], primary, replicas, kwargs,
            self._twin()._configure_pooled, "Django",
            # CONN_HEALTH_CHECKS: what Django's pool checks each connection with.
            psycopg_pool.ConnectionPool.check_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
        )

    def check_configuration(self, cluster: Cluster) -> None:
        """Set up one connection to the primary as the pools will, now: a setting the
        server refuses (``assume_role`` naming no role, ...) raises the server's error
        from Django's ``connect()``, as with Django's own backend, rather than leaving
        the pools failing in their threads. A primary out of reach is no error here:
        the monitor and the pools deal with that; one that did not answer the monitor's
        first poll is not asked at all (a hung server would cost every new process the
        connect timeout, twice with ``sslmode=prefer``, per alias)."""
        if not cluster._monitor.members[0].polls:
            return
        options = cluster.pool_options
        timeout = max(2, int(round(cluster.connect_timeout)))
        try:
            conn = psycopg.connect(
                cluster._members[0].spec.conninfo, **{"connect_timeout": timeout, **options["kwargs"]}
            )
        except psycopg.OperationalError:
            return
        try:
            options["configure"](conn)
        finally:
            conn.close()

    def pool_setup_key(self) -> Any:
        # The pools set each connection's time zone (a copy of the wrapper may have
        # another one, which Django's setting_changed handler does not reach).
        return self.timezone_name

    def _twin(self) -> DatabaseWrapper:
        """This wrapper as the pools see it, for their threads: its settings as they are
        now (a copy: a change made in place later, to this wrapper, reaches no pool that
        other wrappers share) and its time zone worked out now."""
        twin = self.__class__({**self.settings_dict, "OPTIONS": dict(self.settings_dict["OPTIONS"])}, self.alias)
        twin.__dict__["timezone_name"] = self.timezone_name
        return twin

    def _configure_role(self, connection: psycopg.Connection[Any]) -> bool:
        # Django's, but composed on the connection itself: the pools run it in their own
        # threads, where the wrapper's cursor (Django's compose_sql) may not be used.
        role = self.settings_dict["OPTIONS"].get("assume_role")
        if not role:
            return False
        with connection.cursor() as cursor:
            cursor.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Literal(role)))
        return True

    def _configure_pooled(self, connection: psycopg.Connection[Any]) -> None:
        """Every new connection of every member: what Django does to its own."""
        self._configure_connection(connection)
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        if level is not None:
            connection.isolation_level = IsolationLevel(level)

    # -- connections ------------------------------------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self.routed:
            return super().get_new_connection(conn_params)
        del conn_params  # the cluster has them; a frame's variables show on error pages
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        try:
            self.isolation_level = IsolationLevel(level) if level is not None else IsolationLevel.READ_COMMITTED
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {level} specified. Use one of the "
                "psycopg.IsolationLevel values."
            ) from None
        return self.routed_connection()

    def init_connection_state(self) -> None:
        if not self.routed:
            return super().init_connection_state()
        base_init_connection_state(self)

    def ensure_timezone(self) -> bool:
        if not self.routed:
            return super().ensure_timezone()
        # New connections get the new zone from the pools' configure step; the primary
        # connection held now (perhaps inside a test's transaction) is set directly.
        self.close_pool()
        if self.connection is None:
            return False
        self.connection.drop_replica()
        if self.connection._primary is None:
            return False
        return self._configure_timezone(self.connection.primary())

    @cached_property
    def pg_version(self) -> int:
        """The server's version number (as ``server_version_num``): Django checks it
        when it first connects, and replicas run the primary's version, so any member
        answers; while no primary is reachable, a replica does."""
        if not self.routed:
            return pg_base.DatabaseWrapper.pg_version.func(self)  # type: ignore[attr-defined,no-any-return]
        with self.temporary_connection():
            return int(self.member_connection().info.server_version)

    # -- cursors ------------------------------------------------------------------------------

    def create_cursor(self, name: str | None = None) -> Any:
        if not self.routed:
            return super().create_cursor(name)
        if name:
            # A server-side cursor outlives its statement: it stays on the primary.
            conn = self.connection.primary()
            if self.settings_dict["OPTIONS"].get("server_side_binding") is not True:
                cursor = pg_base.ServerSideCursor(
                    conn, name=name, scrollable=False, withhold=conn.autocommit
                )
            else:
                cursor = conn.cursor(name, scrollable=False, withhold=conn.autocommit)
            return self._with_timezone(conn, cursor)
        return self.routing_cursor()

    def make_plain_cursor(self, conn: psycopg.Connection[Any]) -> Any:
        return self._with_timezone(conn, conn.cursor())

    def _with_timezone(self, conn: psycopg.Connection[Any], cursor: Any) -> Any:
        # As Django does: register the zone on the cursor only if the connection's
        # loader disagrees, to avoid copying the adapter map.
        tzloader = conn.adapters.get_loader(pg_base.TIMESTAMPTZ_OID, Format.TEXT)
        if self.timezone != tzloader.timezone:  # type: ignore[union-attr]
            register_tzloader(self.timezone, cursor)
        return cursor

    def primary_usable(self, conn: psycopg.Connection[Any]) -> bool:
        # What Django's "SELECT 1" would tell: a transaction aborted by an error, or a
        # connection whose server went away.
        return conn.info.transaction_status != pq.TransactionStatus.INERROR and _ENGINE.alive(conn)

    def is_read_only_error(self, exc: BaseException) -> bool:
        return _ENGINE.is_read_only_error(exc)

    def is_retryable_read(self, exc: BaseException, conn: Any) -> bool:
        return _ENGINE.is_retryable_read(exc, conn, True)  # the cursor asks for replica reads

    def closed_cursor_error(self, connection_closed: bool = False) -> BaseException:
        # psycopg's own errors and words.
        if connection_closed:
            return psycopg.OperationalError("the connection is closed")
        return psycopg.InterfaceError("the cursor is closed")
