"""Flask application context for code that runs outside a request: threads, pools, health checks.

:class:`ApplicationContextManager` is the design's component 3 with two corrections:

* "Is there a context?" means "is there a context *of this application*?". A context of another
  Flask application (two apps in one process, tests) is not reused: this app's is pushed on top
  and popped afterwards, so ``current_app`` is always the right one.
* A context is pushed only when none of this app is active, and it is always popped (``with``),
  so nested calls share one context (one ``g``, one session) and a worker thread of a pool never
  carries a finished task's ``g`` into the next task. ``teardown_appcontext`` handlers (which
  remove the scoped session) run exactly once, when the context that was pushed is popped.

Background work takes its tenant explicitly (:meth:`~ApplicationContextManager.tenant_context`,
:meth:`~ApplicationContextManager.submit_for_tenant`): a new context sets ``g.tenant_id`` and the
tenant scope to the given tenant, or to none, and never inherits the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar, cast

from flask import Flask, current_app, g, has_app_context
from flask.ctx import AppContext

from ai_secretary_schema.tenancy import tenant_scope

__all__ = ["ApplicationContextManager"]

P = ParamSpec("P")
R = TypeVar("R")


class ApplicationContextManager:
    """Run code inside an application context of ``app``, reusing one that is already active."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def has_context(self) -> bool:
        """True if an application context *of this app* is active in the current thread."""
        if not has_app_context():
            return False
        # current_app is a proxy; compare the application object behind it, not the proxy.
        return cast(Any, current_app)._get_current_object() is self.app

    @contextmanager
    def context(self) -> Iterator[Flask]:
        """Context manager: the active context of this app if there is one, else a new one."""
        if self.has_context():
            yield self.app
            return
        with self.app.app_context():
            yield self.app

    def ensure_context(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorator: run ``func`` inside an application context of this app (:meth:`context`)."""

        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self.context():
                return func(*args, **kwargs)

        return wrapper

    #: Alias of :meth:`ensure_context` for wrapping callables handed to threads and executors.
    wrap = ensure_context

    def run_with_context(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``func(*args, **kwargs)`` inside an application context of this app."""
        with self.context():
            return func(*args, **kwargs)

    def create_background_context(self) -> AbstractContextManager[AppContext]:
        """A *new* application context for a background task, to use with ``with``.

        Unlike :meth:`context`, this never reuses the caller's context: a background task gets
        its own ``g`` and its own session, torn down when the ``with`` block ends.
        """
        return self.app.app_context()

    @contextmanager
    def tenant_context(self, tenant_id: int | None) -> Iterator[AppContext]:
        """A *new* application context working for ``tenant_id`` (``None``: no tenant), for
        background work: ``g.tenant_id`` and the tenant scope are set to it, whatever the
        caller's were, and end with the block."""
        with self.app.app_context() as context, tenant_scope(tenant_id):
            g.tenant_id = tenant_id
            yield context

    def run_for_tenant(
        self, tenant_id: int | None, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Call ``func(*args, **kwargs)`` in a new context of this app for ``tenant_id``."""
        with self.tenant_context(tenant_id):
            return func(*args, **kwargs)

    def submit_for_tenant(
        self,
        executor: Executor,
        tenant_id: int | None,
        func: Callable[P, R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Future[R]:
        """``executor.submit`` with ``func`` run in a new context of this app for
        ``tenant_id`` (a pool thread carries neither a context nor a tenant of its own)."""

        def task() -> R:
            with self.tenant_context(tenant_id):
                return func(*args, **kwargs)

        return executor.submit(task)

    def submit(
        self, executor: Executor, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> Future[R]:
        """``executor.submit`` with ``func`` run inside an application context of this app.

        Each task gets a fresh context in the worker thread (pool threads carry no context), so
        one task's ``g`` is never seen by the next task of the same worker.
        """
        return executor.submit(self.wrap(func), *args, **kwargs)
