"""replpool: use a primary and its replicas the way you would use a single database.

    import replpool

    with replpool.Cluster("postgresql://app@db1/app", ["postgresql://app@db2/app"]) as db:
        with db.connection() as conn:                  # the primary
            conn.execute("INSERT ...")
        with db.connection(read_only=True) as conn:    # a replica that has this write
            conn.execute("SELECT ...")
"""

from __future__ import annotations

from ._aio import AsyncCluster
from ._cluster import Cluster
from ._errors import (
    ConfigurationError,
    Error,
    NoPrimaryAvailable,
    PoolTimeout,
    TokenError,
    WriteInProgress,
)
from ._placement import partition_hash, shard_for
from ._positions import LSN, MariaDBGTID, MySQLGTIDSet
from ._routing import Reason
from ._session import (
    Consistency,
    Level,
    Session,
    consistency,
    current_consistency,
    current_session,
    current_token,
    pinned_to_master,
    pinned_to_primary,
    session,
)
from ._shardmap import (
    DirectoryPlacement,
    HashPlacement,
    RangePlacement,
    ShardIds,
    ShardKeyError,
    ShardMap,
)
from ._shards import Misplaced, ShardError, ShardRow, ShardSet
from ._status import ClusterStatus, MemberStatus, PoolStatus

__all__ = [
    "LSN",
    "AsyncCluster",
    "Cluster",
    "ClusterStatus",
    "ConfigurationError",
    "Consistency",
    "DirectoryPlacement",
    "Error",
    "HashPlacement",
    "Level",
    "MariaDBGTID",
    "MemberStatus",
    "Misplaced",
    "MySQLGTIDSet",
    "NoPrimaryAvailable",
    "PoolStatus",
    "PoolTimeout",
    "RangePlacement",
    "Reason",
    "Session",
    "ShardError",
    "ShardIds",
    "ShardKeyError",
    "ShardMap",
    "ShardRow",
    "ShardSet",
    "TokenError",
    "WriteInProgress",
    "consistency",
    "current_consistency",
    "current_session",
    "current_token",
    "partition_hash",
    "pinned_to_master",
    "pinned_to_primary",
    "session",
    "shard_for",
]
