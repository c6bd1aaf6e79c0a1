"""``replpool.backends.mysql``: mysql-connector-python's Django backend (MariaDB and
MySQL) over a replpool cluster.

Everything the connector's backend does is inherited; what changes is where statements
run (see :mod:`replpool.django._routed`) and where connections come from: each alias
has a :class:`replpool.Cluster` (one per process), whose pools open every connection of
every member with the connection arguments the backend would pass to
``mysql.connector.connect()`` and configure it as the backend's
``init_connection_state`` would (``sql_auto_is_null``, isolation level, autocommit).

What differs from the connector's own backend, and why:

- Connections are always the driver's pure-Python ones (replpool needs their socket and
  the status flags of each reply), so ``use_pure`` is on for routed aliases.
- ``dbshell`` gives the client the password in ``MYSQL_PWD``, as Django's own MySQL
  backend does, instead of ``--password=`` on its command line, where the process list
  and Django's "returned non-zero exit status" error would show it.
- The test database's cluster is closed before the test runner drops that database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import mysql.connector.errors
from django.utils.functional import cached_property
from mysql.connector.constants import DEFAULT_CONFIGURATION
from mysql.connector.django import base as connector_base
from mysql.connector.django.client import DatabaseClient as ConnectorClient
from mysql.connector.django.creation import DatabaseCreation as ConnectorCreation

from ..._cluster import Cluster
from ..._mysql import _URL_OPTIONS, MySQLEngine, _option_value
from ..._mysqlpool import Connection
from .._common import (
    E_REPLICAS,
    ClusterWrapperMixin,
    SettingsError,
    TestDatabasesMixin,
    engine_cluster,
    replica_settings,
)

# Only its stateless checks (errors, liveness) are used: each cluster has its own engine,
# which learns whether its servers are MariaDB or MySQL.
_ENGINE = MySQLEngine()

# Driver arguments that say how to reach and log in to a server. They go in each
# member's URL, where the monitor's connections find them too, and a replica may set its
# own. All other arguments (session set-up, result handling) are every member's alike.
_CONNECT_OPTIONS = frozenset(k for k in _URL_OPTIONS if k.startswith(("ssl_", "tls_"))) | frozenset({
    "unix_socket", "auth_plugin", "compress", "connect_timeout", "connection_timeout",
    "force_ipv6", "kerberos_auth_mode", "krb_service_principal", "oci_config_file",
    "oci_config_profile", "openid_token_file", "password1", "password2", "password3",
})
# Who and where a member is: in its URL, never in the arguments shared by all members.
_IDENTITY = ("host", "port", "user", "password", "passwd", "database", "db", "unix_socket")


def _url_text(value: Any) -> str | None:
    """``value`` as URL query text that reads back as the same value, else None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        text = value if isinstance(value, str) else repr(value)
        back = _option_value(text)
        if type(back) is type(value) and back == value:
            return text
    return None


def member_url(
    host: str | None, port: Any, user: str | None, password: str | None, database: str | None,
    options: Mapping[str, Any],
) -> str:
    """A ``mysql://`` URL for one member (it holds the password: never show it). A
    ``host`` starting with ``/`` is a Unix socket, as in Django's settings."""
    query = {k: v for k, v in options.items() if k != "unix_socket"}
    if host and host.startswith("/"):
        query["unix_socket"] = host
        host = "localhost"
    elif options.get("unix_socket"):
        query["unix_socket"] = options["unix_socket"]
    host = host or "127.0.0.1"  # the driver's default
    shown_host = f"[{host}]" if ":" in host else host
    auth = ""
    if user:
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"
    path = f"/{quote(database, safe='')}" if database else ""
    pairs = [(k, _url_text(v)) for k, v in sorted(query.items())]
    text = urlencode(pairs, quote_via=quote) if pairs else ""
    return f"mysql://{auth}{shown_host}:{int(port or 3306)}{path}{'?' + text if text else ''}"


def configurer(statements: Iterable[str]) -> Callable[[Connection], None]:
    """The pools' ``configure``: run the backend's per-connection statements on every
    new connection (and again after the pool resets a session). It holds no wrapper:
    pools call it from their own threads, and Django's wrappers belong to one thread."""
    statements = tuple(statements)

    def configure(conn: Connection) -> None:
        for statement in statements:
            conn.rp_execute(statement)

    return configure


class DatabaseClient(ConnectorClient):
    """The connector's ``dbshell``, with the password in the environment."""

    @classmethod
    def settings_to_cmd_args_env(
        cls, settings_dict: dict[str, Any], parameters: Iterable[str] | None = None
    ) -> tuple[list[str], dict[str, str] | None]:
        args, env = super().settings_to_cmd_args_env(settings_dict, parameters)
        options = settings_dict["OPTIONS"]
        password = options.get("password", settings_dict["PASSWORD"])
        if password:
            # The connector adds exactly this argument; the client reads MYSQL_PWD instead.
            args = [a for a in args if a != f"--password={password}"]
            env = {**(env or {}), "MYSQL_PWD": str(password)}
        return args, env


class DatabaseCreation(TestDatabasesMixin, ConnectorCreation):
    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        # The test database's pools and monitor go first (Django's PostgreSQL backend
        # closes its pool there too): nothing of the cluster outlives its database.
        self.connection.close_pool()
        super()._destroy_test_db(test_database_name, verbosity)


def _inherited(wrapper: Any, name: str) -> Any:
    """The connector backend's own cached property ``name``, computed for ``wrapper``."""
    return connector_base.DatabaseWrapper.__dict__[name].func(wrapper)


class DatabaseWrapper(ClusterWrapperMixin, connector_base.DatabaseWrapper):
    # The server's name, as Django's messages use it ("... 10.5 or later is required");
    # the connector's own display_name cannot be read (a cached_property over a
    # staticmethod).
    display_name = "MariaDB/MySQL"
    # What OPTIONS may hold besides replpool's keys: the driver's connection arguments,
    # and the isolation level the connector's backend reads itself.
    connection_options = frozenset(DEFAULT_CONFIGURATION) | {"isolation_level"}
    replica_connection_options = frozenset(DEFAULT_CONFIGURATION)
    options_owner = "mysql-connector-python or its Django backend"
    client_class = DatabaseClient
    creation_class = DatabaseCreation

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.routed:
            # The pools' connections are pure-Python: convert values as the connector
            # does for those (not with its C extension's helpers).
            self._use_pure = True

    # -- the cluster ---------------------------------------------------------------------

    def build_cluster(self) -> Cluster:
        params = self._connection_params()  # also validates and sets isolation_level
        if "converter_class" not in params:
            params["converter_class"] = connector_base.DjangoMySQLConverter  # as get_new_connection
        # init_connection_state's autocommit, applied by the driver as it connects (and
        # again after a session reset), so that a lease needs no SET.
        params["autocommit"] = bool(self.settings_dict["AUTOCOMMIT"])
        identity = {k: params.pop(k) for k in _IDENTITY if k in params}
        connect = {
            k: params.pop(k) for k in sorted(params)
            if k in _CONNECT_OPTIONS and _url_text(params[k]) is not None
        }
        shared = params  # every member's, in the pools' driver arguments
        primary = member_url(
            identity.get("unix_socket") or identity.get("host"), identity.get("port"),
            identity.get("user"), identity.get("password", identity.get("passwd")),
            identity.get("database", identity.get("db")), connect,
        )
        database = identity.get("database", identity.get("db"))
        replicas = []
        for i, rs in enumerate(replica_settings(self.alias, self.settings_dict)):
            own = {k: v for k, v in connect.items() if k != "unix_socket"}
            for key, value in rs["OPTIONS"].items():
                if key not in _CONNECT_OPTIONS or key in shared or _url_text(value) is None:
                    raise SettingsError(
                        f"DATABASES[{self.alias!r}]['OPTIONS']['replicas'][{i}]['OPTIONS'] sets "
                        f"{key!r}; a replica may set only how to reach and log in to it, as "
                        f"text, numbers or booleans ({', '.join(sorted(_CONNECT_OPTIONS))}); "
                        "the session's options are the primary's", E_REPLICAS,
                    )
                own[key] = value
            replicas.append(member_url(
                str(rs.get("HOST") or ""), rs.get("PORT"), rs.get("USER"), rs.get("PASSWORD"),
                database, own,
            ))
        return engine_cluster(
            self.alias, self.settings_dict["OPTIONS"], primary, replicas, shared,
            configurer(self._session_statements()), "the connector's backend",
        )

    def _session_statements(self) -> list[str]:
        """What the backend's ``init_connection_state`` runs on a new connection. It
        sets ``sql_auto_is_null`` only where the server enables it, which it learns
        with a query through the alias; here it is set on every connection (the same
        end state, without that query from a pool's thread)."""
        statements = ["SET SESSION sql_auto_is_null = 0"]
        if self.isolation_level:
            statements.append(
                f"SET SESSION TRANSACTION ISOLATION LEVEL {self.isolation_level.upper()}"
            )
        return statements

    # -- connections ------------------------------------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not self.routed:
            return super().get_new_connection(conn_params)
        del conn_params  # the cluster has them; a frame's variables show on error pages
        return self.routed_connection()

    def init_connection_state(self) -> None:
        if not self.routed:
            return super().init_connection_state()
        # Each pooled connection was configured when its pool opened it; Django's
        # connect() has set autocommit on the routed connection already.

    # What every member shares, asked of any of them (a replica while no primary is
    # reachable), as the connector's backend asks its own connection.

    @cached_property
    def mysql_server_info(self) -> Any:
        if not self.routed:
            return _inherited(self, "mysql_server_info")
        with self.temporary_connection():  # type: ignore[operator]  # (the connector's __getattr__)
            return self.member_connection().server_info

    @cached_property
    def mysql_version(self) -> tuple[int, ...]:
        if not self.routed:
            return _inherited(self, "mysql_version")
        with self.temporary_connection():  # type: ignore[operator]
            return tuple(self.member_connection().server_version)

    @cached_property
    def mysql_server_data(self) -> dict[str, Any]:
        """What the connector's backend reads of the server for its features (version,
        SQL mode, default storage engine, ``sql_auto_is_null``, ``lower_case_table_names``,
        whether time zone tables are loaded): the same, asked of any member (Django's
        model checks read it at start-up, before any request)."""
        if not self.routed:
            return _inherited(self, "mysql_server_data")  # type: ignore[no-any-return]
        with self.temporary_connection():  # type: ignore[operator]
            cursor = self.member_connection().cursor()
            try:
                cursor.execute(
                    "SELECT VERSION(), @@sql_mode, @@default_storage_engine, @@sql_auto_is_null,"
                    " @@lower_case_table_names,"
                    " CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'UTC') IS NOT NULL"
                )
                version, mode, engine, auto_is_null, lower_case, zoneinfo = cursor.fetchone()
            finally:
                cursor.close()
        return {
            "version": version, "sql_mode": mode, "default_storage_engine": engine,
            "sql_auto_is_null": bool(auto_is_null), "lower_case_table_names": bool(lower_case),
            "has_zoneinfo_database": bool(zoneinfo),
        }

    @cached_property
    def sql_mode(self) -> set[str]:
        if not self.routed:
            return _inherited(self, "sql_mode")
        with self.temporary_connection():  # type: ignore[operator]
            return set(self.member_connection().sql_mode.split(","))

    # -- cursors ------------------------------------------------------------------------------

    def create_cursor(self, name: Any = None) -> Any:
        if not self.routed:
            return super().create_cursor(name)
        # The connector has no server-side cursors (it ignores name): route them all.
        return self.routing_cursor()

    def make_plain_cursor(self, conn: Connection) -> Any:
        # What the backend's create_cursor makes of its connection.
        return connector_base.CursorWrapper(conn.cursor())

    def primary_usable(self, conn: Connection) -> bool:
        # What the backend's ping would tell: whether the server is still there.
        return bool(_ENGINE.alive(conn))

    def is_read_only_error(self, exc: BaseException) -> bool:
        return _ENGINE.is_read_only_error(exc)

    def is_retryable_read(self, exc: BaseException, conn: Any) -> bool:
        return _ENGINE.is_retryable_read(exc, conn, True)  # the cursor asks for replica reads

    def closed_cursor_error(self, connection_closed: bool = False) -> BaseException:
        # The driver's own errors and words.
        if connection_closed:
            return mysql.connector.errors.OperationalError("MySQL Connection not available")
        return mysql.connector.errors.ProgrammingError("Cursor is not connected")
