"""A bounded generation queue: a few generations run, a few more wait, the rest are told to retry.

One model instance serves every request, so requests beyond what it can run must wait; an unbounded
wait list would hold sockets, threads and memory until the process falls over. `admit` takes a
ticket without blocking (or raises `QueueFull`, which the API turns into 503 + Retry-After); the
holder then waits in `running()` for one of `concurrency` slots. Both are plain semaphores so a
streamed answer may release them from another thread than the one that took them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class QueueFull(Exception):
    """No ticket left; `retry_after` is an estimate in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the generation queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    """A place in the queue; `release` is idempotent so every exit path may call it."""

    def __init__(self, queue: "GenerationQueue") -> None:
        self._queue = queue
        self._released = False

    @contextmanager
    def running(self) -> Iterator[None]:
        """Wait for a generation slot and hold it for the block (records how long it took)."""
        self._queue._slots.acquire()
        start = time.monotonic()
        try:
            yield
        finally:
            self._queue._slots.release()
            self._queue._record(time.monotonic() - start)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._tickets.release()


class GenerationQueue:
    """`concurrency` generations at once, at most `waiting` more queued behind them."""

    def __init__(self, concurrency: int, waiting: int) -> None:
        self.concurrency = concurrency
        self.capacity = concurrency + waiting
        self._tickets = threading.Semaphore(self.capacity)
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._mean_s = 5.0  # until measured: a short answer on a CPU

    def admit(self) -> Ticket:
        if not self._tickets.acquire(blocking=False):
            raise QueueFull(self.retry_after())
        return Ticket(self)

    def _record(self, seconds: float) -> None:
        with self._lock:
            self._mean_s = 0.8 * self._mean_s + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a ticket is likely free: the queue drained at the measured pace."""
        with self._lock:
            return max(1, math.ceil(self._mean_s * self.capacity / self.concurrency))

    def stats(self) -> dict[str, float | int]:
        with self._lock:
            mean = round(self._mean_s, 3)
        free = self._tickets._value  # Semaphore has no public counter
        return {"capacity": self.capacity, "in_queue": self.capacity - free,
                "concurrency": self.concurrency, "mean_generation_s": mean}
