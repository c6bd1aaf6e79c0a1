"""Several labs at once: the shard clusters of a sharded application, each a primary
with its replicas, started (and stopped) concurrently."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from ._base import Lab, parallel
from ._errors import LabError


def _lab_class(engine: str) -> type[Lab]:
    if engine == "postgresql":
        from ._postgres import PostgresLab

        return PostgresLab
    if engine == "mariadb":
        from ._mariadb import MariaDBLab

        return MariaDBLab
    raise LabError(f"unknown lab engine {engine!r}; use 'postgresql' or 'mariadb'")


class ShardLab:
    """``shards`` labs of one engine, each a primary and ``replicas`` replicas::

        with ShardLab(shards=3, replicas=1) as lab:      # about 2-4 s on two CPUs
            lab.shards[0].primary.url                    # the first shard's primary
            clusters = lab.clusters()                    # Cluster objects shard1..shard3
            lab.shards[1].pause_replication(lab.shards[1].replicas[0])

    Each shard is an ordinary :class:`PostgresLab` or :class:`MariaDBLab` with all its
    faults; :meth:`heal` heals them all. Extra keyword arguments go to every lab.
    """

    def __init__(self, shards: int = 2, replicas: int = 1, *, engine: str = "postgresql", **options: Any) -> None:
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise LabError(f"shards must be a whole number >= 1, not {shards!r}")
        cls = _lab_class(engine)
        self.engine = engine
        self.shards: list[Lab] = [cls(replicas, **options) for _ in range(shards)]
        # One password for the application user on every shard, as an application
        # configured once for all its shards would have it.
        self.password = self.shards[0].password
        for lab in self.shards:
            lab.password = self.password

    def start(self) -> Self:
        """Start every shard's lab at once; if one fails, stop them all and raise."""
        try:
            parallel([lab.start for lab in self.shards])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        parallel([lab.stop for lab in self.shards])

    def heal(self, timeout: float = 30.0) -> None:
        """Undo every fault but promote, on every shard; wait for their replicas."""
        parallel([lambda lab=lab: lab.heal(timeout) for lab in self.shards])  # type: ignore[misc]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clusters(self, prefix: str = "shard", **cluster_options: Any) -> list[Any]:
        """Unopened :class:`replpool.Cluster` objects, one per shard, named
        ``prefix1``, ``prefix2``..., over each lab's members (application user)."""
        from .._cluster import Cluster

        return [
            Cluster(lab.primary.url, [r.url for r in lab.replicas], name=name, **cluster_options)
            for name, lab in zip(self.aliases(prefix), self.shards)
        ]

    def each(self, func: Callable[[Lab], object]) -> None:
        """Run ``func(lab)`` on every shard's lab at once."""
        parallel([lambda lab=lab: func(lab) for lab in self.shards])  # type: ignore[misc]

    def aliases(self, prefix: str = "shard") -> list[str]:
        """The shards' names: ``prefix1``, ``prefix2``... (as :meth:`clusters` names them)."""
        return [f"{prefix}{i + 1}" for i in range(len(self.shards))]

    def django_databases(self, default: str = "main") -> dict[str, dict[str, Any]]:
        """Django ``DATABASES`` for a sharded project on this lab, with replpool's
        engine: ``shard1``, ``shard2``... are each shard's ``app`` database (listing
        its replicas), and ``default`` (what is not sharded) is the database
        ``default`` on the first shard's servers, which must exist: make it with
        ``lab.shards[0].create_database(default)``. (Not a shard's own database: each
        alias keeps its own ``django_migrations`` table, so two aliases cannot share
        one.) It holds the password: a lab's throwaway one."""
        out = {"default": self.shards[0].django_databases([default])[default]}
        for alias, lab in zip(self.aliases(), self.shards):
            out[alias] = lab.django_databases()["default"]
        return out

    def django_sharding(self, logical_shards: int = 480) -> dict[str, Any]:
        """``REPLPOOL_SHARDING`` over :meth:`django_databases`' shards, without models
        (the project names its own: ``{"shop.Customer": "id"}``)."""
        return {"databases": self.aliases(), "logical_shards": logical_shards, "models": {}}

    def describe(self) -> str:
        return "\n\n".join(f"{name}: {lab.describe()}" for name, lab in zip(self.aliases(), self.shards))

    def __repr__(self) -> str:
        return f"<ShardLab {self.engine} shards={len(self.shards)}>"
