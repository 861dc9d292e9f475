"""Launch options of a game's builds: validated against the build they start, set by push or the admin."""

from __future__ import annotations

from django.db import transaction

from builds.models import LaunchOption, Version
from catalog.models import Game
from mistcore.launch import LaunchConfigError, check_against, parse_options
from mistcore.launch import LaunchOption as Option
from mistcore.manifest import Manifest


def validate_option(raw: dict, *, manifest: Manifest | None) -> Option:
    """A launch option as data -> mistcore's LaunchOption, checked against `manifest` when given."""
    option = Option.from_dict(raw)
    if manifest is not None:
        check_against(option, manifest)
    return option


def replace_options(*, game: Game, platform: str, options: list[Option]) -> None:
    """Make `options` the game's launch options on `platform`, in their order (a push's mist-launch.json)."""
    with transaction.atomic():
        LaunchOption.objects.filter(game=game, platform=platform).delete()
        LaunchOption.objects.bulk_create([
            LaunchOption(game=game, platform=platform, name=o.name, executable=o.executable,
                         arguments=list(o.arguments), working_dir=o.working_dir, env=dict(o.env), position=i)
            for i, o in enumerate(options)
        ])


def options_for(*, version: Version, manifest: Manifest) -> tuple[list[dict], list[dict]]:
    """(usable, unusable) launch options of one version's build: an option whose executable is not a file of
    this build (an older build, before the file existed) is unusable, with the reason."""
    rows = LaunchOption.objects.filter(game=version.game_id, platform=version.platform)
    usable: list[dict] = []
    unusable: list[dict] = []
    try:
        options = parse_options([row.as_dict() for row in rows])
    except LaunchConfigError as exc:
        return [], [{"name": "*", "reason": str(exc)}]
    for option in options:
        try:
            check_against(option, manifest)
        except LaunchConfigError as exc:
            unusable.append({"name": option.name, "reason": str(exc)})
        else:
            usable.append(option.to_dict())
    return usable, unusable
