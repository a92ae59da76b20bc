"""A pipeline's morning deadline: a local time of day in a time zone (``07:00 Europe/Paris``).

What a user writes: ``Pipeline(deadline=Deadline("07:00", "Europe/Paris"), fallback=
Channel.DIRECT)`` or the string ``"07:00 Europe/Paris"``; the ``tick`` flow's ``deadline``
parameter (the same string) overrides it for one deployment. Which morning a row is due by:
the first time the clock shows the deadline after the row was enrolled (a row enrolled at
22:00 is due at 07:00 the next morning; one still out after 07:00 is late, and due now). The
time zone's rules are the standard library's (``zoneinfo``), so a daylight-saving change is
the zone's: a deadline in a skipped hour is read as the same wall time after the jump
(``fold=0``).

What the batch channel does with it: ``flows.channels._deadline``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DEADLINE_PATTERN", "Deadline"]

#: ``HH:MM`` or ``HH:MM:SS``, then a space and an IANA time zone (``UTC``, ``Europe/Paris``).
DEADLINE_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?\s+[A-Za-z][A-Za-z0-9_+\-/]*$"

_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A time of day (``"07:00"`` or ``"07:00:30"``) in a time zone (``"Europe/Paris"``).
    Checked when made: a bad time or an unknown zone is a ``ValueError`` with one line."""

    at: str
    zone: str = "UTC"

    def __post_init__(self) -> None:
        if not isinstance(self.at, str) or _TIME.match(self.at.strip()) is None:
            raise ValueError(f"deadline time {self.at!r}: use HH:MM or HH:MM:SS (24 h)")
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"deadline time zone {self.zone!r} is not a known IANA zone (e.g. Europe/Paris)"
            ) from None

    @classmethod
    def of(cls, value: Deadline | str) -> Deadline:
        """A deadline as given: one already made, or ``"07:00 Europe/Paris"`` (the zone may
        be left out: UTC)."""
        if isinstance(value, Deadline):
            return value
        if not isinstance(value, str):
            raise ValueError(f"a deadline is 'HH:MM Zone/Name', got {type(value).__name__}")
        at, _, zone = value.strip().partition(" ")
        return cls(at, zone.strip() or "UTC")

    @property
    def time_of_day(self) -> time:
        match = _TIME.match(self.at.strip())
        assert match is not None  # checked when made
        hour, minute, second = (int(g or 0) for g in match.groups())
        return time(hour, minute, second)

    def first_after(self, instant: float) -> float:
        """The first moment at or after ``instant`` (epoch seconds) the deadline's zone shows
        its time of day, as epoch seconds."""
        zone = ZoneInfo(self.zone)
        local = datetime.fromtimestamp(instant, UTC).astimezone(zone)
        candidate = datetime.combine(local.date(), self.time_of_day, tzinfo=zone)
        if candidate.timestamp() < instant:
            candidate = datetime.combine(
                local.date() + timedelta(days=1), self.time_of_day, tzinfo=zone
            )
        return candidate.timestamp()

    def next_after(self, now: datetime) -> datetime:
        """The first moment at or after ``now`` the deadline's zone shows its time of day."""
        return datetime.fromtimestamp(self.first_after(now.timestamp()), ZoneInfo(self.zone))

    def __str__(self) -> str:
        return f"{self.at.strip()} {self.zone}"
