"""The launcher window: top bar, sign-in or library, and the downloads panel.

Every network or disk operation runs as a ``CoreJob`` on its own QThread; the window only
reacts to their signals, so it never freezes.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QPixmap
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from mist_patcher.core.context import PatcherContext, open_context
from mist_patcher.core.download import fetch_bytes_or_none
from mist_patcher.core.errors import ConfigError
from mist_patcher.core.library import LibraryEntry, merge_library
from mist_patcher.core.links import MistLink, parse_mist_url
from mist_patcher.core.platform import default_platform
from mist_patcher.core.play import PlayResult
from mist_patcher.core.repair import RepairResult
from mist_patcher.core.units import format_duration
from mist_patcher.core.verify import VerifyReport
from mist_patcher.jobs import operations
from mist_patcher.jobs.worker import CoreJob, call
from mist_patcher.ui.downloads import DownloadsPanel
from mist_patcher.ui.library import LibraryPage
from mist_patcher.ui.settings_dialog import SettingsDialog
from mist_patcher.ui.signin import SignInPage

OPERATIONS: dict[str, Callable[..., CoreJob]] = {
    "install": operations.install_job,
    "update": operations.update_job,
    "verify": operations.verify_job,
    "repair": operations.repair_job,
    "rollback": operations.rollback_job,
    "uninstall": operations.uninstall_job,
    "play": operations.play_job,
}


def _ignore(message: str) -> None:
    """Header images are decoration: a failed fetch leaves the generated placeholder."""


class MainWindow(QMainWindow):
    """The desktop app. ``library_loaded`` fires after each library refresh (tests wait on it)."""

    library_loaded = Signal()
    job_started = Signal(object)

    def __init__(self, ctx: PatcherContext, *, pending_url: str | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.setWindowTitle("Mist")
        self.resize(1080, 720)
        self.jobs: list[CoreJob] = []
        self.running: dict[str, CoreJob] = {}
        self.server_games: list[dict[str, Any]] | None = None
        self.pending_link: MistLink | None = None
        self.last_error = ""

        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(0, 0, 0, 0)
        root.setSpacing(0)
        root.addWidget(self._top_bar())
        self.stack = QStackedWidget()
        self.signin = SignInPage(ctx.server)
        self.signin.password_submitted.connect(self.sign_in_with_password)
        self.signin.code_submitted.connect(self.sign_in_with_code)
        self.stack.addWidget(self.signin)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.library = LibraryPage()
        self.library.action.connect(self.start_operation)
        self.library.refresh_requested.connect(self.refresh_library)
        self.splitter.addWidget(self.library)
        self.downloads = DownloadsPanel()
        self.splitter.addWidget(self.downloads)
        self.splitter.setSizes([520, 200])
        self.stack.addWidget(self.splitter)
        root.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        if pending_url:
            self.handle_url(pending_url)
        if ctx.api.logged_in:
            self.show_library()
        else:
            self.show_sign_in()

    # --- chrome -------------------------------------------------------------------------------

    def _top_bar(self) -> QWidget:
        bar = QWidget()
        bar.setObjectName("TopBar")
        bar.setFixedHeight(56)
        layout = QHBoxLayout(bar)
        layout.setContentsMargins(24, 0, 24, 0)
        layout.setSpacing(22)
        logo = QLabel("MIST")
        logo.setObjectName("Logo")
        layout.addWidget(logo)
        self.nav_library = QLabel("LIBRARY")
        self.nav_library.setObjectName("NavLabelActive")
        layout.addWidget(self.nav_library)
        self.nav_store = QLabel("STORE")
        self.nav_store.setObjectName("NavLabel")
        self.nav_store.setCursor(Qt.CursorShape.PointingHandCursor)
        self.nav_store.mousePressEvent = self._open_store  # type: ignore[method-assign,assignment]
        layout.addWidget(self.nav_store)
        layout.addStretch(1)
        self.user_label = QLabel()
        self.user_label.setObjectName("UserLabel")
        layout.addWidget(self.user_label)
        self.settings_button = QPushButton("Settings")
        self.settings_button.clicked.connect(self.open_settings)
        layout.addWidget(self.settings_button)
        self.sign_out_button = QPushButton("Sign out")
        self.sign_out_button.clicked.connect(self.sign_out)
        layout.addWidget(self.sign_out_button)
        return bar

    def _open_store(self, event: object) -> None:
        QDesktopServices.openUrl(QUrl(self.ctx.server))

    def _update_user(self) -> None:
        tokens = self.ctx.api.tokens
        host = self.ctx.server.split("://", 1)[-1]
        if tokens:
            self.user_label.setText(f"{tokens.username or 'paired device'} @ {host}")
        else:
            self.user_label.setText(host)
        self.sign_out_button.setVisible(tokens is not None)

    # --- sign-in ------------------------------------------------------------------------------

    def show_sign_in(self, message: str = "") -> None:
        self._update_user()
        self.signin.server.setText(self.ctx.server)
        self.stack.setCurrentWidget(self.signin)
        if message:
            self.signin.show_error(message)

    def show_library(self) -> None:
        self._update_user()
        self.stack.setCurrentWidget(self.splitter)
        self.library.set_entries(merge_library(self.server_games, self.ctx.state.all()))
        self.refresh_library()

    def _use_server(self, server: str) -> bool:
        try:
            if server and server.rstrip("/") != self.ctx.server:
                self.ctx = open_context(server=server, limit_rate=self.ctx.limiter.rate)
                self.ctx.settings.server_url = self.ctx.server
                self.ctx.settings.save(self.ctx.home)
                self.server_games = None
        except ConfigError as exc:
            self.signin.show_error(str(exc))
            return False
        return True

    def sign_in_with_password(self, server: str, username: str, password: str) -> None:
        if self._use_server(server):
            self._run_quick(lambda: self.ctx.api.login(username, password), "login", self._signed_in,
                            self._sign_in_failed)

    def sign_in_with_code(self, server: str, code: str) -> None:
        if self._use_server(server):
            self._run_quick(lambda: self.ctx.api.redeem_pairing_code(code, device_name=socket.gethostname()),
                            "login", self._signed_in, self._sign_in_failed)

    def _signed_in(self, tokens: Any) -> None:
        self.signin.clear_secrets()
        self.signin.set_busy(False)
        self.show_library()

    def _sign_in_failed(self, message: str) -> None:
        self.signin.show_error(message)

    def sign_out(self) -> None:
        self._run_quick(self.ctx.api.logout, "logout", lambda _: self.show_sign_in(), lambda m: self.show_sign_in(m))

    # --- library ------------------------------------------------------------------------------

    def refresh_library(self) -> None:
        def load() -> tuple[list[dict[str, Any]], list[LibraryEntry]]:
            games = self.ctx.api.games(platform=default_platform())
            return games, merge_library(games, self.ctx.state.all())

        self._run_quick(load, "library", self._library_ready, self._library_failed)

    def _library_ready(self, result: tuple[list[dict[str, Any]], list[LibraryEntry]]) -> None:
        self.server_games, entries = result
        self.library.message.setText("")
        self.library.set_entries(entries)
        for card in self.library.cards.values():
            card.set_busy(card.entry.slug in self.running)
        self._load_headers(entries)
        self.library_loaded.emit()
        self._follow_pending_link()

    def _library_failed(self, message: str) -> None:
        if "log in" in message or "not logged in" in message:
            self.show_sign_in(message)
            return
        self.library.message.setText(f"Offline: {message}")
        self.library.set_entries(merge_library(self.server_games, self.ctx.state.all()))
        self.library_loaded.emit()

    def refresh_local(self) -> None:
        """Re-merge install state after a job, without a network round trip."""
        self.library.set_entries(merge_library(self.server_games, self.ctx.state.all()))
        for card in self.library.cards.values():
            card.set_busy(card.entry.slug in self.running)

    def _load_headers(self, entries: list[LibraryEntry]) -> None:
        for entry in entries:
            url = entry.header_image_url
            if not url:
                continue
            cache = self.ctx.state.images_dir / (hashlib.sha256(url.encode()).hexdigest()[:24] + ".img")
            if cache.exists():
                self._set_header(entry.slug, cache.read_bytes())
                continue

            def fetch(url: str = url, cache: Any = cache) -> bytes | None:
                data = fetch_bytes_or_none(self.ctx.api, url)
                if data:
                    cache.write_bytes(data)
                return data

            self._run_quick(fetch, "image", partial(self._set_header, entry.slug), _ignore)

    def _set_header(self, slug: str, data: bytes | None) -> None:
        card = self.library.cards.get(slug)
        if card is None or not data:
            return
        pixmap = QPixmap()
        if pixmap.loadFromData(data):
            card.set_header(pixmap)

    # --- operations ---------------------------------------------------------------------------

    def start_operation(self, kind: str, slug: str) -> CoreJob | None:
        if slug in self.running:
            return None
        card = self.library.cards.get(slug)
        title = card.entry.title if card else slug
        if kind == "play" and card is not None and card.entry.state == "update_available":
            choice = self.ask_update_before_play(card.entry)
            if choice == "cancel":
                return None
            job = operations.play_job(self.ctx, slug, title=title, update_first=choice == "update")
        else:
            job = OPERATIONS[kind](self.ctx, slug, title=title)
        self.running[slug] = job
        self.jobs.append(job)
        self.downloads.add_job(job)
        job.succeeded.connect(lambda result, j=job: self._operation_done(j, result))
        job.failed.connect(lambda message, j=job: self._operation_failed(j, message))
        job.finished.connect(lambda j=job: self._operation_finished(j))
        if card:
            card.set_busy(True)
        job.start()
        self.job_started.emit(job)
        return job

    def ask_update_before_play(self, entry: LibraryEntry) -> str:
        """An update is waiting: "update" (update, then play), "play" (play the installed version) or "cancel"."""
        box = QMessageBox(self)
        box.setObjectName("UpdateBeforePlay")
        box.setWindowTitle("Update available")
        box.setText(f"{entry.title} {entry.latest_version} is available (installed: {entry.installed_version}).")
        box.setInformativeText("Update first, or play the installed version now?")
        update = box.addButton("Update and play", QMessageBox.ButtonRole.AcceptRole)
        play = box.addButton("Play now", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(update)
        box.exec()
        clicked = box.clickedButton()
        return "update" if clicked is update else "play" if clicked is play else "cancel"

    def _operation_done(self, job: CoreJob, result: Any) -> None:
        row = self.downloads.row_for(job)
        if row is None:
            return
        if isinstance(result, VerifyReport):
            row.detail.setText(
                f"All {result.checked} files intact" if result.healthy else
                f"{len(result.modified)} modified, {len(result.missing)} missing — use Repair"
            )
        elif isinstance(result, RepairResult):
            row.detail.setText(f"Repaired {len(result.repaired) + len(result.modes_fixed)} file(s)"
                               if not result.before.healthy else "Nothing to repair")
        elif isinstance(result, PlayResult):
            row.detail.setText(f"Played {format_duration(result.seconds)} (exit code {result.exit_code})")
        elif hasattr(result, "up_to_date") and result.up_to_date:
            row.detail.setText("Already up to date")

    def _operation_failed(self, job: CoreJob, message: str) -> None:
        self.last_error = message

    def _operation_finished(self, job: CoreJob) -> None:
        self.running.pop(job.slug, None)
        self.refresh_local()

    # --- links and settings -------------------------------------------------------------------

    def handle_url(self, url: str) -> None:
        """A mist://install/<slug> link: install it (or update it) once the library is known.

        Used at startup and for the links later launches forward to this window (single instance).
        """
        try:
            self.pending_link = parse_mist_url(url)
        except ConfigError as exc:
            self.last_error = str(exc)
            self.library.message.setText(str(exc))
            return
        if self.server_games is None or not self.ctx.api.logged_in:
            return  # followed once the library has loaded (after sign-in if need be)
        if self.pending_link.slug in self.library.cards:
            self._follow_pending_link()
        else:
            self.refresh_library()  # e.g. bought in the store since the library loaded

    def bring_to_front(self) -> None:
        """Show, un-minimise, raise and activate the window (a later launch asked for it)."""
        self.setWindowState((self.windowState() & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
        self.show()
        self.raise_()
        self.activateWindow()

    def _follow_pending_link(self) -> None:
        link, self.pending_link = self.pending_link, None
        if link is None:
            return
        card = self.library.cards.get(link.slug)
        if card is None:
            self.library.message.setText(f"The server has no game {link.slug!r} for you")
            return
        self.library.scroll_area.ensureWidgetVisible(card)
        if link.action == "install":
            state = card.entry.state
            if state in ("not_installed", "incomplete"):
                self.start_operation("install", link.slug)
            elif state == "update_available":
                self.start_operation("update", link.slug)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.ctx.settings, server=self.ctx.server,
                                install_root=str(self.ctx.settings.effective_install_root(self.ctx.home)), parent=self)
        if dialog.exec() and dialog.values() is not None:
            self.apply_settings(*dialog.values())  # type: ignore[misc]

    def apply_settings(self, server: str, install_root: str, limit_rate: int) -> None:
        settings = self.ctx.settings
        settings.install_root = install_root
        settings.limit_rate = limit_rate
        settings.server_url = server
        settings.save(self.ctx.home)
        self.ctx.set_limit_rate(limit_rate)  # applies to downloads already running
        if server != self.ctx.server:
            self._use_server(server)
            if self.ctx.api.logged_in:
                self.show_library()
            else:
                self.show_sign_in()

    # --- plumbing -----------------------------------------------------------------------------

    def _run_quick(self, fn: Callable[[], Any], kind: str, ok: Callable[[Any], None],
                   fail: Callable[[str], None]) -> CoreJob:
        job = call(fn, kind=kind)
        job.succeeded.connect(ok)
        job.failed.connect(fail)
        job.finished.connect(lambda j=job: self._forget_job(j))
        self.jobs.append(job)
        job.start()
        return job

    def _forget_job(self, job: CoreJob) -> None:
        if job in self.jobs:
            self.jobs.remove(job)

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Cancel every job and wait for its thread (stages are discarded, partials kept)."""
        for job in list(self.jobs):
            job.cancel()
        for job in list(self.jobs):
            job.wait(timeout_ms)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
