from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog import services as catalog_services
from catalog.models import Game


class Command(BaseCommand):
    help = "Create a game (fetches its Steam metadata when --app-id is given)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--title", default="", help="Defaults to the name on Steam when --app-id is given")
        parser.add_argument("--app-id", type=int, default=None)
        parser.add_argument("--private", action="store_true", help="Only admins and granted friends see it")

    def handle(self, *args: object, **opts: Any) -> None:
        if Game.objects.filter(slug=opts["slug"]).exists():
            raise CommandError(f"a game with slug {opts['slug']!r} already exists")
        try:
            game = catalog_services.create_game(
                slug=opts["slug"], title=opts["title"] or "", app_id=opts["app_id"], is_private=opts["private"]
            )
        except catalog_services.CatalogError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"created {game.slug} ({game.title}){' [private]' if game.is_private else ''}")
        if game.steam_error:
            self.stdout.write(self.style.WARNING(f"Steam metadata not fetched: {game.steam_error}"))
