from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds import objectstore
from catalog.models import Game
from deltas.storage_check import check_game
from downloads.bucket import check_bucket


class Command(BaseCommand):
    help = ("Verify manifests, depots, base archives, delta and cached jump bundles against their recorded hashes; "
            "with MIST_STORAGE=s3, also that the bucket holds every artifact with the recorded size and sha256.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*")

    def handle(self, *args: object, **opts: Any) -> None:
        games = Game.objects.order_by("slug")
        if opts["slugs"]:
            games = games.filter(slug__in=opts["slugs"])
        problem = objectstore.check()
        if problem:
            raise CommandError(f"the bucket does not answer: {problem}")
        problems = 0
        for game in games:
            drift = list(check_game(game)) + list(check_bucket(game))
            problems += len(drift)
            status = "ok" if not drift else f"{len(drift)} problem(s)"
            self.stdout.write(f"{game.slug}: {status}")
            for line in drift:
                self.stdout.write(f"  - {line}")
        if objectstore.enabled():
            incomplete = objectstore.incomplete_uploads()
            if incomplete:
                # Invisible to readers; the worker aborts those older than six hours.
                self.stdout.write(f"bucket: {len(incomplete)} incomplete upload(s) (a worker killed mid-upload, or "
                                  f"one uploading now), e.g. {incomplete[0]}")
        if problems:
            raise CommandError(f"storage check found {problems} problem(s)")
        self.stdout.write(self.style.SUCCESS("storage matches the database"))
