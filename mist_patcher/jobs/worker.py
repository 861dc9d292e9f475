"""Run a core operation on its own QThread; progress, notes and the outcome arrive as signals.

The UI never blocks: a ``CoreJob`` lives on a worker thread, calls one core function with a
progress callback (emitted as a queued signal to the UI thread) and a ``Control`` the UI uses to
pause, resume or cancel it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from mist_patcher.core.control import Control
from mist_patcher.core.errors import Cancelled, PatcherError
from mist_patcher.core.progress import ProgressEvent
from mistcore.errors import MistCoreError

# A core operation: fn(progress, control, note) -> result.
Operation = Callable[[Callable[[ProgressEvent], None], Control, Callable[[str], None]], Any]


class CoreJob(QObject):
    """One operation on a worker thread. Connect the signals, then call ``start()``."""

    progress = Signal(object)  # ProgressEvent
    note = Signal(str)
    succeeded = Signal(object)  # the operation's result
    failed = Signal(str)  # a message for the user
    cancelled = Signal()
    finished = Signal()  # always, after one of succeeded / failed / cancelled

    def __init__(self, operation: Operation, *, kind: str = "", slug: str = "", title: str = "") -> None:
        super().__init__()
        self.operation = operation
        self.kind = kind
        self.slug = slug
        self.title = title or slug
        self.control = Control()
        self.result: Any = None
        self.error: str | None = None
        self.state = "queued"
        self._thread: QThread | None = None

    def start(self) -> None:
        thread = QThread()
        thread.setObjectName(f"mist-{self.kind}-{self.slug}")
        self.moveToThread(thread)
        thread.started.connect(self._run)
        self.finished.connect(thread.quit)
        self._thread = thread
        self.state = "running"
        thread.start()

    @property
    def thread_handle(self) -> QThread | None:
        return self._thread

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the thread ends (tests, application exit)."""
        return self._thread.wait(ms) if self._thread is not None else True

    # Thread-safe controls (the Control object is shared, not a Qt call).
    def pause(self) -> None:
        self.control.pause()
        self.state = "paused"

    def resume(self) -> None:
        self.control.resume()
        self.state = "running"

    def cancel(self) -> None:
        self.control.cancel()

    @Slot()
    def _run(self) -> None:
        try:
            self.result = self.operation(self.progress.emit, self.control, self.note.emit)
        except Cancelled:
            self.state = "cancelled"
            self.cancelled.emit()
        except (PatcherError, MistCoreError, OSError) as exc:
            self.state = "failed"
            self.error = str(exc)
            self.failed.emit(self.error)
        except Exception as exc:  # an unexpected bug must still reach the user, not kill the thread silently
            self.state = "failed"
            self.error = f"unexpected error: {exc}"
            traceback.print_exc()
            self.failed.emit(self.error)
        else:
            self.state = "done"
            self.succeeded.emit(self.result)
        finally:
            self.finished.emit()


def call(fn: Callable[[], Any], *, kind: str, slug: str = "", title: str = "") -> CoreJob:
    """A job for a quick call that takes no progress or control (library load, login)."""
    return CoreJob(lambda progress, control, note: fn(), kind=kind, slug=slug, title=title)
