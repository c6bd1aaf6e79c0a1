"""Hooks through which replpool reports what it does, for metrics and the like.

Observers are process-wide: every cluster reports to every registered observer. The
hot path (checkouts) calls them inline, so an observer must be quick and must not
raise; the monitor calls :meth:`Observer.round` once per poll round with the whole
picture, which is where gauges are refreshed (inline, so that prometheus_client's
multiprocess mode, which ignores custom collectors, sees them too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._routing import Reason, Topology
from ._session import Level


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One member pool's state, from psycopg_pool's statistics."""

    member: str
    min_size: int
    max_size: int
    idle: int
    in_use: int
    waiting: int


class Observer:
    """Base class: every hook does nothing. Override the ones you need."""

    def routed(
        self, cluster: str, member: str, target: str, reason: Reason, level: Level | None = None
    ) -> None:
        """A checkout went to ``member``; ``target`` is "primary" or "replica";
        ``level``: the consistency level of a read (None for a write)."""

    def checkout_waited(self, cluster: str, member: str, seconds: float) -> None:
        """Time a checkout spent getting a connection from the member's pool."""

    def checkout_failed(self, cluster: str, member: str, kind: str) -> None:
        """``kind``: "timeout" (no connection in time), "dead" (a pooled connection was
        found dead), "no_primary" (none reachable)."""

    def causal_waited(self, cluster: str, seconds: float, outcome: str) -> None:
        """A read waited for a replica (``causal_wait``); ``outcome``: "replica" or
        "primary"."""

    def poll_failed(self, cluster: str, member: str) -> None:
        """A monitor poll of ``member`` failed or timed out."""

    def failover(self, cluster: str, old: str | None, new: str) -> None:
        """The member serving writes changed."""

    def round(
        self, cluster: str, engine: str, topology: Topology, pools: Sequence[PoolSnapshot]
    ) -> None:
        """The monitor finished a poll round: ``topology`` is what it now publishes."""

    def closed(self, cluster: str, members: Sequence[str]) -> None:
        """The cluster was closed: what was reported about its members is over."""


_observers: list[Observer] = []


def add_observer(observer: Observer) -> None:
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def observers() -> Sequence[Observer]:
    return _observers


def pool_snapshot(member: str, stats: Mapping[str, int]) -> PoolSnapshot:
    size = stats.get("pool_size", 0)
    idle = stats.get("pool_available", 0)
    return PoolSnapshot(
        member=member,
        min_size=stats.get("pool_min", 0),
        max_size=stats.get("pool_max", 0),
        idle=idle,
        in_use=max(0, size - idle),
        waiting=stats.get("requests_waiting", 0),
    )
