"""Replica lag in seconds, measured against the primary's own recent positions.

The monitor records each new primary position with the time it saw it. A replica whose
applied position does not cover the primary's position of time ``t`` misses something
the primary had at ``t``, so it is at least ``now - t`` behind. This works the same for
every engine, needs no clock on the servers, and does not grow on an idle primary the
way ``now() - pg_last_xact_replay_timestamp()`` or ``Seconds_Behind_Master`` can. Its
resolution is the poll interval.
"""

from __future__ import annotations

from collections import deque

from ._positions import Position


class PrimaryHistory:
    """The primary's positions over the last ``horizon`` seconds, each with the time it
    was first seen (positions that did not move are not repeated)."""

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self._entries: deque[tuple[float, Position]] = deque()

    def add(self, at: float, position: Position) -> None:
        if self._entries and self._entries[-1][1] == position:
            return
        if self._entries and not position.covers(self._entries[-1][1]):
            # The primary changed (failover) or went back: history says nothing anymore.
            self._entries.clear()
        self._entries.append((at, position))
        while len(self._entries) > 1 and self._entries[1][0] < at - self.horizon:
            self._entries.popleft()

    def clear(self) -> None:
        self._entries.clear()

    def lag_seconds(self, replica: Position, at: float) -> float | None:
        """How far behind a replica at ``replica`` (sampled at ``at``) is at least; None
        when there is no history to judge by."""
        if not self._entries:
            return None
        for seen_at, position in self._entries:
            if not replica.covers(position):
                return max(0.0, at - seen_at)
        return 0.0

    def __len__(self) -> int:
        return len(self._entries)
