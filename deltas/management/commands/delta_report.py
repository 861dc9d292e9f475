from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds.models import Version
from catalog.platforms import PLATFORMS, default_platform
from deltas.management.commands.push import write_report
from deltas.models import DirectDelta


class Command(BaseCommand):
    help = "Show the patch-efficiency report of a version's direct update (per file: patch vs file size)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("version")
        parser.add_argument("--platform", choices=PLATFORMS, default=None, help="Whose build (default: MIST_DEFAULT_PLATFORM)")

    def handle(self, *args: object, **opts: Any) -> None:
        version = Version.objects.filter(
            game__slug=opts["slug"], name=opts["version"], platform=opts["platform"] or default_platform()
        ).first()
        if version is None:
            raise CommandError(f"no version {opts['version']!r} of {opts['slug']!r}")
        if version.status != Version.Status.READY:
            raise CommandError(f"{version.name} is {version.status}: the report comes when its delta is made")
        write_report(self, version, DirectDelta.objects.filter(to_version=version).first())
