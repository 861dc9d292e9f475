from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds.services import game_platforms
from catalog.models import Game


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


class Command(BaseCommand):
    help = "List games, or the versions of one game with status, sizes and update sizes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", nargs="?")

    def handle(self, *args: object, **opts: Any) -> None:
        if not opts["slug"]:
            for game in Game.objects.order_by("slug"):
                latest = game.versions.order_by("-created_at", "-pk").first()
                flags = " [private]" if game.is_private else ""
                platforms = ",".join(game_platforms(game=game)) or "-"
                self.stdout.write(
                    f"{game.slug:24} {game.title[:40]:40} {game.versions.count():3} build(s)  "
                    f"latest {latest.name if latest else '-'}  platforms {platforms}{flags}"
                )
            return
        game = Game.objects.filter(slug=opts["slug"]).first()
        if game is None:
            raise CommandError(f"no game {opts['slug']!r}")
        self.stdout.write(
            f"{'version':16} {'platform':8} {'status':10} {'published':9} {'files':>7} {'size':>12} {'update':>12}  parent"
        )
        for v in game.versions.select_related("parent").order_by("platform", "seq"):
            self.stdout.write(
                f"{v.name:16} {v.platform:8} {v.status:10} {'yes' if v.published else 'no':9} {v.file_count:7} "
                f"{_mb(v.total_size):>12} {_mb(v.update_size):>12}  {v.parent.name if v.parent else '(base)'}"
            )
            if v.error:
                self.stdout.write(self.style.ERROR(f"    error: {v.error}"))
