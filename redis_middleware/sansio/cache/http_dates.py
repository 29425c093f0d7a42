"""HTTP dates (RFC 9110 5.6.7), parsed strictly and formatted once per second.

A recipient must accept the three formats below; anything else is invalid. A cache
treats an invalid ``Expires`` as a time in the past (RFC 9111 5.3), so this parser is
strict where :func:`email.utils.parsedate_to_datetime` is lenient (it accepts a
missing comma, two-digit years in IMF dates, one-digit hours and other zones, all of
which RFC 9110 makes invalid). Names of days, months and ``GMT`` are matched without
regard to case (RFC 9110 5.6.7 says they are case-sensitive, but every deployed cache
accepts other cases and refusing them only loses cache hits).
"""

from __future__ import annotations

import calendar
import re
import time
from email.utils import formatdate

__all__ = ["format_http_date", "parse_http_date"]

_DAYS = "mon|tue|wed|thu|fri|sat|sun"
_LONG_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_MONTH = "|".join(_MONTHS)
_TIME = r"(\d\d):(\d\d):(\d\d)"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(rf"(?:{_DAYS}), (\d\d) ({_MONTH}) (\d{{4}}) {_TIME} gmt", re.I)
# obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(rf"(?:{_LONG_DAYS}), (\d\d)-({_MONTH})-(\d\d) {_TIME} gmt", re.I)
# obsolete asctime: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(rf"(?:{_DAYS}) ({_MONTH}) ([ \d]\d) {_TIME} (\d{{4}})", re.I)


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int
               ) -> float | None:
    if not (1 <= year <= 9999 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    try:
        return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    except (OverflowError, ValueError):
        return None


def parse_http_date(value: str, now: float | None = None) -> float | None:
    """Seconds since the epoch, or None for anything that is not an HTTP date."""
    value = value.strip()
    m = _IMF.fullmatch(value)
    if m is not None:
        day, month, year, hh, mm, ss = m.groups()
        return _timestamp(int(year), _MONTHS[month.lower()], int(day), int(hh), int(mm),
                          int(ss))
    m = _RFC850.fullmatch(value)
    if m is not None:
        day, month, yy, hh, mm, ss = m.groups()
        # RFC 9110 5.6.7: a two-digit year more than 50 years in the future is in the past.
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        year = this_year - this_year % 100 + int(yy)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, _MONTHS[month.lower()], int(day), int(hh), int(mm), int(ss))
    m = _ASCTIME.fullmatch(value)
    if m is not None:
        month, day, hh, mm, ss, year = m.groups()
        return _timestamp(int(year), _MONTHS[month.lower()], int(day.strip()), int(hh),
                          int(mm), int(ss))
    return None


_last: tuple[int, str] = (-1, "")


def format_http_date(now: float) -> str:
    """An IMF-fixdate, formatted once per second (not once per response)."""
    global _last
    second = int(now)
    if _last[0] != second:
        _last = (second, formatdate(second, usegmt=True))
    return _last[1]
