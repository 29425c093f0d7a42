"""Fork drills: a lock held by another thread across an ``os.fork()``, and the forked
child's one piece of work, read back by the parent (the child killed if it hangs)."""

from __future__ import annotations

import os
import select
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def held(lock: Any) -> Iterator[None]:
    """Fault injection: another thread holds ``lock`` until the block ends."""
    inside, leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with lock:
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert inside.wait(5)
    try:
        yield
    finally:
        leave.set()
        thread.join()


def in_forked_child(work: Callable[[], bytes], timeout: float = 10) -> bytes:
    """Fork; the child runs ``work`` and sends its result. What the child sent (nothing
    when it hung: it is then killed after ``timeout`` seconds)."""
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
        pid = os.fork()
    if pid == 0:
        try:
            os.write(writer, work())
        finally:
            os._exit(0)
    os.close(writer)
    ready, _, _ = select.select([reader], [], [], timeout)
    got = os.read(reader, 100) if ready else b""
    os.close(reader)
    if not got:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return got
