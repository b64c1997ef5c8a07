"""ApplicationContextManager: a context of the right app wherever code runs, and no leaked ``g``.

Each app counts its popped contexts through ``teardown_appcontext`` (where the extension removes
its scoped session), so "one context was pushed" and "no context was pushed" are observable.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask, current_app, g, has_app_context

from ai_secretary_schema.flask.context import ApplicationContextManager


class CountingApp(Flask):
    teardowns: int


def make_app(name: str) -> CountingApp:
    app = CountingApp(name)
    app.teardowns = 0

    @app.teardown_appcontext
    def count(_exc: BaseException | None) -> None:
        app.teardowns += 1

    return app


@pytest.fixture
def app() -> CountingApp:
    return make_app("context_app")


@pytest.fixture
def other_app() -> CountingApp:
    return make_app("other_app")


@pytest.fixture
def manager(app: CountingApp) -> ApplicationContextManager:
    return ApplicationContextManager(app)


def current() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined, no-any-return]


def test_ensure_context_pushes_a_context_when_none_is_active(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    seen = manager.ensure_context(current)()
    assert seen is app
    assert not has_app_context()
    assert app.teardowns == 1


def test_ensure_context_reuses_the_active_context_of_the_same_app(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    @manager.ensure_context
    def read_g() -> str:
        return str(g.marker)

    with app.app_context():
        g.marker = "outer"
        assert read_g() == "outer"
        assert app.teardowns == 0
    assert app.teardowns == 1


def test_nested_calls_share_one_context(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    @manager.ensure_context
    def inner() -> str:
        return str(g.marker)

    @manager.ensure_context
    def outer() -> str:
        g.marker = "set by outer"
        return manager.run_with_context(inner)

    assert outer() == "set by outer"
    assert app.teardowns == 1


def test_a_context_of_another_app_is_not_reused(
    app: CountingApp, other_app: CountingApp, manager: ApplicationContextManager
) -> None:
    @manager.ensure_context
    def probe() -> tuple[Flask, bool]:
        return current(), "marker" in g

    with other_app.app_context():
        g.marker = "other app's"
        seen, leaked = probe()
        assert current() is other_app
        assert g.marker == "other app's"
    assert (seen, leaked) == (app, False)
    assert (app.teardowns, other_app.teardowns) == (1, 1)


def test_has_context_is_true_only_for_this_app(
    app: CountingApp, other_app: CountingApp, manager: ApplicationContextManager
) -> None:
    states = [manager.has_context()]
    with other_app.app_context():
        states.append(manager.has_context())
    with app.app_context():
        states.append(manager.has_context())
    assert states == [False, False, True]


def test_run_with_context_passes_arguments_and_returns_the_result(
    manager: ApplicationContextManager,
) -> None:
    def describe(a: int, *, b: str) -> str:
        return f"{current_app.name}:{a}:{b}"

    assert manager.run_with_context(describe, 1, b="two") == "context_app:1:two"


def test_run_with_context_pops_its_context_when_the_function_raises(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        manager.run_with_context(fail)
    assert not has_app_context()
    assert app.teardowns == 1


def test_run_with_context_reuses_a_request_context_of_the_same_app(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    with app.test_request_context("/"):
        g.marker = "request"
        assert manager.run_with_context(lambda: g.marker) == "request"


def test_background_context_is_always_a_new_one(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    with app.app_context():
        g.marker = "caller"
        with manager.create_background_context():
            assert current() is app
            assert "marker" not in g
        assert g.marker == "caller"
    assert app.teardowns == 2


def test_wrapped_function_runs_in_context_in_a_plain_thread(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    seen: list[Flask] = []

    def task() -> None:
        seen.append(current())

    thread = threading.Thread(target=manager.wrap(task))
    thread.start()
    thread.join()
    assert seen == [app]


def test_a_context_active_in_one_thread_is_not_seen_in_another(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    seen: list[bool] = []

    @manager.ensure_context
    def task() -> None:
        seen.append("marker" in g)

    with app.app_context():
        g.marker = "main thread"
        thread = threading.Thread(target=task)
        thread.start()
        thread.join()
    assert seen == [False]


def test_pool_tasks_each_get_a_clean_g(
    app: CountingApp, manager: ApplicationContextManager
) -> None:
    def task(index: int) -> bool:
        leaked = "task" in g
        g.task = index
        return leaked

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [manager.submit(pool, task, i) for i in range(20)]
        leaks = [future.result() for future in futures]
    assert leaks == [False] * 20
    assert app.teardowns == 20


def test_submit_propagates_exceptions_through_the_future(
    manager: ApplicationContextManager,
) -> None:
    def fail() -> None:
        raise ValueError("bad input")

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = manager.submit(pool, fail)
        with pytest.raises(ValueError, match="bad input"):
            future.result()


def test_wrap_works_with_executor_map(app: CountingApp, manager: ApplicationContextManager) -> None:
    def app_name(_index: int) -> str:
        return current_app.name

    with ThreadPoolExecutor(max_workers=3) as pool:
        names = list(pool.map(manager.wrap(app_name), range(6)))
    assert names == ["context_app"] * 6


def test_ensure_context_keeps_the_function_metadata(manager: ApplicationContextManager) -> None:
    @manager.ensure_context
    def refresh_cache() -> None:
        """Refresh the cache."""

    assert (refresh_cache.__name__, refresh_cache.__doc__) == (
        "refresh_cache",
        "Refresh the cache.",
    )
