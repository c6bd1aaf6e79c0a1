"""Prometheus metrics for replpool, through prometheus_client.

::

    import replpool.metrics
    replpool.metrics.enable()                 # into prometheus_client's default registry
    replpool.metrics.start_http_server(9187)  # or serve generate_latest() yourself

Everything is reported by one :class:`PrometheusObserver`, an
:class:`replpool._observe.Observer`: counters and histograms are updated inline by the
hooks the checkout path and the monitor call, and gauges are set once per monitor poll
round from the topology the monitor just published. Gauges are *set*, never computed at
scrape time (no custom collector, no ``set_function``), because prometheus_client's
multiprocess mode (gunicorn and friends) only sees values written to its files.

Every gauge names its ``multiprocess_mode``, chosen for several worker processes that
each run a cluster against the same servers:

- what a monitor observes of the servers (up, role, lag, positions) is ``mostrecent``:
  every worker polls the same servers, so the freshest observation is the truth, and a
  worker that died stops writing and is overtaken by the live ones within one round;
- pool sizes are ``livesum``: each worker has its own pools, and the server sees the
  sum of them (gunicorn must call ``prometheus_client.multiprocess.mark_process_dead``
  in its ``child_exit`` hook, as for any ``live*`` gauge).

Labels are bounded: ``cluster`` (the ``Cluster`` name), ``member`` (``host:port``, never
a URL), ``role``, ``state``, ``target``, ``reason`` (a :class:`replpool.Reason`),
``kind`` and ``outcome``. No query text, user name or password ever becomes a label.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ._errors import ConfigurationError
from ._observe import Observer, PoolSnapshot, add_observer, remove_observer
from ._positions import LSN, MariaDBGTID, MySQLGTIDSet
from ._routing import Reason, Topology
from ._session import Level

__all__ = [
    "METRICS",
    "MetricSpec",
    "PrometheusObserver",
    "disable",
    "enable",
    "enabled",
    "generate_latest",
    "position_number",
    "start_http_server",
]

logger = logging.getLogger("replpool.metrics")

PREFIX = "replpool_"
ROLES = ("primary", "replica", "unknown", "fenced", "down")
POOL_STATES = ("idle", "in_use")
# Checkouts usually find an idle connection in microseconds; the long tail (a pool at
# max_size, a reconnect) is what the upper buckets are for.
CHECKOUT_WAIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
)
# A causal wait lasts a few monitor intervals at most, up to the causal_wait setting.
CAUSAL_WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


@dataclass(frozen=True)
class MetricSpec:
    """One metric as exposed: ``name`` is the family name (a counter's samples add
    ``_total``; a histogram's ``_bucket``, ``_count`` and ``_sum``). The README's table
    and the Grafana dashboard are checked against this list by the tests."""

    name: str
    type: str  # "counter", "gauge" or "histogram"
    labels: tuple[str, ...]
    help: str
    multiprocess_mode: str | None = None  # gauges only
    buckets: tuple[float, ...] | None = None  # histograms only

    @property
    def exposed_name(self) -> str:
        return self.name + "_total" if self.type == "counter" else self.name


METRICS: tuple[MetricSpec, ...] = (
    # -- routing and checkouts (inline, from the checkout path) ----------------------------
    MetricSpec(
        "replpool_routed", "counter", ("cluster", "member", "target", "reason"),
        "Checkouts routed to a member: target is primary or replica, reason says why "
        "(a replpool.Reason value).",
    ),
    MetricSpec(
        "replpool_reads", "counter", ("cluster", "level", "target"),
        "Reads by consistency level (strong, session, bounded, eventual): target is primary "
        "or replica.",
    ),
    MetricSpec(
        "replpool_checkout_wait_seconds", "histogram", ("cluster", "member"),
        "Time a successful checkout spent getting a connection from the member's pool.",
        buckets=CHECKOUT_WAIT_BUCKETS,
    ),
    MetricSpec(
        "replpool_checkout_errors", "counter", ("cluster", "member", "kind"),
        "Failed checkouts by kind: timeout (no connection became free in time), dead "
        "(a pooled connection was found dead), no_primary (none reachable; member is empty).",
    ),
    MetricSpec(
        "replpool_causal_wait_seconds", "histogram", ("cluster", "outcome"),
        "Time a read waited (causal_wait) for a replica to apply the session's writes; "
        "outcome is replica (one caught up) or primary (gave up).",
        buckets=CAUSAL_WAIT_BUCKETS,
    ),
    # -- the monitor (inline) --------------------------------------------------------------
    MetricSpec(
        "replpool_poll_errors", "counter", ("cluster", "member"),
        "Monitor polls of the member that failed or timed out.",
    ),
    MetricSpec(
        "replpool_failovers", "counter", ("cluster",),
        "Times the member serving writes changed, as seen by this process's monitor.",
    ),
    MetricSpec(
        "replpool_monitor_rounds", "counter", ("cluster",),
        "Monitor poll rounds completed (a rate of zero means the gauges are stale).",
    ),
    # -- gauges, set once per poll round ---------------------------------------------------
    MetricSpec(
        "replpool_member_up", "gauge", ("cluster", "member"),
        "1 if the member answers the monitor's polls, else 0.",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_member_role", "gauge", ("cluster", "member", "role"),
        "1 for the member's current role, 0 for the others: primary (exactly one member, "
        "the one serving writes), replica, fenced (answers, refuses writes, replicates "
        "from no one), down (does not answer), unknown (not polled yet, or a second "
        "member claiming to be primary).",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_member_eligible", "gauge", ("cluster", "member"),
        "1 if the member is a replica within the lag limits (it may serve reads), else 0.",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_replica_lag_seconds", "gauge", ("cluster", "member"),
        "How far behind the primary the replica is, in seconds (0 for the primary; NaN "
        "while unknown, e.g. the member is down).",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_replica_lag_bytes", "gauge", ("cluster", "member"),
        "How far behind the primary the replica is, in bytes of log (0 for the primary; "
        "NaN while unknown or when the engine cannot tell, as for GTIDs).",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_member_position", "gauge", ("cluster", "member"),
        "The member's replication position as a number: the replayed position of a "
        "replica, the write position of the primary. PostgreSQL: the LSN in bytes; "
        "MariaDB/MySQL: the number of transactions of its GTID position.",
        multiprocess_mode="mostrecent",
    ),
    MetricSpec(
        "replpool_pool_connections", "gauge", ("cluster", "member", "state"),
        "Connections open in the member's pool, by state (idle or in_use).",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "replpool_pool_min_connections", "gauge", ("cluster", "member"),
        "Connections the member's pool keeps open (min_size).",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "replpool_pool_max_connections", "gauge", ("cluster", "member"),
        "Connections the member's pool may open (max_size).",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "replpool_pool_waiting_clients", "gauge", ("cluster", "member"),
        "Requests waiting for a connection from the member's pool.",
        multiprocess_mode="livesum",
    ),
)


def position_number(position: object) -> int | None:
    """A replication position as one number that grows with the log, for a gauge.

    PostgreSQL: the LSN itself, a byte offset (so its rate is WAL bytes per second).
    MariaDB: the sum of the sequence numbers over replication domains; MySQL: the count
    of transactions in the GTID set. Both grow by one per transaction, so their rate is
    transactions per second; they do not order positions (GTIDs are only partially
    ordered), which a gauge does not need. None for None or an unknown type.
    """
    if isinstance(position, LSN):
        return position.value
    if isinstance(position, MariaDBGTID):
        return sum(seq for _, _, seq in position.domains)
    if isinstance(position, MySQLGTIDSet):
        return sum(hi - lo + 1 for _, intervals in position.sources for lo, hi in intervals)
    return None


def _number(value: float | int | None) -> float:
    # Unknown is NaN rather than a missing series: in multiprocess mode a series cannot
    # be removed (its value lives on in the worker's file), so it must say "unknown".
    return math.nan if value is None else float(value)


class PrometheusObserver(Observer):
    """Turns replpool's observer hooks into prometheus_client metrics in ``registry``.

    Hooks on the checkout path cache their labelled children, so a checkout costs a
    dict lookup and an increment. No hook raises: a failure is logged once and the
    request goes on (metrics must never break the application).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.metrics: dict[str, Any] = {}
        try:
            for spec in METRICS:
                self.metrics[spec.name] = _make(spec, registry)
        except BaseException:
            # A name already taken in the registry: leave it as it was.
            self.unregister()
            raise
        m = self.metrics
        self._routed: Counter = m["replpool_routed"]
        self._reads: Counter = m["replpool_reads"]
        self._checkout_wait: Histogram = m["replpool_checkout_wait_seconds"]
        self._checkout_errors: Counter = m["replpool_checkout_errors"]
        self._causal_wait: Histogram = m["replpool_causal_wait_seconds"]
        self._poll_errors: Counter = m["replpool_poll_errors"]
        self._failovers: Counter = m["replpool_failovers"]
        self._rounds: Counter = m["replpool_monitor_rounds"]
        self._up: Gauge = m["replpool_member_up"]
        self._role: Gauge = m["replpool_member_role"]
        self._eligible: Gauge = m["replpool_member_eligible"]
        self._lag_seconds: Gauge = m["replpool_replica_lag_seconds"]
        self._lag_bytes: Gauge = m["replpool_replica_lag_bytes"]
        self._position: Gauge = m["replpool_member_position"]
        self._pool_connections: Gauge = m["replpool_pool_connections"]
        self._pool_min: Gauge = m["replpool_pool_min_connections"]
        self._pool_max: Gauge = m["replpool_pool_max_connections"]
        self._pool_waiting: Gauge = m["replpool_pool_waiting_clients"]
        # Labelled children of the hot-path metrics. Two threads may race to fill an
        # entry; labels() returns the same child to both, so that is harmless.
        self._routed_children: dict[tuple[str, str, str, Reason], Any] = {}
        self._read_children: dict[tuple[str, Level, str], Any] = {}
        self._wait_children: dict[tuple[str, str], Any] = {}
        self._failed_once = False

    def unregister(self) -> None:
        for metric in self.metrics.values():
            try:
                self.registry.unregister(metric)
            except KeyError:
                pass

    def _failed(self, hook: str) -> None:
        if not self._failed_once:
            self._failed_once = True
            logger.exception("replpool metrics: the %s hook failed; metrics may be incomplete", hook)

    # -- hooks on the checkout path ------------------------------------------------------

    def routed(
        self, cluster: str, member: str, target: str, reason: Reason, level: Level | None = None
    ) -> None:
        try:
            key = (cluster, member, target, reason)
            child = self._routed_children.get(key)
            if child is None:
                child = self._routed.labels(cluster, member, target, str(reason))
                self._routed_children[key] = child
            child.inc()
            if level is not None:
                rkey = (cluster, level, target)
                child = self._read_children.get(rkey)
                if child is None:
                    child = self._reads.labels(cluster, level.value, target)
                    self._read_children[rkey] = child
                child.inc()
        except Exception:
            self._failed("routed")

    def checkout_waited(self, cluster: str, member: str, seconds: float) -> None:
        try:
            key = (cluster, member)
            child = self._wait_children.get(key)
            if child is None:
                child = self._checkout_wait.labels(cluster, member)
                self._wait_children[key] = child
            child.observe(seconds)
        except Exception:
            self._failed("checkout_waited")

    def checkout_failed(self, cluster: str, member: str, kind: str) -> None:
        try:
            self._checkout_errors.labels(cluster, member, kind).inc()
        except Exception:
            self._failed("checkout_failed")

    def causal_waited(self, cluster: str, seconds: float, outcome: str) -> None:
        try:
            self._causal_wait.labels(cluster, outcome).observe(seconds)
        except Exception:
            self._failed("causal_waited")

    # -- hooks of the monitor ------------------------------------------------------------

    def poll_failed(self, cluster: str, member: str) -> None:
        try:
            self._poll_errors.labels(cluster, member).inc()
        except Exception:
            self._failed("poll_failed")

    def failover(self, cluster: str, old: str | None, new: str) -> None:
        try:
            self._failovers.labels(cluster).inc()
        except Exception:
            self._failed("failover")

    def round(
        self, cluster: str, engine: str, topology: Topology, pools: Sequence[PoolSnapshot]
    ) -> None:
        try:
            self._round(cluster, topology, pools)
        except Exception:
            self._failed("round")

    def _round(self, cluster: str, topology: Topology, pools: Sequence[PoolSnapshot]) -> None:
        for view in topology.members:
            member = view.name
            role = "primary" if view.index == topology.primary else view.role
            self._up.labels(cluster, member).set(1 if view.up else 0)
            for r in ROLES:
                self._role.labels(cluster, member, r).set(1 if r == role else 0)
            self._eligible.labels(cluster, member).set(1 if view.eligible and view.up else 0)
            if role == "primary" and view.up:
                lag_seconds: float | int | None = 0
                lag_bytes: float | int | None = 0
            else:
                lag_seconds, lag_bytes = view.lag_seconds, view.lag_bytes
            self._lag_seconds.labels(cluster, member).set(_number(lag_seconds))
            self._lag_bytes.labels(cluster, member).set(_number(lag_bytes))
            self._position.labels(cluster, member).set(_number(position_number(view.position)))
        for p in pools:
            self._pool_connections.labels(cluster, p.member, "idle").set(p.idle)
            self._pool_connections.labels(cluster, p.member, "in_use").set(p.in_use)
            self._pool_min.labels(cluster, p.member).set(p.min_size)
            self._pool_max.labels(cluster, p.member).set(p.max_size)
            self._pool_waiting.labels(cluster, p.member).set(p.waiting)
        self._rounds.labels(cluster).inc()


    def closed(self, cluster: str, members: Sequence[str]) -> None:
        """Drop the closed cluster's gauges (in multiprocess mode prometheus_client
        cannot remove a series; the last values stay until the worker exits)."""
        try:
            for member in members:
                for gauge in (self._up, self._eligible, self._lag_seconds, self._lag_bytes,
                              self._position, self._pool_min, self._pool_max, self._pool_waiting):
                    _remove(gauge, cluster, member)
                for r in ROLES:
                    _remove(self._role, cluster, member, r)
                for state in ("idle", "in_use"):
                    _remove(self._pool_connections, cluster, member, state)
        except Exception:
            self._failed("closed")


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def _make(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.type == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.type == "histogram":
        assert spec.buckets is not None
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    assert spec.type == "gauge" and spec.multiprocess_mode is not None
    return Gauge(
        spec.name, spec.help, spec.labels, registry=registry,
        multiprocess_mode=spec.multiprocess_mode,  # type: ignore[arg-type]
    )


# -- the public switch -----------------------------------------------------------------------

_lock = threading.Lock()
_observer: PrometheusObserver | None = None


def enable(registry: CollectorRegistry | None = None) -> PrometheusObserver:
    """Create replpool's metrics in ``registry`` (prometheus_client's default registry
    when None) and start reporting every cluster of this process into them.

    Idempotent: enabling again returns the same observer. Enabling into a different
    registry while enabled is refused (the metrics would be split between the two);
    call :func:`disable` first.
    """
    global _observer
    with _lock:
        if _observer is not None:
            if registry is not None and registry is not _observer.registry:
                raise ConfigurationError(
                    "replpool metrics are already enabled in another registry; call "
                    "replpool.metrics.disable() first"
                )
            return _observer
        observer = PrometheusObserver(prometheus_client.REGISTRY if registry is None else registry)
        add_observer(observer)
        _observer = observer
        return observer


def disable() -> None:
    """Stop reporting and remove replpool's metrics from their registry (so that
    :func:`enable` can create them afresh, in the same registry or another)."""
    global _observer
    with _lock:
        observer, _observer = _observer, None
    if observer is not None:
        remove_observer(observer)
        observer.unregister()


def enabled() -> PrometheusObserver | None:
    """The active observer, or None when metrics are not enabled."""
    return _observer


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode, when it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _exposition_registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    """What to expose: in multiprocess mode, a fresh registry that reads every worker's
    files (the in-process registry only knows this worker); otherwise the registry
    given, the one metrics are enabled in, or the default one."""
    if registry is not None:
        return registry
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        fresh = CollectorRegistry()
        multiprocess.MultiProcessCollector(fresh)
        return fresh
    observer = _observer
    return observer.registry if observer is not None else prometheus_client.REGISTRY


def generate_latest(registry: CollectorRegistry | None = None) -> bytes:
    """The text exposition of ``registry``; with None, of everything this process (or,
    when ``PROMETHEUS_MULTIPROC_DIR`` is set, every process sharing that folder)
    reports. Serve it with ``prometheus_client.CONTENT_TYPE_LATEST``."""
    return prometheus_client.generate_latest(_exposition_registry(registry))


def start_http_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:
    """Enable metrics (in ``registry``) if they are not, and serve them on
    ``http://addr:port/metrics`` from a daemon thread.

    Listens on loopback by default: metrics describe your database topology, so
    exposing them beyond the host is a choice to make explicitly. Returns what
    ``prometheus_client.start_http_server`` returns (the server and its thread), so the
    caller can ``server.shutdown()``.
    """
    observer = enable(registry)
    served = registry if registry is not None else (
        None if multiprocess_dir() is not None else observer.registry
    )
    return prometheus_client.start_http_server(port, addr=addr, registry=_exposition_registry(served))
