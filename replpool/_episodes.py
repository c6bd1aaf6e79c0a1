"""Conditions that last, logged once when they start and once when they end.

A periodic path (the monitor's polls, a pool's reconnection attempts, a status watch)
sees the same condition again and again: a member down, two members claiming to be
primary, a replica that accepts writes. Logging it at every sighting floods the log
(ten lines a second at the default poll interval) and hides what changed. An
:class:`Episodes` remembers which conditions are under way, so the caller logs a
condition when it begins and when it ends, with how long it lasted and how many times it
was seen meanwhile.

Pure state: no clock of its own, no logging; the caller passes ``now`` and logs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Episode:
    """One run of a condition: when it began (the caller's clock, in seconds) and how
    many times it was seen again after that first sighting."""

    since: float
    recurrences: int = 0

    def lasted(self, now: float) -> float:
        """Seconds from its start to ``now`` (never negative)."""
        return max(0.0, now - self.since)

    def summary(self, now: float, what: str = "times") -> str:
        """``"after 12.3 s (seen 41 more times)"``, for the line that logs its end."""
        return f"after {self.lasted(now):.1f} s (seen {self.recurrences} more {what})"


class Episodes(Generic[K]):
    """The conditions under way, by key (any hashable: a member's index, a tuple...).

    ``begin(key, now)`` is True when the condition starts (log it), False when it was
    already under way (counted as a recurrence). ``end(key, now)`` returns the episode
    that just ended (log its end), or None if none was under way. ``observe(key, on,
    now)`` does either from a boolean seen at each poll.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[K, Episode] = {}

    def begin(self, key: K, now: float) -> bool:
        episode = self._open.get(key)
        if episode is None:
            self._open[key] = Episode(now)
            return True
        episode.recurrences += 1
        return False

    def end(self, key: K, now: float) -> Episode | None:
        return self._open.pop(key, None)

    def observe(self, key: K, on: bool, now: float) -> tuple[bool, Episode | None]:
        """``(started, ended)``: whether the condition began at this sighting, and the
        episode that ended at it (at most one of the two)."""
        if on:
            return self.begin(key, now), None
        return False, self.end(key, now)

    def active(self, key: K) -> bool:
        return key in self._open

    def get(self, key: K) -> Episode | None:
        return self._open.get(key)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)
