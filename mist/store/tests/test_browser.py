"""Real headless Chromium against the live server: a friend browses, searches, opens a game, downloads,
pairs a patcher; the admin resyncs a game from the Steam fake. Screenshots go to test-artifacts/store/."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from catalog.models import Game, GameGrant
from catalog.services import refresh_header_image
from catalog.tests.steam_fake import SteamFake, make_png
from conftest import password_of
from mist.store.tests.browser import chromium, log_in, screenshot, wait_for
from mist.store.tests.factories import GB, MB, make_archive, make_game, make_version

pytestmark = [pytest.mark.needs_tool("chromium", "chromedriver"), pytest.mark.django_db(transaction=True)]

SHOWCASE = [
    ("portal", "Portal", (30, 60, 120), (230, 120, 40),
     "A puzzle game about thinking with portals, cake, and a very polite artificial intelligence."),
    ("hollow-depths", "Hollow Depths", (20, 40, 30), (90, 160, 90),
     "Descend through a living cavern that rearranges itself every night."),
    ("star-courier", "Star Courier", (10, 10, 40), (120, 60, 200),
     "Deliver parcels across a galaxy that does not want them delivered."),
    ("neon-drift", "Neon Drift", (60, 0, 80), (0, 200, 220),
     "Arcade racing through a city that never turns its lights off."),
    ("quiet-harbor", "Quiet Harbor", (40, 80, 110), (200, 200, 170),
     "Run a small fishing town through storms, festivals and one suspicious lighthouse."),
    ("ironclad", "Ironclad Tactics", (70, 50, 30), (180, 80, 40),
     "Turn-based battles of steam-powered walkers."),
]


def _showcase(steam: SteamFake, admin_user: Any, friend: Any) -> dict[str, Game]:
    games: dict[str, Game] = {}
    for i, (slug, title, top, bottom, description) in enumerate(SHOWCASE):
        url = steam.image(f"{slug}.png", make_png(460, 215, top=top, bottom=bottom))
        game = make_game(slug, title, steam_description=description, steam_header_url=url)
        assert refresh_header_image(game=game) == ""
        v1 = make_version(game, "1.0", total_size=(3 + i) * GB, archive_size=(2 + i) * GB, days_ago=40 - i,
                          notes="First release.")
        v2 = make_version(game, "1.1", parent=v1, total_size=(3 + i) * GB + 20 * MB, update_size=(12 + i) * MB,
                          days_ago=20 - i, notes="Fixes crashes on start.\nBetter controller support.")
        make_version(game, "1.2", parent=v2, total_size=(3 + i) * GB + 48 * MB, update_size=(48 + i) * MB,
                     archive_size=(2 + i) * GB + 40 * MB, days_ago=i, notes="New chapter: the lighthouse.")
        games[slug] = game
    secret = make_game("secret-beta", "Secret Beta", is_private=True,
                       steam_description="A private playtest for a few friends.")
    make_version(secret, "0.9", total_size=GB, archive_size=800 * MB)
    GameGrant.objects.create(game=secret, user=friend, granted_by=admin_user)
    make_game("admin-only", "Admin Only Prototype", is_private=True)
    games["secret-beta"] = secret
    # A small game whose archive is a real file, for the end-to-end download
    jam = make_game("tiny-jam", "Tiny Jam", steam_description="A game made in 48 hours.")
    make_version(jam, "1.0", total_size=300 * 1024)
    make_archive(jam.versions.get(name="1.0"), content=TINY_ARCHIVE)
    games["tiny-jam"] = jam
    return games


TINY_ARCHIVE = bytes(range(256)) * 256  # 64 KiB that a truncated or shifted download cannot fake


def _card_titles(driver: Any) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".card__title")]


def test_friend_browses_searches_opens_a_game_and_pairs_a_patcher(
    live_server: Any, steam: SteamFake, admin_user: Any, friend: Any, tmp_path: Path
) -> None:
    _showcase(steam, admin_user, friend)
    base = live_server.url
    saved = tmp_path / "downloads"
    saved.mkdir()
    with chromium(downloads=saved) as driver:
        # the store asks to sign in first
        driver.get(base + "/")
        assert "/accounts/login/" in driver.current_url
        log_in(driver, base, "friend", password_of(friend))
        wait_for(driver, ".game-grid")

        # library: visible games only (the granted private one, never the other)
        titles = _card_titles(driver)
        assert titles == sorted(titles)
        assert "Secret Beta" in titles and "Admin Only Prototype" not in titles and len(titles) == 8
        assert "8 games" in driver.find_element(By.CSS_SELECTOR, ".library__count").text
        images = driver.find_elements(By.CSS_SELECTOR, ".card__art img")
        assert len(images) == 6 and all(driver.execute_script("return arguments[0].naturalWidth", img) == 460 for img in images)
        screenshot(driver, "library")

        # keyboard: Tab from the top reaches the skip link, then focus is visible
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        active = driver.switch_to.active_element
        assert active.get_attribute("class") == "skip-link"
        assert driver.execute_script("return getComputedStyle(arguments[0]).top", active) != "-64px"

        # search from the header
        box = driver.find_element(By.ID, "site-search-q")
        box.send_keys("neon", Keys.ENTER)
        wait_for(driver, ".library__count")
        assert _card_titles(driver) == ["Neon Drift"]
        box = driver.find_element(By.ID, "site-search-q")
        box.clear()
        box.send_keys("prototype", Keys.ENTER)
        wait_for(driver, ".empty")
        assert _card_titles(driver) == [] and "0 games" in driver.page_source

        # open a game from the library
        driver.get(base + "/")
        driver.find_element(By.CSS_SELECTOR, 'a.card__link[href="/games/portal/"]').click()
        wait_for(driver, ".hero")
        assert driver.find_element(By.ID, "game-title").text.startswith("Portal")
        page = driver.find_element(By.TAG_NAME, "main").text
        assert "thinking with portals" in page
        assert "48.0 MB update from 1.1" in page.replace("\xa0", " ")
        versions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".version h3")]
        assert versions == ["Version 1.2", "Version 1.1", "Version 1.0"]
        patcher = driver.find_element(By.LINK_TEXT, "Open in Mist patcher")
        assert patcher.get_attribute("href") == "mist://install/portal"
        download = driver.find_element(By.CSS_SELECTOR, '[data-testid="download-latest"]')
        assert "/dl/archive/portal/windows/1.2" in download.get_attribute("href")  # type: ignore[operator]
        screenshot(driver, "game")

        # an older version on request: the page says it is being prepared
        driver.find_element(By.XPATH, "//button[normalize-space()='Request download of 1.1']").click()
        wait_for(driver, ".messages")
        assert "Version 1.1 is being prepared" in driver.find_element(By.CSS_SELECTOR, ".messages").text
        assert "Being prepared" in driver.find_element(By.ID, "v-1.1").text

        # start a download: the link answers with the whole file, and resumes from an offset (206)
        driver.get(base + "/games/tiny-jam/")
        href = driver.find_element(By.CSS_SELECTOR, '[data-testid="download-latest"]').get_attribute("href")
        session = requests.Session()
        for cookie in driver.get_cookies():
            session.cookies.set(cookie["name"], cookie["value"])
        whole = session.get(href, timeout=10)  # type: ignore[arg-type]
        assert whole.status_code == 200 and whole.content == TINY_ARCHIVE
        assert whole.headers["X-Mist-SHA256"] == hashlib.sha256(TINY_ARCHIVE).hexdigest()
        rest = session.get(href, headers={"Range": "bytes=60000-"}, timeout=10)  # type: ignore[arg-type]
        assert rest.status_code == 206 and rest.content == TINY_ARCHIVE[60000:]
        assert rest.headers["Content-Range"] == f"bytes 60000-{len(TINY_ARCHIVE) - 1}/{len(TINY_ARCHIVE)}"
        # the session alone (the link without its signature) is enough too
        plain = session.get(href.split("?")[0], headers={"Range": "bytes=0-9"}, timeout=10)  # type: ignore[union-attr]
        assert plain.status_code == 206 and plain.content == TINY_ARCHIVE[:10]
        # and the browser itself saves the file when the button is clicked
        driver.find_element(By.CSS_SELECTOR, '[data-testid="download-latest"]').click()
        target = saved / "tiny-jam-1.0-windows.tar.zst"
        deadline = time.monotonic() + 15
        while not (target.exists() and target.stat().st_size == len(TINY_ARCHIVE)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.read_bytes() == TINY_ARCHIVE

        # a game the friend may not see is a 404, like a missing one
        driver.get(base + "/games/admin-only/")
        assert "Not Found" in driver.page_source or "404" in driver.title + driver.page_source

        # a narrow phone screen
        driver.set_window_size(390, 844)
        driver.get(base + "/")
        wait_for(driver, ".game-grid")
        screenshot(driver, "library-mobile")
        driver.set_window_size(1366, 900)

        # pair a patcher from the account page
        driver.get(base + "/")
        driver.find_element(By.LINK_TEXT, "Account").click()
        driver.find_element(By.XPATH, "//button[normalize-space()='Pair a patcher']").click()
        code = wait_for(driver, "#pairing-code").text  # type: ignore[attr-defined]
        redeemed = requests.post(
            f"{base}/api/v1/auth/devices/redeem", json={"code": code, "name": "Living room PC"}, timeout=10
        )
        assert redeemed.status_code in (200, 201), redeemed.text
        assert redeemed.json()["access"]
        driver.get(base + "/accounts/")
        assert "Living room PC" in driver.find_element(By.TAG_NAME, "main").text
        screenshot(driver, "account")


def test_admin_resyncs_a_game_from_the_steam_fake(
    live_server: Any, steam: SteamFake, admin_user: Any
) -> None:
    header = steam.image("hl.png", make_png(460, 215, top=(120, 40, 10), bottom=(240, 160, 40)))
    steam.app_ok(70, name="Half-Life", description="Gordon &amp; the resonance cascade.", header=header)
    steam.script(80, steam.server_error_reply())
    make_game("half-life", "Half-Life", app_id=70)
    make_game("broken", "Broken Game", app_id=80)
    base = live_server.url
    with chromium() as driver:
        log_in(driver, base, "admin", password_of(admin_user))
        wait_for(driver, ".game-grid")
        driver.get(base + "/admin/catalog/game/")
        for slug in ("half-life", "broken"):
            pk = Game.objects.get(slug=slug).pk
            driver.find_element(By.CSS_SELECTOR, f'input.action-select[value="{pk}"]').click()
        select = driver.find_element(By.NAME, "action")
        select.find_element(By.CSS_SELECTOR, 'option[value="resync_from_steam"]').click()
        driver.find_element(By.CSS_SELECTOR, 'button[name="index"], button[type="submit"].button').click()
        wait_for(driver, ".messagelist")
        messages_text = driver.find_element(By.CSS_SELECTOR, ".messagelist").text
        assert "Half-Life: Fetched “Half-Life” from Steam (app 70)." in messages_text
        assert "Broken Game: Steam appdetails for app 80 answered HTTP 500" in messages_text
        screenshot(driver, "admin-resync")

        game = Game.objects.get(slug="half-life")
        assert game.steam_description == "Gordon & the resonance cascade." and game.header_image_cached

        # the store shows the fetched description and the cached header at once
        driver.get(base + "/games/half-life/")
        assert "Gordon & the resonance cascade." in driver.find_element(By.CLASS_NAME, "hero__description").text
        img = driver.find_element(By.CSS_SELECTOR, ".hero__art img")
        assert "/games/half-life/header/" in img.get_attribute("src")  # type: ignore[operator]
        assert driver.execute_script("return arguments[0].naturalWidth", img) == 460

        # and the dashboard is one click from the admin index
        driver.get(base + "/admin/")
        driver.find_element(By.LINK_TEXT, "Dashboard").click()
        wait_for(driver, ".mist-dash")
        assert "Last pushes" in driver.page_source
        screenshot(driver, "admin-dashboard")
