from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import Game
from deltas.storage_check import check_game


class Command(BaseCommand):
    help = "Verify manifests, depots, base archives and delta bundles against their recorded hashes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*")

    def handle(self, *args: object, **opts: Any) -> None:
        games = Game.objects.order_by("slug")
        if opts["slugs"]:
            games = games.filter(slug__in=opts["slugs"])
        problems = 0
        for game in games:
            drift = list(check_game(game))
            problems += len(drift)
            status = "ok" if not drift else f"{len(drift)} problem(s)"
            self.stdout.write(f"{game.slug}: {status}")
            for line in drift:
                self.stdout.write(f"  - {line}")
        if problems:
            raise CommandError(f"storage check found {problems} problem(s)")
        self.stdout.write(self.style.SUCCESS("storage matches the database"))
