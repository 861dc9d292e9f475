"""Issue 18 point 6: a Content-Security-Policy on every page, and the store, the admin and the API docs all
work under it: real headless Chromium visits each page and no CSP violation is reported, neither as a
`securitypolicyviolation` event nor in the console. A page with an inline script is caught (the probe
works)."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By

from catalog.models import GameGrant
from catalog.services import refresh_header_image
from catalog.tests.steam_fake import SteamFake, make_png
from conftest import password_of
from mist.store.tests.browser import chromium, log_in, wait_for
from mist.store.tests.factories import GB, MB, make_archive, make_game, make_version

pytestmark = [pytest.mark.needs_tool("chromium", "chromedriver"), pytest.mark.django_db(transaction=True)]

# Injected through DevTools before any page script: CDP scripts are not subject to the page's CSP.
RECORDER = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' @' + e.sourceFile + ':' + e.lineNumber));
"""


def _violations(driver: Any) -> list[str]:
    found = list(driver.execute_script("return window.__csp || []"))
    found += [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    return found


def _visit(driver: Any, url: str, ready: str) -> list[str]:
    from selenium.common.exceptions import TimeoutException

    driver.get(url)
    try:
        wait_for(driver, ready, timeout=20)
    except TimeoutException:
        pytest.fail(f"{url}: {ready!r} never appeared; at {driver.current_url}: {driver.title}")
    driver.execute_script("return new Promise(r => setTimeout(r, 300))")  # late scripts and styles
    return _violations(driver)


def _store(steam: SteamFake, admin_user: Any, friend: Any) -> None:
    game = make_game("portal", "Portal", steam_description="Thinking with portals.",
                     steam_header_url=steam.image("portal.png", make_png(460, 215)))
    assert refresh_header_image(game=game) == ""
    v1 = make_version(game, "1.0", total_size=3 * GB, archive_size=2 * GB, days_ago=4, notes="First.")
    make_version(game, "1.1", parent=v1, total_size=3 * GB + MB, update_size=12 * MB, days_ago=1, notes="Fixes.")
    make_archive(game.versions.get(name="1.1"), content=b"x" * 4096)
    secret = make_game("secret", "Secret", is_private=True)
    make_version(secret, "0.9", total_size=GB)
    GameGrant.objects.create(game=secret, user=friend, granted_by=admin_user)


def test_every_page_works_under_the_policy(live_server: Any, steam: SteamFake, admin_user: Any, friend: Any) -> None:
    _store(steam, admin_user, friend)
    base = live_server.url
    with chromium() as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        seen: dict[str, list[str]] = {}
        driver.get(base + "/accounts/login/")
        header = driver.execute_script(
            "return fetch(location.href).then(r => r.headers.get('content-security-policy'))")
        assert "script-src 'self'" in header and "frame-ancestors 'none'" in header
        seen["login"] = _violations(driver)
        log_in(driver, base, "friend", password_of(friend))
        wait_for(driver, ".game-grid")
        seen["library"] = _violations(driver)
        for name, path, ready in [
            ("search", "/?q=portal", ".library__count"),
            ("game", "/games/portal/", ".hero"),
            ("private game", "/games/secret/", ".hero"),
            ("account", "/accounts/", "main"),
            ("password", "/accounts/password/", "main"),
            ("api docs", "/api/docs/", ".swagger-ui .info"),
        ]:
            seen[name] = _visit(driver, base + path, ready)
        # the store's own script still runs (the game page's archive button is wired by static/mist/store.js)
        driver.get(base + "/games/portal/")
        wait_for(driver, ".hero")
        assert driver.find_elements(By.CSS_SELECTOR, "[data-testid='download-latest']")

        driver.delete_all_cookies()
        log_in(driver, base, "admin", password_of(admin_user))
        wait_for(driver, ".game-grid")  # signed in (the library): leaving before the login's answer loses its cookie
        for name, path, ready in [
            ("admin index", "/admin/", "#content"),
            ("admin dashboard", "/admin/dashboard/", "#content"),
            ("admin games", "/admin/catalog/game/", "#changelist"),
            ("admin game", f"/admin/catalog/game/{_pk('portal')}/change/", "#content-main form"),
            ("admin users", "/admin/accounts/user/", "#changelist"),
            ("admin versions", "/admin/builds/version/", "#changelist"),
        ]:
            seen[name] = _visit(driver, base + path, ready)
    assert len(seen) >= 14
    bad = {page: found for page, found in seen.items() if found}
    assert not bad, bad


def test_the_probe_catches_an_inline_script(live_server: Any, friend: Any, settings: Any) -> None:
    """The detector above is not blind: a page that runs inline script under the policy is reported."""
    base = live_server.url
    with chromium() as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        driver.get(base + "/accounts/login/")
        wait_for(driver, "form")
        driver.execute_script(
            "const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.append(s);")
        driver.execute_script("return new Promise(r => setTimeout(r, 200))")
        assert driver.execute_script("return window.ran") is None
        assert any("script-src" in v for v in _violations(driver)), _violations(driver)


def _pk(slug: str) -> int:
    from catalog.models import Game

    return Game.objects.get(slug=slug).pk
