"""Member health: up until it fails, then down and probed with growing delays until it
answers again. Pure state; the monitor feeds it events and the clock."""

from __future__ import annotations

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
