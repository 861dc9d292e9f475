"""The desktop app, driven for real (offscreen): sign in, install, update, cancel, screenshot."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt application exists

import math
import random
from pathlib import Path

import pytest
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QRadialGradient

from mist_patcher.core.install import install_game
from mist_patcher.tests.conftest import tree_bytes, write_game
from mist_patcher.tests.fakeserver import FakeMist
from mist_patcher.ui.app import create_window
from mist_patcher.ui.gc import MainThreadGarbageCollector
from mist_patcher.ui.theme import apply_theme

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def header_png(title: str, hue: float, seed: int) -> bytes:
    """A 460x215 Steam-style header: sky gradient, stars or hills, glow, and the title."""
    rng = random.Random(seed)
    image = QImage(460, 215, QImage.Format.Format_RGB32)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    sky = QLinearGradient(0, 0, 0, 215)
    sky.setColorAt(0, QColor.fromHsvF(hue, 0.85, 0.25))
    sky.setColorAt(1, QColor.fromHsvF((hue + 0.08) % 1, 0.7, 0.75))
    p.fillRect(0, 0, 460, 215, sky)
    for _ in range(120):
        p.setPen(QColor(255, 255, 255, rng.randint(60, 220)))
        p.drawPoint(rng.randint(0, 459), rng.randint(0, 130))
    glow = QRadialGradient(QPointF(340, 70), 90)
    glow.setColorAt(0, QColor(255, 240, 200, 230))
    glow.setColorAt(1, QColor(255, 200, 120, 0))
    p.setBrush(glow)
    p.setPen(Qt.PenStyle.NoPen)
    p.drawEllipse(QPointF(340, 70), 90, 90)
    for layer, shade in enumerate((0.35, 0.2, 0.1)):
        p.setBrush(QColor.fromHsvF((hue + 0.55) % 1, 0.6, shade))
        points = [QPointF(0, 215)]
        for x in range(0, 470, 10):
            y = 150 + layer * 20 + 25 * math.sin(x / (40 + 15 * layer) + seed + layer)
            points.append(QPointF(x, y))
        points.append(QPointF(460, 215))
        p.drawPolygon(points)
    p.setPen(QColor("white"))
    font = QFont()
    font.setPointSize(26)
    font.setBold(True)
    p.setFont(font)
    p.drawText(QRectF(22, 120, 420, 80), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, title.upper())
    p.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")  # type: ignore[call-overload]
    return bytes(data)  # type: ignore[call-overload]


@pytest.fixture
def gui_server(fake_server: FakeMist, tmp_path: Path) -> FakeMist:
    for slug, title, seed, size in (("rally-racer", "Rally Racer", 11, 200_000),
                                    ("dungeon-deep", "Dungeon Deep", 12, 3_000_000),
                                    ("star-farmer", "Star Farmer", 13, 100_000)):
        folder = write_game(tmp_path / "extra" / slug, {
            "game.bin": random.Random(seed).randbytes(size), "assets/intro.txt": title.encode()})
        fake_server.add_version(slug, "1.0", folder, title=title)
    for slug, hue, seed in (("space-game", 0.62, 1), ("rally-racer", 0.05, 2), ("dungeon-deep", 0.78, 3),
                            ("star-farmer", 0.3, 4)):
        fake_server.header_images[slug] = header_png(fake_server.games[slug].title, hue, seed)
    return fake_server


@pytest.fixture(autouse=True)
def ui_thread_gc(qapp):  # type: ignore[no-untyped-def]
    """As in the app: no garbage collection on worker threads (Qt objects must die on the UI thread)."""
    collector = MainThreadGarbageCollector(qapp)
    yield
    collector.stop()
    collector.deleteLater()


@pytest.fixture
def window(qtbot, qapp, patcher_home: Path, gui_server: FakeMist):  # type: ignore[no-untyped-def]
    apply_theme(qapp)
    win = create_window(server=gui_server.url)
    win.ctx.api.job_poll_interval = 0.05
    win.ctx.settings.install_root = str(patcher_home.parent / "games")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.shutdown()


def sign_in(qtbot, win) -> None:  # type: ignore[no-untyped-def]
    assert win.stack.currentWidget() is win.signin
    qtbot.keyClicks(win.signin.username, "friend")
    qtbot.keyClicks(win.signin.password, "friend-Passw0rd!")
    with qtbot.waitSignal(win.library_loaded, timeout=15_000):
        qtbot.mouseClick(win.signin.button, Qt.MouseButton.LeftButton)


def run_card_action(qtbot, win, slug: str, button: str = "primary", timeout: int = 30_000):  # type: ignore[no-untyped-def]
    card = win.library.cards[slug]
    with qtbot.waitSignal(win.job_started, timeout=5_000) as started:
        qtbot.mouseClick(getattr(card, button), Qt.MouseButton.LeftButton)
    job = started.args[0]
    if not job.control.cancelled:
        with qtbot.waitSignal(job.finished, timeout=timeout):
            pass
    return job


def test_wrong_password_shows_an_error_and_stays_on_sign_in(qtbot, window) -> None:
    qtbot.keyClicks(window.signin.username, "friend")
    qtbot.keyClicks(window.signin.password, "nope")
    qtbot.mouseClick(window.signin.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.signin.error.isVisible(), timeout=10_000)
    assert "Wrong username or password" in window.signin.error.text()
    assert window.stack.currentWidget() is window.signin
    assert not window.ctx.api.logged_in


def test_sign_in_install_update_and_cancel(qtbot, window, gui_server: FakeMist, builds, patcher_home: Path) -> None:
    # given: space-game 1.0 already installed, so the library offers an update
    window.ctx.api.login("friend", "friend-Passw0rd!")
    install_game(window.ctx, slug="space-game", version="1.0")
    window.ctx.api.logout()
    window.show_sign_in()
    sign_in(qtbot, window)
    cards = window.library.cards
    assert set(cards) == {"space-game", "rally-racer", "dungeon-deep", "star-farmer"}
    assert cards["space-game"].badge.isVisible() and cards["space-game"].primary.text() == "Update"
    assert cards["rally-racer"].primary.text() == "Install"
    # screenshot of the library as a user first sees it: header images, the update badge
    qtbot.waitUntil(lambda: all(c.has_header_image for c in cards.values()), timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    assert window.grab().save(str(ARTIFACTS / "patcher-library.png"))

    # when: install from the card
    job = run_card_action(qtbot, window, "rally-racer")
    # then
    assert job.state == "done", job.error
    installed = Path(window.ctx.state.require("rally-racer").path)
    assert tree_bytes(installed) == tree_bytes(gui_server.version("rally-racer", "1.0").tree)
    assert cards["rally-racer"].installed_badge.isVisible()
    assert window.downloads.row_for(job).detail.text() == "Done"

    # when: update from the badge's card
    job = run_card_action(qtbot, window, "space-game")
    assert job.state == "done", job.error
    assert tree_bytes(Path(window.ctx.state.require("space-game").path)) == tree_bytes(builds["3.0"])
    assert not cards["space-game"].badge.isVisible()

    # when: a slow install is cancelled from the downloads panel while it downloads
    gui_server.chunk_delay = 0.05
    card = cards["dungeon-deep"]
    with qtbot.waitSignal(window.job_started, timeout=5_000) as started:
        qtbot.mouseClick(card.primary, Qt.MouseButton.LeftButton)
    job = started.args[0]
    row = window.downloads.row_for(job)
    qtbot.waitUntil(lambda: row.bar.value() > 0, timeout=15_000)
    assert not card.primary.isEnabled()  # busy while the job runs
    # the window stays responsive while the job downloads: a pause/resume round trip works
    qtbot.mouseClick(row.pause_button, Qt.MouseButton.LeftButton)
    assert row.pause_button.text() == "Resume" and job.state == "paused"
    qtbot.mouseClick(row.pause_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(job.finished, timeout=15_000):
        qtbot.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
    # then
    assert job.state == "cancelled"
    assert "Cancelled" in row.detail.text()
    record = window.ctx.state.get("dungeon-deep")
    assert record is None or not record.complete
    assert list(window.ctx.state.downloads_dir.glob("dungeon-deep-1.0.tar.zst.part"))  # kept for resume
    gui_server.chunk_delay = 0.0

    # screenshot after the work: installed badges and the downloads panel's history
    window.refresh_local()
    shot = window.grab()
    assert shot.save(str(ARTIFACTS / "patcher-downloads.png"))
    assert shot.width() >= 1000


def test_mist_link_installs_the_game_after_sign_in(qtbot, qapp, patcher_home: Path, gui_server: FakeMist) -> None:
    apply_theme(qapp)
    win = create_window(server=gui_server.url, url="mist://install/star-farmer")
    win.ctx.settings.install_root = str(patcher_home.parent / "games")
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.job_started, timeout=15_000) as started:
        sign_in(qtbot, win)
    job = started.args[0]
    with qtbot.waitSignal(job.finished, timeout=30_000):
        pass
    assert (job.kind, job.slug, job.state) == ("install", "star-farmer", "done")
    assert win.ctx.state.require("star-farmer").complete
    win.shutdown()


def test_settings_dialog_changes_the_bandwidth_limit_of_running_downloads(qtbot, window, gui_server, tmp_path) -> None:
    from mist_patcher.core.config import Settings
    from mist_patcher.ui.settings_dialog import SettingsDialog

    sign_in(qtbot, window)
    dialog = SettingsDialog(window.ctx.settings, server=window.ctx.server, install_root=str(tmp_path / "lib"))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.limit.setText("fast")
    dialog._accept()
    assert dialog.error.isVisible() and "unreadable rate" in dialog.error.text()
    dialog.limit.setText("5M")
    dialog._accept()
    assert dialog.values() == (window.ctx.server, str(tmp_path / "lib"), 5 * 1024 * 1024)
    window.apply_settings(*dialog.values())  # type: ignore[misc]
    assert window.ctx.limiter.rate == 5 * 1024 * 1024  # the shared token bucket, used by running jobs
    saved = Settings.load(window.ctx.home)
    assert (saved.limit_rate, saved.install_root) == (5 * 1024 * 1024, str(tmp_path / "lib"))
