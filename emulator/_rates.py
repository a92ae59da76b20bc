"""The highest request rate the emulator saw, per model and per sliding window.

Counts the requests a per-model quota counts (``generateContent``, ``interactions.create``,
``batchGenerateContent``), at their arrival, so a test can check that many workers together
kept under a shared limit. Each window keeps the arrival times it still covers in a deque;
the highest length it ever reached is the figure.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["RATED_ROUTES", "WINDOWS", "RateMeter"]

RATED_ROUTES = frozenset({"generate", "embed", "interactions.create", "batches.create"})
WINDOWS: dict[str, float] = {"per_second": 1.0, "per_minute": 60.0}


class _Model:
    __slots__ = ("highest", "recent", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.recent: dict[str, deque[float]] = {w: deque() for w in WINDOWS}
        self.highest: dict[str, int] = dict.fromkeys(WINDOWS, 0)


class RateMeter:
    """Per model: requests seen and the most that arrived within any 1 s and any 60 s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    def observe(self, model: str) -> None:
        now = self._clock()
        name = model.removeprefix("models/") or "unknown"
        with self._lock:
            m = self._models.get(name)
            if m is None:
                m = self._models[name] = _Model()
            m.requests += 1
            for window, seconds in WINDOWS.items():
                recent = m.recent[window]
                recent.append(now)
                while recent[0] <= now - seconds:
                    recent.popleft()
                if len(recent) > m.highest[window]:
                    m.highest[window] = len(recent)

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {"requests": m.requests, **{f"max_{w}": m.highest[w] for w in WINDOWS}}
                for name, m in sorted(self._models.items())
            }
