from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds import objectstore
from catalog.models import Game
from downloads.bucket import sync_bucket


class Command(BaseCommand):
    help = ("MIST_STORAGE=s3: upload every artifact the bucket lacks from the local disk (after switching a running "
            "instance to the bucket, or to refill an emptied bucket). Idempotent.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*")

    def handle(self, *args: object, **opts: Any) -> None:
        if not objectstore.enabled():
            raise CommandError("MIST_STORAGE is not s3: there is no bucket to sync (see docs/RUNBOOK.md)")
        problem = objectstore.check()
        if problem:
            raise CommandError(f"the bucket does not answer: {problem}")
        games = Game.objects.order_by("slug")
        if opts["slugs"]:
            games = games.filter(slug__in=opts["slugs"])
        missing = 0
        for game in games:
            uploaded, unavailable = sync_bucket(game)
            missing += len(unavailable)
            self.stdout.write(f"{game.slug}: {len(uploaded)} uploaded" +
                              (f", {len(unavailable)} on neither the disk nor the bucket" if unavailable else ""))
            for what in unavailable:
                self.stdout.write(f"  - {what}")
        if missing:
            raise CommandError(f"{missing} artifact(s) are on neither the disk nor the bucket: run storage_check")
        self.stdout.write(self.style.SUCCESS("the bucket holds every artifact"))
