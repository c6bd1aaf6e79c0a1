"""Which member is what: the role decision, a pure function of what each member says
of itself.

PostgreSQL says it plainly: ``pg_is_in_recovery()`` is true on a standby and nothing
else. MariaDB and MySQL do not: a replica is a server with a replication connection to
another (``SHOW ALL SLAVES STATUS`` / ``SHOW REPLICA STATUS``), and ``read_only`` is only
a setting, off by default and often left off on replicas. So, as MaxScale's MariaDB
Monitor does (it builds the replication graph from each server's slave connections,
matching each connection's master to a monitored server by server id, else by host and
port), a member is decided from its replication first:

- it replicates from another member of the cluster: a **replica**, whatever its
  ``read_only`` (one with ``read_only`` off is flagged: a write there is not on the
  primary and breaks replication when it conflicts with one that is);
- it is in a replication cycle with other members (dual-primary setups, one of them
  written to): ``read_only`` decides between the members of the cycle;
- it replicates only from servers outside the cluster (the cluster's primary may itself
  be fed from elsewhere): ``read_only`` decides;
- it replicates from nobody: a **candidate** for primary if it accepts writes, else
  **fenced** (a read-only server fed by nothing: a demoted primary, or a replica whose
  replication was removed; it serves nothing);
- its replication cannot be read (the monitor's user lacks ``SLAVE MONITOR`` /
  ``REPLICATION CLIENT``): ``read_only`` decides, as before replpool read replication.

Which candidate becomes the primary is the monitor's choice (it keeps the one it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["candidate", "replica", "fenced"]


@dataclass(frozen=True, slots=True)
class Source:
    """A replication connection of a member: the server it replicates from, as the
    member names it (``Master_Host``/``Master_Port``), and that server's id once the
    connection has reached it (``Master_Server_Id``; None before)."""

    host: str
    port: int
    server_id: int | None = None
    channel: str = ""  # the connection's name (MariaDB) or channel (MySQL)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one member says of itself.

    ``up``: it answered (a member that does not still counts as the source a replica
    names: the primary may be down; give its last known ``server_id``).
    ``in_recovery``: PostgreSQL's answer (None for MariaDB/MySQL). ``sources``: its
    replication connections (None: not readable by the monitor's user). ``read_only``:
    the setting (MySQL: ``read_only`` or ``super_read_only``)."""

    host: str
    port: int
    in_recovery: bool | None = None
    read_only: bool | None = None
    sources: tuple[Source, ...] | None = None
    server_id: int | None = None
    up: bool = True


@dataclass(frozen=True, slots=True)
class Verdict:
    """The role a member's claim earns it. ``source``: the member it replicates from
    (an index), when it replicates from one. ``writable``: a replica whose ``read_only``
    is off. ``external``: replicates only from servers outside the cluster.
    ``by_read_only``: its replication could not be read; decided by ``read_only``."""

    kind: Kind
    source: int | None = None
    writable: bool = False
    external: bool = False
    by_read_only: bool = False


def _same_host(a: str, b: str) -> bool:
    a, b = a.strip("[]").lower(), b.strip("[]").lower()
    loopback = {"localhost", "127.0.0.1", "::1"}
    return a == b or (a in loopback and b in loopback)


def source_member(source: Source, claims: Sequence[Claim], me: int) -> int | None:
    """The member a replication connection points at, answering or not: by server id
    when the connection has reached its server (unique in a replication topology), else
    by host and port."""
    if source.server_id:
        for i, c in enumerate(claims):
            if i != me and c.server_id == source.server_id:
                return i
    for i, c in enumerate(claims):
        if i != me and c.port == source.port and _same_host(c.host, source.host):
            return i
    return None


def decide_roles(claims: Sequence[Claim]) -> list[Verdict | None]:
    """A verdict for each member's claim (None for a member that does not answer: its
    role is unknown). Pure; see the module doc for the rules."""
    n = len(claims)
    edges: list[list[int]] = [[] for _ in range(n)]
    for i, c in enumerate(claims):
        if c.up and c.in_recovery is None and c.sources:
            for s in c.sources:
                j = source_member(s, claims, i)
                if j is not None and j not in edges[i]:
                    edges[i].append(j)

    def in_cycle(start: int) -> bool:
        seen: set[int] = set()
        stack = list(edges[start])
        while stack:
            k = stack.pop()
            if k == start:
                return True
            if k not in seen:
                seen.add(k)
                stack.extend(edges[k])
        return False

    out: list[Verdict | None] = []
    for i, c in enumerate(claims):
        if not c.up:
            out.append(None)
            continue
        if c.in_recovery is not None:
            out.append(Verdict("replica" if c.in_recovery else "candidate"))
            continue
        writable = c.read_only is False
        if c.sources is None:
            out.append(Verdict("candidate" if writable else "replica", by_read_only=True))
            continue
        if not c.sources:
            out.append(Verdict("candidate" if writable else "fenced"))
            continue
        if not edges[i]:
            out.append(Verdict("candidate" if writable else "replica", external=True))
            continue
        if in_cycle(i) and writable:
            out.append(Verdict("candidate", source=edges[i][0]))
            continue
        out.append(Verdict("replica", source=edges[i][0], writable=writable))
    return out
