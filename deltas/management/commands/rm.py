from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds.models import Version
from catalog.platforms import PLATFORMS, default_platform
from deltas.services import DeltaError, remove_version


class Command(BaseCommand):
    help = "Remove a version; its neighbours are re-linked and a new direct delta is queued."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("version")
        parser.add_argument("--platform", choices=PLATFORMS, default=None, help="Whose build (default: MIST_DEFAULT_PLATFORM)")
        parser.add_argument("--force", action="store_true", help="Allow removing the base or the only version")

    def handle(self, *args: object, **opts: Any) -> None:
        version = Version.objects.filter(
            game__slug=opts["slug"], name=opts["version"], platform=opts["platform"] or default_platform()
        ).select_related("game").first()
        if version is None:
            raise CommandError(f"no version {opts['version']!r} of {opts['slug']!r}")
        try:
            result = remove_version(version=version, force=opts["force"])
        except DeltaError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"removed {opts['slug']} {result.removed}")
        for message in result.messages:
            self.stdout.write(message)
        for job in result.queued:
            self.stdout.write(f"queued {job.kind} job {job.pk} ({job.key})")
