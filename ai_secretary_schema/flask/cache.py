"""The cache behind ``REDIS_URL``, with the in-process fallback the design's error table asks for.

:class:`InProcessCache` is a small thread-safe TTL cache with a bounded number of entries (least
recently used evicted first). :class:`FallbackCache` uses Redis while it answers and the
in-process cache otherwise; values are JSON, so both backends return the same thing.

The switch is never silent: every switch is logged (rate limited) and the health check reports
``fallback`` while Redis is down. It is a cache, not a store: entries written to one backend are
not copied to the other, and the in-process cache is cleared whenever Redis comes back so that a
later outage cannot serve values from an earlier one.

Both are fork-safe (:mod:`ai_secretary_schema.flask.fork`): a forked child gets new locks. The
Redis client is kept: redis-py's connection pool notices the new process id on its next
checkout and opens the child's own connections, closing none of the parent's.

``redis`` is an optional dependency (``pip install ai-secretary-schema[redis]``); it is imported
only when a ``REDIS_URL`` is actually used.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ai_secretary_schema.flask import fork
from ai_secretary_schema.rate_limit import ErrorRateLimiter, log_limited
from ai_secretary_schema.redaction import redact_text, redact_url, url_password

if TYPE_CHECKING:
    import redis

__all__ = ["FallbackCache", "InProcessCache"]

logger = logging.getLogger(__name__)

_MISSING = object()


class InProcessCache:
    """Thread-safe in-process cache: at most ``max_entries`` entries, each with a TTL.

    ``default_ttl`` (seconds, ``None`` = no expiry) applies when :meth:`set` gets no ``ttl``.
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        max_entries: int = 1024,
        default_ttl: float | None = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (expires_at or None, value); ordered from least to most recently used.
        self._entries: OrderedDict[str, tuple[float | None, Any]] = OrderedDict()
        fork.register(self)

    def reset_after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork)."""
        self._lock = threading.Lock()

    def resume_after_fork(self) -> None:
        """Nothing runs in the background."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            expires_at, value = entry
            if expires_at is not None and expires_at <= now:
                del self._entries[key]
                return default
            self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default :attr:`default_ttl`)."""
        ttl = self.default_ttl if ttl is None else ttl
        expires_at = None if ttl is None else self._clock() + ttl
        with self._lock:
            self._entries[key] = (expires_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        with self._lock:
            return self._entries.pop(key, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        """Entries held, including expired ones not yet collected (never above max_entries)."""
        with self._lock:
            return len(self._entries)


class FallbackCache:
    """Redis while it answers, the in-process cache otherwise.

    ``redis_url`` ``None`` or blank: always the in-process cache (health reports ``disabled``).
    Every Redis call has ``timeout`` seconds to connect and ``timeout`` to answer, no retries, so
    a dead Redis costs one short wait; after a failure Redis is not tried again for
    ``retry_interval`` seconds (a health check's :meth:`ping` always tries). Values must be
    JSON-serialisable.
    """

    def __init__(
        self,
        redis_url: str | None,
        *,
        local: InProcessCache | None = None,
        timeout: float = 1.0,
        retry_interval: float = 5.0,
        key_prefix: str = "ai_secretary:",
        default_ttl: float | None = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis_url = redis_url.strip() if redis_url and redis_url.strip() else None
        self.local = local if local is not None else InProcessCache(default_ttl=default_ttl)
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.key_prefix = key_prefix
        self.default_ttl = default_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._redis_up = self.redis_url is not None
        self._retry_at = 0.0
        self._limiter = ErrorRateLimiter()
        self._secrets = [url_password(self.redis_url)]
        fork.register(self)

    def reset_after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork). The
        Redis client stays: its pool starts over in the child by itself (module docstring)."""
        self._lock = threading.Lock()

    def resume_after_fork(self) -> None:
        """Nothing runs in the background."""

    @property
    def enabled(self) -> bool:
        """True if a Redis URL is configured."""
        return self.redis_url is not None

    @property
    def backend(self) -> str:
        """``"redis"`` while Redis is in use, ``"memory"`` otherwise."""
        with self._lock:
            return "redis" if self.redis_url is not None and self._redis_up else "memory"

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                assert self.redis_url is not None
                self._client = redis.Redis.from_url(
                    self.redis_url,
                    socket_connect_timeout=self.timeout,
                    socket_timeout=self.timeout,
                    # redis-py retries 3 times with backoff by default: a dead Redis would then
                    # cost several timeouts per call instead of one.
                    retry=Retry(NoBackoff(), 0),
                )
            return self._client

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        # What "Redis does not answer" looks like; a programming error still propagates.
        import redis

        return (redis.RedisError, OSError)

    def _should_try_redis(self) -> bool:
        if self.redis_url is None:
            return False
        with self._lock:
            return self._redis_up or self._clock() >= self._retry_at

    def _mark_up(self) -> None:
        with self._lock:
            was_up, self._redis_up = self._redis_up, True
        if not was_up:
            # Entries written during the outage must not be served during the next one.
            self.local.clear()
            logger.info(
                "Redis at %s answers again; cache back on Redis", redact_url(self.redis_url)
            )

    def _mark_down(self, exc: BaseException) -> None:
        with self._lock:
            self._redis_up = False
            self._retry_at = self._clock() + self.retry_interval
        log_limited(
            logger,
            self._limiter,
            "redis-down",
            logging.WARNING,
            "Redis at %s unavailable, using the in-process cache: %s",
            redact_url(self.redis_url),
            self.describe_error(exc),
        )

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` as one line with the Redis password masked."""
        return redact_text(f"{type(exc).__name__}: {exc}", self._secrets)

    def ping(self) -> bool:
        """Ask Redis now (ignoring ``retry_interval``); False if none is configured.

        Raises the Redis error if it does not answer (and switches to the in-process cache).
        """
        if self.redis_url is None:
            return False
        try:
            self._redis().ping()
        except self._errors() as exc:
            self._mark_down(exc)
            raise
        self._mark_up()
        return True

    def _full_key(self, key: str) -> str:
        return self.key_prefix + key

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` or ``default``."""
        if self._should_try_redis():
            try:
                raw = self._redis().get(self._full_key(key))
            except self._errors() as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return default if raw is None else json.loads(raw)
        value = self.local.get(key, _MISSING)
        return default if value is _MISSING else json.loads(value)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store the JSON-serialisable ``value`` for ``ttl`` seconds (default ``default_ttl``)."""
        payload = json.dumps(value)
        ttl = self.default_ttl if ttl is None else ttl
        if self._should_try_redis():
            try:
                px = None if ttl is None else max(1, int(ttl * 1000))
                self._redis().set(self._full_key(key), payload, px=px)
            except self._errors() as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return
        self.local.set(key, payload, ttl=ttl)

    def delete(self, key: str) -> bool:
        """Remove ``key`` from both backends; True if either had it."""
        removed = self.local.delete(key)
        if self._should_try_redis():
            try:
                removed = bool(self._redis().delete(self._full_key(key))) or removed
            except self._errors() as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
        return removed

    def close(self) -> None:
        """Close the Redis connection pool, if one was opened."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
