"""What an attacker who can write to Redis plants for a process that unpickles: a pickle
whose loading runs code (recorded in ``UNPICKLED``, so a test can say it never ran)."""

from __future__ import annotations

import pickle
from typing import Any

UNPICKLED: list[str] = []


def _code_ran() -> str:
    UNPICKLED.append("code ran")
    return "planted"


class _Planted:
    def __reduce__(self) -> Any:
        return (_code_ran, ())


def planted_pickle() -> bytes:
    """Bytes that run code when unpickled (by reference to this module's function)."""
    return pickle.dumps(_Planted())
