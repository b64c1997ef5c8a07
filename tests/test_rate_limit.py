"""ErrorRateLimiter, RateLimitingFilter and log_limited: a storm of errors becomes a few lines.

Time is a fake clock advanced by hand; nothing here sleeps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from ai_secretary_schema.rate_limit import (
    ErrorRateLimiter,
    RateLimitingFilter,
    default_record_key,
    log_limited,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> ErrorRateLimiter:
    return ErrorRateLimiter(max_errors_per_minute=5, window=60.0, clock=clock)


@pytest.fixture
def logger_and_handler(
    request: pytest.FixtureRequest, limiter: ErrorRateLimiter
) -> Iterator[tuple[logging.Logger, ListHandler]]:
    logger = logging.getLogger(f"tests.rate_limit.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = ListHandler()
    handler.addFilter(RateLimitingFilter(limiter))
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


# -- ErrorRateLimiter ------------------------------------------------------------------------


@pytest.mark.parametrize("max_errors", [1, 5, 20])
def test_allows_max_errors_per_window_then_suppresses(clock: FakeClock, max_errors: int) -> None:
    limiter = ErrorRateLimiter(max_errors_per_minute=max_errors, clock=clock)
    allowed = [limiter.should_log_error("db down") for _ in range(max_errors + 10)]
    assert allowed == [True] * max_errors + [False] * 10


def test_window_reopens_after_window_seconds(clock: FakeClock, limiter: ErrorRateLimiter) -> None:
    for _ in range(5):
        assert limiter.should_log_error("k")
    clock.advance(59.9)
    assert not limiter.should_log_error("k")
    clock.advance(0.1)
    assert limiter.should_log_error("k")


def test_window_slides_one_timestamp_at_a_time(clock: FakeClock, limiter: ErrorRateLimiter) -> None:
    for _ in range(5):
        assert limiter.should_log_error("k")
        clock.advance(10)
    # t = 50: the five slots were taken at t = 0, 10, 20, 30, 40.
    assert not limiter.should_log_error("k")
    clock.advance(10)  # t = 60: the slot of t = 0 frees, only that one.
    assert [limiter.should_log_error("k") for _ in range(2)] == [True, False]


def test_keys_are_limited_independently(limiter: ErrorRateLimiter) -> None:
    for _ in range(5):
        limiter.should_log_error("a")
    assert not limiter.should_log_error("a")
    assert limiter.should_log_error("b")


def test_suppressed_count_counts_refusals_until_popped(limiter: ErrorRateLimiter) -> None:
    for _ in range(12):
        limiter.should_log_error("k")
    assert limiter.suppressed_count("k") == 7
    assert limiter.pop_suppressed("k") == 7
    assert limiter.suppressed_count("k") == 0
    assert limiter.pop_suppressed("never seen") == 0


def test_number_of_keys_is_bounded_under_a_storm_of_distinct_keys(clock: FakeClock) -> None:
    limiter = ErrorRateLimiter(max_keys=100, clock=clock)
    for request_id in range(10_000):
        limiter.should_log_error(f"timeout for request {request_id}")
    assert len(limiter) == 100
    assert limiter.evicted_keys == 9_900


def test_eviction_forgets_the_least_recently_used_key(clock: FakeClock) -> None:
    limiter = ErrorRateLimiter(max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        limiter.should_log_error(key)
    limiter.should_log_error("a")  # "b" is now the least recently used
    limiter.should_log_error("d")
    assert ("a" in limiter, "b" in limiter, "c" in limiter, "d" in limiter) == (
        True,
        False,
        True,
        True,
    )


def test_evicted_keys_pending_suppressed_counts_are_kept_in_total(clock: FakeClock) -> None:
    limiter = ErrorRateLimiter(max_errors_per_minute=1, max_keys=1, clock=clock)
    for _ in range(4):
        limiter.should_log_error("a")
    limiter.should_log_error("b")
    assert limiter.evicted_suppressed == 3


def test_one_key_storm_keeps_counting_without_growing(limiter: ErrorRateLimiter) -> None:
    for _ in range(100_000):
        limiter.should_log_error("k")
    assert len(limiter) == 1
    assert limiter.suppressed_count("k") == 100_000 - 5


def test_reset_forgets_everything(limiter: ErrorRateLimiter) -> None:
    for _ in range(10):
        limiter.should_log_error("k")
    limiter.reset()
    assert len(limiter) == 0
    assert limiter.should_log_error("k")


def test_concurrent_callers_never_exceed_the_limit(limiter: ErrorRateLimiter) -> None:
    allowed: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def storm() -> None:
        barrier.wait()
        results = [limiter.should_log_error("shared") for _ in range(2_000)]
        with lock:
            allowed.extend(results)

    threads = [threading.Thread(target=storm) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 5
    assert limiter.suppressed_count("shared") == 8 * 2_000 - 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_errors_per_minute": 0}, "max_errors_per_minute"),
        ({"window": 0}, "window"),
        ({"max_keys": 0}, "max_keys"),
    ],
)
def test_invalid_limits_are_rejected(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ErrorRateLimiter(**kwargs)  # type: ignore[arg-type]


# -- RateLimitingFilter ----------------------------------------------------------------------


def test_filter_key_ignores_args_so_messages_differing_only_in_args_share_a_key(
    logger_and_handler: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = logger_and_handler
    for request_id in range(50):
        logger.error("query for request %s timed out", request_id)
    assert handler.messages == [f"query for request {i} timed out" for i in range(5)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("error", "connection refused"), ("error", "disk full")),
        (("error", "connection refused"), ("warning", "connection refused")),
    ],
    ids=["different templates", "different levels"],
)
def test_filter_limits_templates_and_levels_separately(
    logger_and_handler: tuple[logging.Logger, ListHandler],
    first: tuple[str, str],
    second: tuple[str, str],
) -> None:
    logger, handler = logger_and_handler
    for level, message in (first, second):
        for _ in range(10):
            getattr(logger, level)(message)
    assert len(handler.records) == 10


def test_filter_lets_records_below_its_level_through(
    logger_and_handler: tuple[logging.Logger, ListHandler],
) -> None:
    logger, handler = logger_and_handler
    for _ in range(20):
        logger.info("routine")
    assert len(handler.records) == 20


def test_filter_annotates_the_first_record_after_the_window_reopens(
    clock: FakeClock, logger_and_handler: tuple[logging.Logger, ListHandler]
) -> None:
    logger, handler = logger_and_handler
    for attempt in range(8):
        logger.error("database unreachable (attempt %d)", attempt)
    clock.advance(60)
    logger.error("database unreachable (attempt %d)", 8)
    logger.error("database unreachable (attempt %d)", 9)
    assert handler.messages[5:] == [
        "database unreachable (attempt 8) [3 similar messages suppressed]",
        "database unreachable (attempt 9)",
    ]
    assert [getattr(r, "suppressed", None) for r in handler.records[5:]] == [3, 0]


def test_filter_annotation_keeps_mapping_args_and_literal_percent_intact(
    clock: FakeClock, logger_and_handler: tuple[logging.Logger, ListHandler]
) -> None:
    logger, handler = logger_and_handler
    for _ in range(6):
        logger.error("disk %(disk)s at 100%%", {"disk": "sda"})
    clock.advance(60)
    logger.error("disk %(disk)s at 100%%", {"disk": "sda"})
    assert handler.messages[-1] == "disk sda at 100% [1 similar message suppressed]"


def test_filter_uses_a_custom_key(clock: FakeClock) -> None:
    limiter = ErrorRateLimiter(max_errors_per_minute=2, clock=clock)
    logger = logging.getLogger("tests.rate_limit.custom_key")
    logger.propagate = False
    handler = ListHandler()
    handler.addFilter(RateLimitingFilter(limiter, key=lambda record: record.name))
    logger.addHandler(handler)
    try:
        for message in ("a", "b", "c", "d"):
            logger.error(message)
    finally:
        logger.removeHandler(handler)
    assert handler.messages == ["a", "b"]


def test_filter_on_two_handlers_counts_each_record_once(limiter: ErrorRateLimiter) -> None:
    logger = logging.getLogger("tests.rate_limit.two_handlers")
    logger.propagate = False
    handlers = [ListHandler(), ListHandler()]
    shared = RateLimitingFilter(limiter)
    for handler in handlers:
        handler.addFilter(shared)
        logger.addHandler(handler)
    try:
        for _ in range(5):
            logger.error("boom")
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert [len(h.records) for h in handlers] == [5, 5]


def test_default_record_key_is_name_level_and_template() -> None:
    record = logging.LogRecord("app.db", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    other = logging.LogRecord("app.db", logging.ERROR, __file__, 1, "failed %s", ("y",), None)
    assert default_record_key(record) == default_record_key(other)


# -- log_limited -----------------------------------------------------------------------------


def test_log_limited_logs_within_the_limit_and_reports_suppressed_later(
    clock: FakeClock, limiter: ErrorRateLimiter
) -> None:
    logger = logging.getLogger("tests.rate_limit.log_limited")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    try:
        logged = [
            log_limited(logger, limiter, "db", logging.ERROR, "db down: %s", i) for i in range(7)
        ]
        clock.advance(60)
        log_limited(logger, limiter, "db", logging.ERROR, "db down: %s", 7)
    finally:
        logger.removeHandler(handler)
    assert logged == [True] * 5 + [False] * 2
    assert handler.messages[-1] == "db down: 7 [2 similar messages suppressed]"


def test_log_limited_does_not_count_messages_of_a_disabled_level(
    limiter: ErrorRateLimiter,
) -> None:
    logger = logging.getLogger("tests.rate_limit.disabled_level")
    logger.setLevel(logging.ERROR)
    assert not log_limited(logger, limiter, "k", logging.DEBUG, "noise")
    assert "k" not in limiter
