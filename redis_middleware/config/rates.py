"""Rate strings (``"10/second;100/minute"``) parsed once, at settings construction.

The ``limits`` library parses them; what the core needs of each limit is kept in our
own frozen :class:`Rate`, so the core imports no ``limits`` (the Redis floor turns a
``Rate`` back into a ``limits`` item where its strategies run). ``limits`` is imported
on the first rate string, not when this module is.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rate", "parse_limits"]


@dataclass(frozen=True, slots=True)
class Rate:
    """One limit: ``amount`` requests per ``multiples`` x ``granularity``.

    ``granularity`` is the ``limits`` name of the unit (``second``, ``minute``, ``hour``,
    ``day``, ``month``, ``year``) and ``seconds`` the length of the window, as ``limits``
    counts it (a month is 30 days).
    """

    amount: int
    multiples: int
    granularity: str
    seconds: int

    @property
    def text(self) -> str:
        """``5 per minute``, ``10 per 2 seconds``: the limit in words, as the 429's detail
        and the CLI's usage show it."""
        if self.multiples == 1:
            return f"{self.amount} per {self.granularity}"
        return f"{self.amount} per {self.multiples} {self.granularity}s"

    @property
    def spec(self) -> str:
        """The rate string ``limits`` parses back into this limit (``10/2 second``)."""
        return f"{self.amount}/{self.multiples} {self.granularity}"


def parse_limits(text: str) -> tuple[Rate, ...]:
    """``"10/second;100/minute"`` -> its limits, parsed by the ``limits`` library."""
    if not text.strip():
        return ()
    from limits import parse_many  # here, not at import: the core imports no limits

    try:
        items = parse_many(text)
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {text!r}: {exc}") from None
    if not items:
        raise ValueError(f"invalid rate limit {text!r}")
    return tuple(Rate(item.amount, item.multiples, item.GRANULARITY.name,
                      int(item.get_expiry())) for item in items)
