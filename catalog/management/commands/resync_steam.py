"""`manage.py resync_steam [slug ...]`: refresh Steam details and header images (all games by default)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import Game
from catalog.services import resync_steam


class Command(BaseCommand):
    help = "Fetch Steam appdetails (name, short description, header image) for games with an app id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", help="Games to resync (default: every game with an app id)")

    def handle(self, *args: Any, slugs: list[str], **options: Any) -> None:
        if slugs:
            games = list(Game.objects.filter(slug__in=slugs))
            unknown = sorted(set(slugs) - {g.slug for g in games})
            if unknown:
                raise CommandError(f"no such game: {', '.join(unknown)}")
        else:
            games = list(Game.objects.exclude(app_id=None))
        failed = 0
        for game in games:
            result = resync_steam(game=game)
            if result.ok:
                self.stdout.write(f"{game.slug}: {result.message}")
            else:
                failed += 1
                self.stderr.write(f"{game.slug}: {result.message}")
        if failed:
            raise CommandError(f"{failed} of {len(games)} game(s) could not be fully resynced (see above)")
        self.stdout.write(self.style.SUCCESS(f"{len(games)} game(s) resynced"))
