"""Member health: up until it fails, then down and probed with growing delays until it
answers again. Pure state; the monitor feeds it events and the clock. And what a
failure means for waiting (:class:`Failure`), which the engines tell from their errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(slots=True)
class Health:
    """``failed()`` takes a member out at once; while down it is probed after
    ``base_delay``, then twice as long each time, up to ``max_delay``; ``succeeded()``
    puts it back (the router still waits for it to be fresh)."""

    base_delay: float = 0.1
    max_delay: float = 2.0
    up: bool = True
    failures: int = 0
    down_since: float | None = None
    next_probe: float = 0.0
    last_error: str | None = None

    def failed(self, now: float, error: str) -> bool:
        """Record a failure; True if the member just went down."""
        went_down = self.up
        self.up = False
        self.failures += 1
        self.last_error = error
        if went_down:
            self.down_since = now
        self.next_probe = now + self.delay()
        return went_down

    def succeeded(self, now: float) -> bool:
        """Record a successful probe or poll; True if the member just came back."""
        came_back = not self.up
        self.up = True
        self.failures = 0
        self.down_since = None
        self.next_probe = now
        self.last_error = None
        return came_back

    def delay(self) -> float:
        if self.failures <= 0:
            return self.base_delay
        # The exponent is capped: 2 ** 1024 does not fit a float (OverflowError after
        # 1025 failures, half an hour down at 2 s a probe), and the cap is reached long before.
        return min(self.max_delay, self.base_delay * 2.0 ** min(self.failures - 1, 1000))

    def probe_due(self, now: float) -> bool:
        return self.up or now >= self.next_probe


class Failure(enum.Enum):
    """Why a member could not be polled or connected to, as far as waiting goes."""

    UNREACHABLE = "unreachable"  # down, starting, stopping, full, cut off: it may come back
    NO_DATABASE = "no_database"  # the database does not exist there (a replica may not
    #                              have replayed its creation yet)
    REFUSED = "refused"          # authentication or configuration: waiting cannot fix it


def waiting_can_fix(failure: Failure | None, role: str) -> bool:
    """Whether waiting may bring back a member that failed so: anything but a refusal,
    except a database missing on the primary (a replica gets it by replication; the
    primary is where it is made). ``role``: ``"primary"`` or ``"replica"``."""
    if failure is Failure.REFUSED:
        return False
    return not (failure is Failure.NO_DATABASE and role == "primary")
