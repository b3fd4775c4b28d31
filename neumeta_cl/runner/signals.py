"""SIGTERM (what SLURM sends before preempting) and SIGINT (Ctrl-C) stop a run at a safe point.

The handler raises ``RunInterrupted`` where the run is, unless it is inside a ``critical()``
section (a checkpoint or results.json being written): there the signal waits until the section
ends. The experience in progress is dropped; the checkpoint of the last finished one stays, and a
rerun resumes from it. ``RunInterrupted`` is not a ``KeyboardInterrupt`` on purpose: Lightning
answers a KeyboardInterrupt inside ``Trainer.fit`` with ``sys.exit(1)``.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from neumeta_cl.errors import RunInterrupted

__all__ = ["GracefulStop", "RunInterrupted"]


class GracefulStop:
    """Installs the handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.pending: int | None = None
        self._depth = 0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.pending is not None and self._depth == 0:
            return  # already stopping
        self.pending = signum
        if self._depth == 0:
            raise RunInterrupted(signum)

    @contextlib.contextmanager
    def critical(self):
        """Signals that arrive inside wait until the section is done."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self.pending is not None:
            raise RunInterrupted(self.pending)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
