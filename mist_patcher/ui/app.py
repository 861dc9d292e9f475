"""Start the desktop app: ``mist-patcher gui [mist://install/<slug>]``."""

from __future__ import annotations

import logging
import signal
import sys

from PySide6.QtWidgets import QApplication

from mist_patcher.core.config import patcher_home
from mist_patcher.core.context import open_context
from mist_patcher.core.recovery import recover_all
from mist_patcher.core.units import parse_rate
from mist_patcher.ui.gc import MainThreadGarbageCollector
from mist_patcher.ui.main_window import MainWindow
from mist_patcher.ui.single_instance import Message, SingleInstance
from mist_patcher.ui.theme import apply_theme

log = logging.getLogger(__name__)


def create_window(*, server: str | None = None, url: str | None = None, limit_rate: str | None = None) -> MainWindow:
    """Build the context (after crash recovery) and the main window; the QApplication must exist."""
    ctx = open_context(server=server, limit_rate=parse_rate(limit_rate) if limit_rate else None)
    # Recovery is local and quick (journal replay); it must run before anything reads the installs.
    recover_all(ctx)
    return MainWindow(ctx, pending_url=url)


def handle_message(window: MainWindow, message: Message) -> None:
    """A later launch's request: its link, handled as a fresh launch would, then the window to the front."""
    try:
        if message.url:
            window.handle_url(message.url)
        window.bring_to_front()
    except Exception:  # noqa: BLE001 - another launch's request must never take this app down
        log.exception("single instance: handling %s failed", message.url or "raise")


def _configure_logging() -> None:
    # The app's own notes (single instance) go to stderr, where a desktop launch's journal keeps them.
    logging.basicConfig(level=logging.WARNING, format="mist-patcher[%(process)d] %(levelname)s %(message)s")
    logging.getLogger("mist_patcher").setLevel(logging.INFO)


def run_gui(*, server: str | None = None, url: str | None = None, limit_rate: str | None = None) -> int:
    _configure_logging()
    # One app per user and patcher home: a later launch (every click on a store link) hands its link
    # to the running app and leaves, before it opens a window, a download engine or crash recovery.
    instance = SingleInstance(patcher_home())
    if instance.forward(url):
        log.info("Mist is already running; sent it %s", url or "a request to come to the front")
        return 0
    try:
        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setApplicationName("Mist")
        app.setOrganizationName("Mist")
        instance_server = instance.listen(app)
    finally:
        instance.release()
    apply_theme(app)  # type: ignore[arg-type]
    # Ctrl-C and SIGTERM close the window cleanly (jobs cancelled, stages discarded); the
    # collector's timer also gives Python a chance to run signal handlers while Qt waits.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: app.quit())
    collector = MainThreadGarbageCollector(app)
    # Requests that arrive while the window is being built wait for it.
    early: list[Message] = []
    built: list[MainWindow] = []
    if instance_server is not None:
        instance_server.message_received.connect(
            lambda message: handle_message(built[0], message) if built else early.append(message))
    window = create_window(server=server, url=url, limit_rate=limit_rate)
    built.append(window)
    window.show()
    for message in early:
        handle_message(window, message)
    try:
        return int(app.exec())
    finally:
        if instance_server is not None:
            instance_server.close()
        window.shutdown()
        collector.stop()
