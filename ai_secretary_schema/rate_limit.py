"""Error rate limiting, so an outage writes a handful of log lines a minute instead of thousands.

:class:`ErrorRateLimiter` is the design's limiter made safe for a multi-threaded server: a lock
around its state, at most ``max_errors`` timestamps per key (a bounded deque instead of a list
that is rebuilt on every call), and at most ``max_keys`` keys, the least recently used evicted
first, so errors whose keys carry ids or timestamps cannot grow it without limit. It also counts
what it suppressed, per key, so the next message that gets through can say so.

:class:`RateLimitingFilter` applies a limiter to :mod:`logging` records; :func:`log_limited` does
the same for one call site (the health checks and the connection manager use it).

Every limiter is fork-safe: a process forked while another of its threads held a limiter's lock
(a health check logging an outage at that instant) would otherwise inherit the lock held
forever, by a thread that does not exist in the child, and hang on its first log line. Each
limiter gets a new lock in the child (:func:`os.register_at_fork`); its counts are kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ErrorRateLimiter",
    "RateLimitingFilter",
    "default_record_key",
    "log_limited",
]


@dataclass
class _KeyState:
    timestamps: deque[float]
    suppressed: int = 0


class ErrorRateLimiter:
    """Allow at most ``max_errors_per_minute`` messages per key in any ``window`` seconds.

    Thread-safe. Memory is bounded by ``max_keys`` times ``max_errors_per_minute`` timestamps:
    when a new key arrives and ``max_keys`` are tracked, the least recently used key is forgotten
    (its pending suppressed count is added to :attr:`evicted_suppressed`). ``clock`` is any
    monotonic clock returning seconds; tests inject a fake one instead of sleeping.
    """

    def __init__(
        self,
        max_errors_per_minute: int = 5,
        window: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_errors_per_minute < 1:
            raise ValueError(f"max_errors_per_minute must be >= 1, got {max_errors_per_minute}")
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_errors = max_errors_per_minute
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        self._evicted_keys = 0
        self._evicted_suppressed = 0
        _limiters.add(self)

    def should_log_error(self, error_key: str) -> bool:
        """True if a message for ``error_key`` may be logged now (and count it); else count it
        as suppressed and return False."""
        now = self._clock()
        with self._lock:
            state = self._keys.get(error_key)
            if state is None:
                if len(self._keys) >= self.max_keys:
                    _, evicted = self._keys.popitem(last=False)
                    self._evicted_keys += 1
                    self._evicted_suppressed += evicted.suppressed
                state = _KeyState(deque(maxlen=self.max_errors))
                self._keys[error_key] = state
            else:
                self._keys.move_to_end(error_key)
            horizon = now - self.window
            timestamps = state.timestamps
            while timestamps and timestamps[0] <= horizon:
                timestamps.popleft()
            if len(timestamps) < self.max_errors:
                timestamps.append(now)
                return True
            state.suppressed += 1
            return False

    def suppressed_count(self, error_key: str) -> int:
        """Messages of ``error_key`` suppressed since the last :meth:`pop_suppressed`."""
        with self._lock:
            state = self._keys.get(error_key)
            return 0 if state is None else state.suppressed

    def pop_suppressed(self, error_key: str) -> int:
        """Return the suppressed count of ``error_key`` and reset it to zero."""
        with self._lock:
            state = self._keys.get(error_key)
            if state is None:
                return 0
            count, state.suppressed = state.suppressed, 0
            return count

    def reset(self) -> None:
        """Forget every key, timestamp and count."""
        with self._lock:
            self._keys.clear()
            self._evicted_keys = 0
            self._evicted_suppressed = 0

    @property
    def evicted_keys(self) -> int:
        """How many keys were forgotten to keep within ``max_keys``."""
        with self._lock:
            return self._evicted_keys

    @property
    def evicted_suppressed(self) -> int:
        """Suppressed counts that were still pending on keys when they were evicted."""
        with self._lock:
            return self._evicted_suppressed

    def __len__(self) -> int:
        """The number of keys currently tracked (never more than ``max_keys``)."""
        with self._lock:
            return len(self._keys)

    def __contains__(self, error_key: object) -> bool:
        with self._lock:
            return error_key in self._keys


#: Every limiter of the process, for the fork handler below (weak: a limiter is not kept alive).
_limiters: weakref.WeakSet[ErrorRateLimiter] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    # Runs in the child alone (its other threads did not survive the fork), so nothing can
    # hold or take a lock while it is replaced.
    for limiter in list(_limiters):
        limiter._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_new_locks_after_fork)


def default_record_key(record: logging.LogRecord) -> str:
    """Logger name, level and message *template*: messages that differ only in args share a key."""
    return f"{record.name}\x00{record.levelno}\x00{record.msg}"


def _suppressed_note(count: int) -> str:
    return f" [{count} similar message{'s' if count != 1 else ''} suppressed]"


class RateLimitingFilter(logging.Filter):
    """A :class:`logging.Filter` that drops records over the limiter's rate.

    Records below ``level`` (default ``WARNING``) always pass. The key of a record is
    ``key(record)``, by default :func:`default_record_key`. When a key's window reopens, the next
    record that passes has " [N similar messages suppressed]" appended to its message and the
    count in its ``suppressed`` attribute (for structured handlers).

    Attach it to a *handler* to limit everything that handler emits, including records propagated
    from child loggers; a filter on a logger only sees records logged on that very logger.
    """

    def __init__(
        self,
        limiter: ErrorRateLimiter | None = None,
        *,
        level: int = logging.WARNING,
        key: Callable[[logging.LogRecord], str] = default_record_key,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self.limiter = limiter if limiter is not None else ErrorRateLimiter()
        self.level = level
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        if not super().filter(record):
            return False
        if record.levelno < self.level:
            return True
        # A record that already went through a limiter (one filter on the logger and one on a
        # handler, or the same filter on two handlers) is not counted twice.
        if getattr(record, "_ais_rate_limited", False):
            return True
        key = self.key(record)
        if not self.limiter.should_log_error(key):
            return False
        record._ais_rate_limited = True
        suppressed = self.limiter.pop_suppressed(key)
        record.suppressed = suppressed
        if suppressed:
            # Render the message now: appending to the template would break %-formatting of
            # records whose args are a mapping or whose message contains a literal "%".
            record.msg = record.getMessage() + _suppressed_note(suppressed)
            record.args = None
        return True


def log_limited(
    logger: logging.Logger,
    limiter: ErrorRateLimiter,
    key: str,
    level: int,
    msg: str,
    *args: object,
    **kwargs: Any,
) -> bool:
    """Log ``msg % args`` on ``logger`` unless ``key`` is over ``limiter``'s rate.

    Returns True if the message was logged. When earlier messages of ``key`` were suppressed, the
    message says how many. ``kwargs`` go to :meth:`logging.Logger.log` (``exc_info``, ``extra``).
    """
    if not logger.isEnabledFor(level):
        return False
    if not limiter.should_log_error(key):
        return False
    suppressed = limiter.pop_suppressed(key)
    if suppressed:
        msg = msg + _suppressed_note(suppressed)
    extra = dict(kwargs.pop("extra", None) or {})
    extra.setdefault("suppressed", suppressed)
    extra.setdefault("_ais_rate_limited", True)
    kwargs.setdefault("stacklevel", 2)
    logger.log(level, msg, *args, extra=extra, **kwargs)
    return True
