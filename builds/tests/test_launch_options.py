"""Launch options: a build's mist-launch.json sets them at push, they are checked against the build's
files, the admin validates them, and the API ships them with each version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builds.models import LaunchOption, Version
from builds.services import BuildError, push_version
from catalog.models import Game
from conftest import bearer_client
from mist.testing.gamedata import make_build
from mistcore.launch import LaunchConfigError, check_against, parse_launch_file
from mistcore.launch import LaunchOption as Option
from mistcore.manifest import scan_directory

pytestmark = pytest.mark.django_db

LAUNCH = {"launch": [
    {"name": "Play", "executable": "bin/game.x86_64", "arguments": ["--fullscreen", "a b"], "working_dir": "data",
     "env": {"MIST_TEST": "1"}},
    {"name": "Dedicated server", "executable": "bin/game.x86_64", "arguments": ["--server"]},
]}


def _build(tmp_path: Path, name: str, launch: Any = LAUNCH, seed: int = 5) -> Path:
    root = make_build(tmp_path / name, seed=seed)
    if launch is not None:
        (root / "mist-launch.json").write_text(launch if isinstance(launch, str) else json.dumps(launch))
    return root


def test_push_sets_the_launch_options_from_the_build(tmp_path: Path, friend: Any) -> None:
    game = Game.objects.create(slug="lg", title="Launch Game")
    push_version(game=game, name="1.0", source=_build(tmp_path, "v1"), platform="linux")
    rows = list(LaunchOption.objects.filter(game=game, platform="linux"))
    assert [r.name for r in rows] == ["Play", "Dedicated server"]
    assert rows[0].arguments == ["--fullscreen", "a b"] and rows[0].env == {"MIST_TEST": "1"}
    Version.objects.filter(game=game).update(status=Version.Status.READY)
    response = bearer_client(friend).get("/api/v1/games/lg/versions/1.0/launch?platform=linux")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["platform"] == "linux" and body["unusable"] == []
    assert body["options"][0] == LAUNCH["launch"][0]
    assert body["options"][1]["working_dir"] == "" and body["options"][1]["env"] == {}
    # no options for another platform's build, and a game the friend cannot see is a 404
    assert bearer_client(friend).get("/api/v1/games/lg/versions/1.0/launch?platform=windows").status_code == 404
    secret = Game.objects.create(slug="hidden", title="Hidden", is_private=True)
    push_version(game=secret, name="1.0", source=_build(tmp_path, "s1"), platform="linux")
    Version.objects.filter(game=secret).update(status=Version.Status.READY)
    assert bearer_client(friend).get("/api/v1/games/hidden/versions/1.0/launch?platform=linux").status_code == 404


@pytest.mark.parametrize(("launch", "message"), [
    ({"launch": [{"name": "Play", "executable": "bin/missing.exe"}]}, "bin/missing.exe is not a file of 1.0"),
    ({"launch": [{"name": "Play", "executable": "../outside.sh"}]}, "'..'"),
    ({"launch": [{"name": "Play", "executable": "/usr/bin/true"}]}, "absolute"),
    ({"launch": [{"name": "Play", "executable": "bin/game.x86_64", "working_dir": "../.."}]}, "working_dir"),
    ({"launch": [{"name": "Play", "executable": "bin/game.x86_64", "arguments": "-x"}]}, "list of strings"),
    ({"launch": [{"name": "Play", "executable": "bin/game.x86_64", "env": {"A B": "1"}}]}, "variable name"),
    ({"launch": [{"executable": "bin/game.x86_64"}, {"executable": "bin/game.x86_64"}]}, "same name"),
    ({"launch": []}, "no launch option"),
    ("{not json", "not valid JSON"),
    ("[" * 60000, "not valid JSON"),  # nested too deeply for the parser: still a clear refusal
])
def test_a_bad_launch_file_refuses_the_push_and_stores_nothing(tmp_path: Path, launch: Any, message: str) -> None:
    game = Game.objects.create(slug="bad", title="Bad")
    with pytest.raises(BuildError) as caught:
        push_version(game=game, name="1.0", source=_build(tmp_path, "v1", launch=launch), platform="linux")
    assert message in str(caught.value) and "mist-launch.json" in str(caught.value)
    assert not Version.objects.exists() and not LaunchOption.objects.exists()


def test_an_option_that_does_not_fit_an_older_build_is_reported_unusable(tmp_path: Path, friend: Any) -> None:
    game = Game.objects.create(slug="old", title="Old")
    push_version(game=game, name="1.0", source=_build(tmp_path, "v1", launch=None), platform="linux")
    v2 = _build(tmp_path, "v2", seed=6, launch={"launch": [{"name": "Play", "executable": "bin/new-launcher"}]})
    (v2 / "bin" / "new-launcher").write_text("#!/bin/sh\n")
    push_version(game=game, name="2.0", source=v2, platform="linux")
    Version.objects.filter(game=game).update(status=Version.Status.READY)
    old = bearer_client(friend).get("/api/v1/games/old/versions/1.0/launch?platform=linux").json()
    assert old["options"] == []
    assert "bin/new-launcher is not a file of 1.0" in old["unusable"][0]["reason"]
    new = bearer_client(friend).get("/api/v1/games/old/versions/2.0/launch?platform=linux").json()
    assert [o["name"] for o in new["options"]] == ["Play"]


def test_the_rules_in_the_shared_module(tmp_path: Path) -> None:
    root = make_build(tmp_path / "b", seed=7)
    manifest = scan_directory(root, version="1.0")
    check_against(Option(name="Play", executable="bin/game.x86_64", working_dir="data/levels"), manifest)
    with pytest.raises(LaunchConfigError, match="not a folder"):
        check_against(Option(name="Play", executable="bin/game.x86_64", working_dir="nowhere"), manifest)
    with pytest.raises(LaunchConfigError, match="unknown field"):
        parse_launch_file(b'{"launch": [{"executable": "bin/game.x86_64", "shell": "rm -rf /"}]}')
    with pytest.raises(LaunchConfigError, match="larger than"):
        parse_launch_file(b" " * (65 * 1024))
