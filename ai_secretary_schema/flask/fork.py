"""Fork safety: no pool, lock or thread of the extension is shared across ``os.fork()``.

Servers that load the application and then fork their workers (``gunicorn --preload``, uWSGI
without ``lazy-apps``, multiprocessing's ``fork`` start method) run ``init_app`` in the parent:
it connects, runs the startup hook and may start the health monitor there. Each child then
inherits

* the engine's pooled connections, i.e. the very sockets the parent (and every other child)
  uses. Two processes talking over one socket interleave their protocol messages: psycopg2
  fails with "error with status PGRES_TUPLES_OK and no message from the libpq", "server closed
  the connection unexpectedly", or hands one process the rows another asked for;
* locks that another thread of the parent (a health check, the monitor) may have held at the
  instant of the fork, held forever in the child, whose other threads did not survive it;
* none of the parent's threads: the background monitor and checks in flight are gone.

Every object of the extension that owns such a thing registers here (:func:`register`) and
implements :class:`ForkAware`. One handler (:func:`os.register_at_fork`) then runs in every
forked child, in two passes: first every object drops what belongs to the parent
(:meth:`ForkAware.reset_after_fork`: the engine gets a new, empty pool with
``engine.dispose(close=False)``, SQLAlchemy's recipe from "Using Connection Pools with
Multiprocessing or os.fork()"; locks are replaced; checks in flight are forgotten), then the
threads that ran in the parent are started again (:meth:`ForkAware.resume_after_fork`), so
that a restarted monitor never sees an object that still holds the parent's resources.

Objects are held by weak reference: registering an application's state never keeps a
discarded application alive. The Redis client of the cache needs nothing here: redis-py's
``ConnectionPool`` compares ``os.getpid()`` on every checkout and starts over in a child
(tests/test_fork.py checks that the child's Redis connection is its own).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["ForkAware", "register", "unregister"]

logger = logging.getLogger(__name__)


class ForkAware(Protocol):
    """What an object registered with :func:`register` does in a forked child."""

    def reset_after_fork(self) -> None:
        """Drop what the parent's process owns (pooled connections, locks, work in flight).

        Runs in the child while it has a single thread, before any ``resume_after_fork``. It
        must neither close nor use anything inherited: closing a socket the parent still uses
        (or rolling back on it) would break the parent's connection.
        """

    def resume_after_fork(self) -> None:
        """Start again the threads that ran in the parent (after every reset)."""


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Have ``obj`` reset (and resumed) in every process forked from now on."""
    _registered.add(obj)


def unregister(obj: ForkAware) -> None:
    """Stop handling ``obj`` (it was closed); unknown objects are ignored."""
    _registered.discard(obj)


def _after_fork_in_child() -> None:
    objects = list(_registered)
    for obj in objects:
        _run(obj.reset_after_fork, obj)
    for obj in objects:
        _run(obj.resume_after_fork, obj)


def _run(step: Callable[[], None], obj: ForkAware) -> None:
    try:
        step()
    except Exception:  # one object's failure must not leave the others shared
        logger.exception(
            "%s.%s failed in the forked process %d, which may now share its parent's "
            "connections; load the application after the fork instead (gunicorn without "
            "--preload, uWSGI lazy-apps)",
            type(obj).__name__,
            step.__name__,
            os.getpid(),
        )


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
