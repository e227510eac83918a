"""Rule delays: "30m", "4h", "2d", "1w", "1mo", and negative ones ("-1d" before a deadline).

A delay is a count of months plus a fixed number of seconds, because "1mo"
after 31 January is the last day of February, not 30 days later. Adding a
delay to a time and subtracting it are both provided: the sweep narrows its SQL
range with `before(now, delay)` and then checks `after(trigger, delay) <= now`
exactly.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

from mailgated.errors import Invalid

_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DELAY = re.compile(r"^\s*([+-]?)\s*(\d+)\s*(mo|min|m|h|d|w)\s*$")


@dataclass(frozen=True)
class Delay:
    months: int = 0
    seconds: int = 0

    def __str__(self) -> str:
        if self.months:
            return f"{self.months}mo"
        for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600)):
            if self.seconds and self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return f"{self.seconds // 60}m"


def parse_delay(text: str | None) -> Delay:
    """Parse a delay; raises Invalid with the accepted forms."""
    if text is None or str(text).strip() in ("", "0"):
        return Delay()
    match = _DELAY.match(str(text))
    if not match:
        raise Invalid(f"bad delay {text!r}: use a number and m, h, d, w or mo (e.g. 2d, -1d, 1mo)")
    sign = -1 if match.group(1) == "-" else 1
    count, unit = int(match.group(2)), match.group(3)
    if unit == "mo":
        return Delay(months=sign * count)
    return Delay(seconds=sign * count * _UNITS[unit])


def _add_months(when: dt.datetime, months: int) -> dt.datetime:
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def after(when: dt.datetime, delay: Delay) -> dt.datetime:
    """The time `delay` after `when` (the due time of a trigger)."""
    return _add_months(when, delay.months) + dt.timedelta(seconds=delay.seconds)


def before(when: dt.datetime, delay: Delay) -> dt.datetime:
    """The latest trigger time that is due at `when` (month ends rounded generously)."""
    shifted = _add_months(when - dt.timedelta(seconds=delay.seconds), -delay.months)
    # "31 Jan + 1mo" is 28 Feb, so on 28 Feb triggers up to 31 Jan are due: widen by 3 days
    return shifted + dt.timedelta(days=3) if delay.months else shifted
