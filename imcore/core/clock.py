"""The server's single Lamport clock (spec §6). Pure: no wall clock."""

from __future__ import annotations

from .errors import Invalid

#: spec §6: a client value this far above the clock is refused, so one bad client
#: cannot push the clock to the end of its range.
MAX_JUMP = 10**9


class LamportClock:
    """ts for every event: strictly increasing, never reused, never going back."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def check(self, ts: object, field: str = "ts") -> int:
        """Validate a client-supplied ts without moving the clock.

        Raises:
            Invalid: not a non-negative integer, or more than 10^9 above the clock.
        """
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise Invalid(f"{field} must be a non-negative integer")
        if ts > self.value + MAX_JUMP:
            raise Invalid(f"{field} is more than 10^9 above the server clock")
        return ts

    def observe(self, ts: int) -> None:
        """Move the clock to `max(clock, ts)` (spec §6); `ts` must have passed `check`."""
        if ts > self.value:
            self.value = ts

    def tick(self) -> int:
        """Return the ts of a new event: clock + 1, and move the clock there."""
        self.value += 1
        return self.value
