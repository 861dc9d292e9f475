"""Start the desktop app: ``mist-patcher gui [mist://install/<slug>]``."""

from __future__ import annotations

import signal
import sys

from PySide6.QtWidgets import QApplication

from mist_patcher.core.context import open_context
from mist_patcher.core.recovery import recover_all
from mist_patcher.core.units import parse_rate
from mist_patcher.ui.gc import MainThreadGarbageCollector
from mist_patcher.ui.main_window import MainWindow
from mist_patcher.ui.theme import apply_theme


def create_window(*, server: str | None = None, url: str | None = None, limit_rate: str | None = None) -> MainWindow:
    """Build the context (after crash recovery) and the main window; the QApplication must exist."""
    ctx = open_context(server=server, limit_rate=parse_rate(limit_rate) if limit_rate else None)
    # Recovery is local and quick (journal replay); it must run before anything reads the installs.
    recover_all(ctx)
    return MainWindow(ctx, pending_url=url)


def run_gui(*, server: str | None = None, url: str | None = None, limit_rate: str | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Mist")
    app.setOrganizationName("Mist")
    apply_theme(app)  # type: ignore[arg-type]
    # Ctrl-C and SIGTERM close the window cleanly (jobs cancelled, stages discarded); the
    # collector's timer also gives Python a chance to run signal handlers while Qt waits.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: app.quit())
    collector = MainThreadGarbageCollector(app)
    window = create_window(server=server, url=url, limit_rate=limit_rate)
    window.show()
    try:
        return int(app.exec())
    finally:
        window.shutdown()
        collector.stop()
