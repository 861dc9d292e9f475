"""The permission walk: every URL under api/v1/, found in the URL resolver, as every persona.

Rules, for every endpoint and method (a body of `{}` for POST/PUT/PATCH):
- anonymous gets 401, except on the auth endpoints (listed in AUTH_ENDPOINTS, public by design);
- admin-only endpoints (ADMIN_PREFIXES: `api/v1/builds/`, `api/v1/admin/`) give 403 to both friends, and neither
  401 nor 403 to the admin;
- elsewhere a friend without a grant gets 404 on anything of the private game (never 200/403),
  neither 401 nor 403 on the public game; a friend with a grant gets exactly what the public game
  answers; the admin gets the same answer for both games.

Path parameters are filled from FILLERS (by parameter name) with objects made by the `world`
fixture. An endpoint with a parameter nobody knows how to fill, or a regex route, FAILS: add a
filler or an entry to OVERRIDES rather than letting a new endpoint go unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from rest_framework.test import APIClient

from accounts.authentication import token_pair_for
from catalog.models import Game, GameGrant

pytestmark = pytest.mark.django_db

API_PREFIX = "api/v1/"
ADMIN_PREFIXES = ("api/v1/builds/", "api/v1/admin/")
METHODS = ("get", "post", "put", "patch", "delete")
PERSONAS = ("anonymous", "outsider", "friend", "admin")

# Public auth endpoints and what anonymous gets for an empty JSON body. A new auth endpoint must be
# added here on purpose: anything else under api/v1/ must answer 401 to anonymous.
AUTH_ENDPOINTS: dict[tuple[str, str], int] = {
    ("api/v1/auth/token", "post"): 400,
    ("api/v1/auth/token/refresh", "post"): 400,
    ("api/v1/auth/logout", "post"): 400,
    ("api/v1/auth/devices/redeem", "post"): 400,
}

# Per-endpoint exceptions to the rules above: {(route, method): {persona: expected status}}.
# Keep it small; every entry is a decision someone should be able to explain.
OVERRIDES: dict[tuple[str, str], dict[str, int]] = {}


@dataclass
class World:
    games: dict[str, Any]
    versions: dict[str, list[Any]]
    jobs: dict[str, Any]
    uploads: dict[str, Any]


# name of a path parameter -> value for the game variant ("public" or "private") being walked.
FILLERS: dict[str, Callable[[World, str], str]] = {
    "slug": lambda w, v: w.games[v].slug,
    "game": lambda w, v: w.games[v].slug,
    "game_slug": lambda w, v: w.games[v].slug,
    "version": lambda w, v: w.versions[v][-1].name,
    "version_name": lambda w, v: w.versions[v][-1].name,
    "to_version": lambda w, v: w.versions[v][-1].name,
    "from_version": lambda w, v: w.versions[v][0].name,
    "job_id": lambda w, v: str(w.jobs[v].pk),
    "upload_id": lambda w, v: str(w.uploads[v].pk),
}


@dataclass(frozen=True)
class Endpoint:
    route: str
    callback: Any
    is_regex: bool

    @property
    def params(self) -> list[str]:
        return re.findall(r"<(?:[^>:]+:)?([^>]+)>", self.route)

    @property
    def methods(self) -> list[str]:
        view_class = getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)
        if view_class is None:
            return ["get", "post"]  # a function view: try the two any view must answer
        return [m for m in METHODS if hasattr(view_class, m)]

    @property
    def is_auth(self) -> bool:
        return self.route.startswith(API_PREFIX + "auth/")

    @property
    def is_admin_only(self) -> bool:
        return self.route.startswith(ADMIN_PREFIXES)


def iter_endpoints(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[Endpoint]:
    """Every URL pattern of the project, with its full route, recursing through includes."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from iter_endpoints(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield Endpoint(
                route=prefix + str(pattern.pattern),
                callback=pattern.callback,
                is_regex=not isinstance(pattern.pattern, RoutePattern),
            )


def api_endpoints() -> list[Endpoint]:
    return [e for e in iter_endpoints() if e.route.startswith(API_PREFIX) or e.route.startswith("^" + API_PREFIX)]


ENDPOINTS = api_endpoints()
CASES = [(e, m) for e in ENDPOINTS for m in e.methods]


def fill(endpoint: Endpoint, world: World, variant: str) -> str:
    if endpoint.is_regex:
        pytest.fail(f"{endpoint.route}: regex routes cannot be filled; use path() or add it to OVERRIDES")
    path = endpoint.route
    for name in endpoint.params:
        if name not in FILLERS:
            pytest.fail(
                f"{endpoint.route}: no value for path parameter <{name}>. Add a filler for it to FILLERS in "
                f"accounts/tests/test_permission_walk.py so this endpoint is walked."
            )
        path = re.sub(rf"<(?:[^>:]+:)?{re.escape(name)}>", FILLERS[name](world, variant), path)
    return "/" + path


def variants_of(endpoint: Endpoint) -> list[str]:
    """Endpoints about a game are walked for the public and the private game; others once."""
    return ["public", "private"] if endpoint.params else ["none"]


@pytest.fixture
def world(admin_user: Any, friend: Any, outsider: Any) -> World:
    Version = apps.get_model("builds", "Version")
    Job = apps.get_model("builds", "Job")
    UploadSession = apps.get_model("builds", "UploadSession")
    games = {
        "public": Game.objects.create(slug="walk-public", title="Walk Public", is_private=False),
        "private": Game.objects.create(slug="walk-private", title="Walk Private", is_private=True),
    }
    GameGrant.objects.create(user=friend, game=games["private"], granted_by=admin_user)
    versions: dict[str, list[Any]] = {}
    jobs: dict[str, Any] = {}
    uploads: dict[str, Any] = {}
    for variant, game in games.items():
        base = Version.objects.create(game=game, name="1.0", seq=1, status="ready", content_hash="a" * 64)
        child = Version.objects.create(game=game, name="1.1", seq=2, parent=base, status="ready", content_hash="b" * 64)
        versions[variant] = [base, child]
        jobs[variant] = Job.objects.create(kind="archive", key=f"walk:{game.slug}", task="walk.noop", game=game,
                                           version=child, requested_by=friend)
        uploads[variant] = UploadSession.objects.create(game=game, version_name="2.0", filename="walk.tar.zst",
                                                        total_size=10, created_by=admin_user)
    return World(games=games, versions=versions, jobs=jobs, uploads=uploads)


def client_for(persona: str, users: dict[str, Any]) -> APIClient:
    client = APIClient()
    if persona != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_for(users[persona])['access']}")
    return client


def call(client: APIClient, method: str, path: str) -> int:
    if method in ("post", "put", "patch"):
        return getattr(client, method)(path, {}, format="json").status_code
    return getattr(client, method)(path).status_code


def test_the_walk_finds_the_api() -> None:
    routes = {e.route for e in ENDPOINTS}
    assert {"api/v1/auth/token", "api/v1/auth/token/refresh", "api/v1/auth/logout",
            "api/v1/auth/devices/redeem"} <= routes
    assert len(CASES) >= len(routes)


def test_every_auth_endpoint_is_listed() -> None:
    unlisted = [(e.route, m) for e, m in CASES if e.is_auth and (e.route, m) not in AUTH_ENDPOINTS]
    assert unlisted == [], "public auth endpoints must be listed in AUTH_ENDPOINTS"


def test_fill_fails_loudly_on_an_unknown_parameter() -> None:
    endpoint = Endpoint(route="api/v1/widgets/<int:widget_id>", callback=None, is_regex=False)
    with pytest.raises(pytest.fail.Exception, match=r"no value for path parameter <widget_id>"):
        fill(endpoint, World(games={}, versions={}, jobs={}, uploads={}), "public")


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("endpoint", "method"), CASES, ids=[f"{m.upper()} /{e.route}" for e, m in CASES])
def test_permission_walk(
    endpoint: Endpoint, method: str, persona: str, world: World, admin_user: Any, friend: Any, outsider: Any
) -> None:
    users = {"admin": admin_user, "friend": friend, "outsider": outsider}
    client = client_for(persona, users)
    statuses = {variant: call(client, method, fill(endpoint, world, variant)) for variant in variants_of(endpoint)}
    where = f"{method.upper()} /{endpoint.route} as {persona}: {statuses}"

    override = OVERRIDES.get((endpoint.route, method), {})
    if persona in override:
        assert set(statuses.values()) == {override[persona]}, where
        return

    if endpoint.is_auth:
        if persona == "anonymous":
            assert set(statuses.values()) == {AUTH_ENDPOINTS[(endpoint.route, method)]}, where
        return

    if persona == "anonymous":
        assert set(statuses.values()) == {401}, where
    elif endpoint.is_admin_only:
        if persona == "admin":
            assert not set(statuses.values()) & {401, 403}, where
            assert len(set(statuses.values())) == 1, f"admin sees the two games differently: {where}"
        else:
            assert set(statuses.values()) == {403}, where
    elif persona == "outsider":
        if "private" in statuses:
            assert statuses["private"] == 404, f"a game the friend may not see must answer 404: {where}"
        for variant in ("public", "none"):
            if variant in statuses:
                assert statuses[variant] not in (401, 403), where
    else:  # friend with a grant, admin: the private game answers like the public one
        assert not set(statuses.values()) & {401, 403}, where
        if "private" in statuses:
            assert statuses["private"] == statuses["public"], f"private and public game differ: {where}"
