"""``ClusterStatus`` as a table for people: what ``python -m replpool status`` prints.

A pure function of the status, so it can be tested without servers. It prints what the
status holds and nothing else: member names are ``host:port`` and errors are the
monitor's sanitized descriptions, so no connection string (and no password) can appear.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._status import ClusterStatus, MemberStatus

COLUMNS = (
    "MEMBER", "ROLE", "UP", "POSITION", "LAG S", "LAG BYTES", "IDLE", "IN USE", "WAITING",
    "READS", "WRITES",
)
# Right-aligned columns: numbers.
_NUMERIC = frozenset({"LAG S", "LAG BYTES", "IDLE", "IN USE", "WAITING", "READS", "WRITES"})
_NONE = "-"


HEALTHY, DEGRADED, NO_PRIMARY, CONFIGURATION = 0, 1, 2, 3


def health(status: ClusterStatus) -> tuple[int, str]:
    """``(code, reason)`` for scripts and probes (the status command's exit status):
    0 healthy (a primary; every member up, replicas within the lag limits), 1 degraded
    (a primary, but a member is down, lagging, fenced or of unknown role), 2 no primary
    reachable, 3 configuration: a member refuses the connection settings (waiting
    cannot fix that, so whatever else holds, the settings must change first). Pure."""
    refused = [m.name for m in status.members if m.refused]
    if refused:
        return CONFIGURATION, "; ".join(f"{name} refuses the connection settings" for name in refused)
    if status.primary is None:
        return NO_PRIMARY, "no primary is reachable"
    problems = []
    for m in status.members:
        if not m.up:
            problems.append(f"{m.name} is down")
        elif m.role == "replica" and not m.eligible:
            problems.append(f"{m.name} is lagging")
        elif m.role not in ("primary", "replica"):
            problems.append(f"{m.name} is {m.role}")
    if problems:
        return DEGRADED, "; ".join(problems)
    return HEALTHY, "healthy"


def _role(m: MemberStatus) -> str:
    # A replica that is up but not eligible is over a lag limit: it serves no reads,
    # which is the first thing to know about it.
    if m.role == "replica" and m.up and not m.eligible:
        return "replica, lagging"
    return m.role


def _lag_seconds(m: MemberStatus) -> str:
    if m.role == "primary":
        return _NONE
    return _NONE if m.lag_seconds is None else f"{m.lag_seconds:.3f}"


def _lag_bytes(m: MemberStatus) -> str:
    if m.role == "primary":
        return _NONE
    return _NONE if m.lag_bytes is None else str(m.lag_bytes)


def _row(m: MemberStatus) -> list[str]:
    pool = m.pool
    return [
        m.name,
        _role(m),
        "yes" if m.up else "no",
        m.position or _NONE,  # a MariaDB member that applied nothing has the empty position
        _lag_seconds(m),
        _lag_bytes(m),
        str(pool.idle) if pool is not None else _NONE,
        str(pool.in_use) if pool is not None else _NONE,
        str(pool.waiting) if pool is not None else _NONE,
        str(m.reads),
        str(m.writes),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(w) if name in _NUMERIC else cell.ljust(w)
            for cell, w, name in zip(row, widths, header)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_status(status: ClusterStatus) -> str:
    """A heading line, one row per member, then why each down member is down."""
    primary = status.primary if status.primary is not None else "none reachable"
    heading = (
        f"cluster {status.name} ({status.engine})  primary: {primary}  "
        f"failovers: {status.failovers}  poll errors: {status.poll_errors}  "
        f"monitor rounds: {status.monitor_rounds}"
    )
    lines = [heading, ""]
    lines += _table(COLUMNS, [_row(m) for m in status.members])
    errors = [m for m in status.members if not m.up and m.error]
    if errors:
        lines.append("")
        lines += [f"{m.name}: {m.error}" for m in errors]
    return "\n".join(lines) + "\n"
