"""Schemathesis over every operation of the OpenAPI schema (`/api/schema/`), against a real HTTP server.

pytest-django's `live_server` (threaded, real PostgreSQL), a game with two ready versions, and two
personas: a friend's Bearer token and the admin's. Each operation gets schema-valid and
schema-violating inputs (path parameters generated, or pinned to the real game and versions so
the requests reach the views' logic), and every answer is checked with `not_a_server_error`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from accounts.authentication import token_pair_for
from battery import tally
from builds import services as builds_services
from builds.services import push_version
from catalog.models import Game
from mist.testing.gamedata import make_build, next_version

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SLUG = "space-game"
EXAMPLES_PER_MODE = 2  # x2 modes (x2 with pinned path parameters) x2 personas per operation
KNOWN = {"slug": SLUG, "version": "2.0", "game": SLUG}


@pytest.fixture
def game_for_live_server(tmp_path: Path, admin_user: Any) -> Game:
    game = Game.objects.create(slug=SLUG, title="Space Game")
    v1_src = make_build(tmp_path / "b1", seed=51)
    v1 = push_version(game=game, name="1.0", source=v1_src, user=admin_user).version
    builds_services.mark_ready(version=v1)
    v2 = push_version(game=game, name="2.0", source=next_version(v1_src, tmp_path / "b2", seed=51, step=1)).version
    builds_services.mark_ready(version=v2)
    return game


def _runner(strategies: list[Any], *, token: str, base_url: str, session: requests.Session) -> Any:
    """A hypothesis test sending generated cases of one operation as one persona; 5xx fails it."""

    @settings(max_examples=EXAMPLES_PER_MODE * len(strategies), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case: schemathesis.Case) -> None:
        tally.bad_inputs("schemathesis (every operation, friend + admin)")
        response = case.call(base_url=base_url, session=session, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=[not_a_server_error])

    return run


def test_schemathesis_finds_no_server_error(live_server: Any, game_for_live_server: Game, admin_user: Any,
                                            friend: Any) -> None:
    raw = requests.get(f"{live_server.url}/api/schema/?format=json", timeout=30,
                       headers={"Authorization": f"Bearer {token_pair_for(admin_user)['access']}"})
    assert raw.status_code == 200, raw.text[:500]
    # NUL bytes are left to test_api_fuzz.test_nul_in_urls_and_query_strings_is_not_a_500 (a known bug, xfail
    # there): with them on, this run would only ever report that one bug. Turn them on once it is fixed.
    config = schemathesis.Config.from_dict({"generation": {"allow-x00": True}})
    schema = schemathesis.openapi.from_dict(raw.json(), config=config)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15, [op.label for op in operations]
    personas = {"friend": token_pair_for(friend)["access"], "admin": token_pair_for(admin_user)["access"]}
    failures: list[str] = []
    session = requests.Session()
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        pinned = {name: value for name, value in KNOWN.items() if name in names}
        strategies = [operation.as_strategy(generation_mode=mode) for mode in schemathesis.GenerationMode]
        # The real game with a generated version, and the real game and version: deeper than a 404.
        for fixed in ({k: v for k, v in pinned.items() if k != "version"}, pinned) if pinned else ():
            if fixed:
                strategies += [operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                               for mode in schemathesis.GenerationMode]
        for persona, token in personas.items():
            run = _runner(strategies, token=token, base_url=live_server.url, session=session)
            try:
                run()
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"{operation.label} as {persona}: {str(exc)[:1500]}")
    session.close()
    assert not failures, "\n\n".join(failures)
