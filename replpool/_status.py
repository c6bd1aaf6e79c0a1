"""``Cluster.status()``: a typed, immutable snapshot of a cluster, for people and tools."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PoolStatus:
    """One member's connection pool (psycopg_pool's statistics, renamed plainly)."""

    min_size: int
    max_size: int
    size: int          # connections open, idle or in use
    idle: int
    in_use: int
    waiting: int       # requests waiting for a connection now
    requests: int      # checkouts served since the pool opened
    wait_ms: int       # total time requests spent waiting
    errors: int        # checkouts that failed (timeouts, too many waiting)
    connection_errors: int
    connections_lost: int

    @classmethod
    def from_stats(cls, stats: dict[str, int]) -> PoolStatus:
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        return cls(
            min_size=stats.get("pool_min", 0),
            max_size=stats.get("pool_max", 0),
            size=size,
            idle=idle,
            in_use=max(0, size - idle),
            waiting=stats.get("requests_waiting", 0),
            requests=stats.get("requests_num", 0),
            wait_ms=stats.get("requests_wait_ms", 0),
            errors=stats.get("requests_errors", 0),
            connection_errors=stats.get("connections_errors", 0),
            connections_lost=stats.get("connections_lost", 0) + stats.get("returns_bad", 0),
        )


@dataclass(frozen=True)
class MemberStatus:
    name: str                   # host:port
    role: str                   # primary (one member), replica, fenced, down, unknown
    up: bool
    eligible: bool              # a replica within the lag limits, serving reads
    position: str | None        # replay position (replica) or write position (primary)
    received: str | None        # what a replica has received, applied or not
    lag_seconds: float | None
    lag_bytes: int | None
    error: str | None           # why it is down
    pool: PoolStatus | None
    reads: int                  # read checkouts routed here
    writes: int                 # write checkouts routed here
    # Down for a reason waiting cannot fix: it refuses our login or connection options,
    # or it is the primary and lacks the database. The settings must change.
    refused: bool = False


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    engine: str
    primary: str | None
    members: tuple[MemberStatus, ...]
    # routing decisions: {"replica": {"fresh_replica": 12}, "primary": {"write": 3, ...}}
    routing: dict[str, dict[str, int]] = field(default_factory=dict)
    # reads by consistency level: {"session": {"replica": 40, "primary": 2}, ...}
    reads_by_level: dict[str, dict[str, int]] = field(default_factory=dict)
    failovers: int = 0
    monitor_rounds: int = 0
    poll_errors: int = 0

    def member(self, name: str) -> MemberStatus:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(f"no member {name!r} in cluster {self.name!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data, ready for ``json.dumps``."""
        return asdict(self)
