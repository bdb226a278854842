"""When a second Ctrl-C or SIGTERM means "stop at once" and when it is the first one again.

A first signal asks a run (or a sweep) to stop at its next step, saved; a second stops it at
once. But one request can arrive twice: GNU make, on SIGTERM, sends SIGTERM to its children,
who also got the one sent to the process group (a scheduler's ``kill -TERM -<pgid>`` of
``make train`` delivers two within a millisecond). A repeat that close is the same request; a
person pressing Ctrl-C again takes far longer than ``SAME_REQUEST_S``.
"""

from __future__ import annotations

import time

SAME_REQUEST_S = 0.25


class Requests:
    """The first signal's name and time; whether a later one is a second request."""

    def __init__(self) -> None:
        self.first: str | None = None
        self._at = 0.0

    def note(self, name: str) -> bool:
        """Record a signal; True when it is a second request (stop at once)."""
        now = time.monotonic()
        if self.first is None:
            self.first, self._at = name, now
            return False
        return now - self._at >= SAME_REQUEST_S
