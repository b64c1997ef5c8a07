"""Each revision as it starts, and how long it took: what a migration run tells its operator.

``Running upgrade 0001 -> 0002, Add performance_alerts … 0.04 s`` is written for every revision
a run applies, whichever door it came through: to standard output for the command lines
(``alembic``, ``flask db``, ``ai-secretary-schema``), as INFO log lines for the startup hook. A
run with nothing to do writes nothing.

Alembic has no public hook before a revision starts; it logs ``Running <step>`` on the
``alembic.runtime.migration`` logger just before it. :meth:`MigrationProgress.watching` listens
for that record (lowering the logger's level for the run if needed, and letting through only what
would have passed anyway) and reports it in its own words instead; ``on_version_apply``
(:meth:`MigrationProgress.finished`) says when the revision committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

logger = logging.getLogger(__name__)

ALEMBIC_LOGGER = "alembic.runtime.migration"


class MigrationProgress:
    """Reports the revisions of one run to ``stream``, or to the log when it is ``None``."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._step: str | None = None
        self._started = 0.0

    def started(self, step: str) -> None:
        self._step, self._started = step, time.monotonic()
        if self.stream is None:
            logger.info("Running %s …", step)
        else:
            self.stream.write(f"Running {step} … ")
            self.stream.flush()

    def finished(self, **_kwargs: Any) -> None:
        """The ``on_version_apply`` callback: the revision that started has committed."""
        if self._step is None:
            return
        elapsed = time.monotonic() - self._started
        if self.stream is None:
            logger.info("Ran %s in %.2f s", self._step, elapsed)
        else:
            self.stream.write(f"{elapsed:.2f} s\n")
            self.stream.flush()
        self._step = None

    def _failed(self) -> None:
        if self._step is not None and self.stream is not None:
            self.stream.write("failed\n")
            self.stream.flush()
        self._step = None

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Report the revisions Alembic starts inside the ``with`` block."""
        alembic_logger = logging.getLogger(ALEMBIC_LOGGER)
        shown_before = alembic_logger.getEffectiveLevel()
        level_before = alembic_logger.level
        progress_filter = _StepFilter(self, shown_before)
        alembic_logger.addFilter(progress_filter)
        if shown_before > logging.INFO:
            alembic_logger.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            self._failed()
            raise
        finally:
            alembic_logger.removeFilter(progress_filter)
            alembic_logger.setLevel(level_before)


class _StepFilter(logging.Filter):
    """Turns Alembic's ``Running <step>`` record into a report; passes the rest as before."""

    def __init__(self, progress: MigrationProgress, shown_level: int) -> None:
        super().__init__()
        self.progress = progress
        self.shown_level = shown_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Running %s" and isinstance(record.args, tuple) and record.args:
            self.progress.started(str(record.args[0]))
            return False
        return record.levelno >= self.shown_level
