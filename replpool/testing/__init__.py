"""Real replicated database servers on loopback, for testing applications (and
replpool itself) against replication lag, failures and failover.

    from replpool.testing import PostgresLab

    with PostgresLab(replicas=2) as lab:
        lab.primary.url          # postgresql://app:...@127.0.0.1:PORT/app
        lab.pause_replication(lab.replicas[0])
        ...

Nothing is left behind when the lab stops, or when the process that started it dies: a
small reaper process removes the servers and their folders, and the next lab to start
removes anything a killed run left.
"""

from __future__ import annotations

from ._base import Lab, LabMember, lab_root
from ._binaries import find_mariadb, find_postgres
from ._errors import LabError
from ._mariadb import MariaDBLab, MariaDBMember
from ._postgres import PostgresLab, PostgresMember
from ._shards import ShardLab

__all__ = [
    "Lab",
    "LabError",
    "LabMember",
    "MariaDBLab",
    "MariaDBMember",
    "PostgresLab",
    "PostgresMember",
    "ShardLab",
    "find_mariadb",
    "find_postgres",
    "lab_root",
]
