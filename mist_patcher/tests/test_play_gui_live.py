"""Issue 14's "done when": in the desktop app (offscreen Qt) against the live server and a real worker, a
friend installs the Linux build, presses Play (the game really runs), is offered a waiting update before
playing, and then sees the playtime on the store's game page in real Chromium."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from builds.services import push_version
from catalog.models import Game
from conftest import password_of
from downloads.models import PlaySession
from mist.store.tests.browser import chromium, log_in, screenshot, wait_for
from mist_patcher.core.play import PlayResult
from mist_patcher.tests.test_gui import ARTIFACTS, run_card_action, sign_in
from mist_patcher.tests.test_play_live import _game_build, _ready, arcade  # noqa: F401  (fixture)
from mist_patcher.ui.app import create_window
from mist_patcher.ui.gc import MainThreadGarbageCollector
from mist_patcher.ui.theme import apply_theme

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.needs_tool("chromium", "chromedriver")]


def _click_in_dialog(label: str, seen: list[str]) -> None:
    box = QApplication.activeModalWidget()
    if not isinstance(box, QMessageBox):
        QTimer.singleShot(50, lambda: _click_in_dialog(label, seen))
        return
    seen.append(box.text())
    for button in box.buttons():
        if button.text() == label:
            button.click()


def test_press_play_in_the_app_and_see_the_playtime_in_the_store(
    qtbot: Any, qapp: Any, arcade: Game, live_server: Any, friend: Any, admin_user: Any, worker: Any,  # noqa: F811
    tmp_path: Path, patcher_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "game-out"
    out.mkdir()
    monkeypatch.setenv("MIST_PATCHER_PLATFORM", "linux")  # this machine's own OS: the Linux build
    monkeypatch.setenv("GAME_OUT", str(out))
    monkeypatch.setenv("GAME_SECONDS", "1")
    collector = MainThreadGarbageCollector(qapp)
    apply_theme(qapp)
    win = create_window(server=live_server.url)
    win.ctx.api.job_poll_interval = 0.05
    win.ctx.settings.install_root = str(tmp_path / "games")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    try:
        sign_in(qtbot, win)
        card = win.library.cards["arcade"]
        assert not card.play_button.isVisible()  # nothing to play before the install
        run_card_action(qtbot, win, "arcade")  # Install
        qtbot.waitUntil(lambda: card.play_button.isVisible(), timeout=10_000)
        ARTIFACTS.mkdir(exist_ok=True)
        assert win.grab().save(str(ARTIFACTS / "patcher-play-button.png"))

        job = run_card_action(qtbot, win, "arcade", "play_button", timeout=60_000)
        result = job.result
        assert isinstance(result, PlayResult), job.error
        assert result.exit_code == 3 and result.platform == "linux" and result.seconds >= 1
        assert (out / "args.txt").read_text().splitlines() == ["--fullscreen", "two words"]
        assert PlaySession.objects.filter(pk=result.session_id, user=friend, version_name="1.0").exists()
        row = win.downloads.row_for(job)
        assert row is not None and "Played" in row.detail.text()

        # An update is waiting: Play asks first; "Play now" plays the installed version.
        v2 = push_version(game=arcade, name="1.1", source=_game_build(tmp_path / "src-1.1", 15), platform="linux",
                          user=admin_user).version
        worker.wait_for(lambda: _ready(v2.pk), timeout=180, what="1.1 ready")
        with qtbot.waitSignal(win.library_loaded, timeout=15_000):
            win.refresh_library()
        qtbot.waitUntil(lambda: win.library.cards["arcade"].entry.state == "update_available", timeout=10_000)
        asked: list[str] = []
        QTimer.singleShot(100, lambda: _click_in_dialog("Play now", asked))
        job = run_card_action(qtbot, win, "arcade", "play_button", timeout=60_000)
        assert asked and "1.1 is available" in asked[0]
        assert isinstance(job.result, PlayResult) and job.result.version == "1.0"
        assert win.grab().save(str(ARTIFACTS / "patcher-played.png"))
    finally:
        win.shutdown()
        collector.stop()
        collector.deleteLater()

    # An evening's session the patcher recorded while offline, sent with the next sync.
    evening = {"id": str(uuid.uuid4()), "game": "arcade", "version": "1.0", "platform": "linux", "option": "Play",
               "started_at": time.time() - 3 * 3600, "heartbeat_at": time.time() - 3 * 3600 + 25 * 60,
               "ended_at": time.time() - 3 * 3600 + 25 * 60, "exit_code": 0, "pid": None, "log": "", "status": "",
               "reason": ""}
    (patcher_home / "sessions" / f"{evening['id']}.json").write_text(json.dumps(evening))
    from mist_patcher.core.context import open_context
    from mist_patcher.core.play import sync_sessions

    assert sync_sessions(open_context(server=live_server.url, home=patcher_home)).sent == 1
    assert PlaySession.objects.filter(user=friend).count() == 3

    with chromium() as driver:
        log_in(driver, live_server.url, "friend", password_of(friend))
        wait_for(driver, ".game-grid")
        assert "Played 25 min" in driver.find_element("css selector", "[data-testid='card-playtime']").text
        driver.get(f"{live_server.url}/games/arcade/?platform=linux")
        shown = wait_for(driver, "[data-testid='playtime']").text  # type: ignore[attr-defined]
        assert "25 min" in shown and "last played" in shown, shown
        screenshot(driver, "game-playtime")
