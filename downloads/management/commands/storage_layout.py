"""``manage.py storage_layout [--apply]``: finish moving pre-platform files under MIST_DEFAULT_PLATFORM."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds import layout, storage
from builds.models import CacheEntry
from downloads.models import FullArchive


class Command(BaseCommand):
    help = (
        "Report (or with --apply, move) files still in the layout from before platforms. Migration downloads "
        "0002 does this during `migrate`; run it for a storage that was not mounted then, or an old backup restored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--apply", action="store_true", help="Move them (default: only report)")

    def handle(self, *args: object, **opts: Any) -> None:
        platform = settings.MIST_DEFAULT_PLATFORM
        games = layout.old_layout_games(storage.storage_root())
        old_cache = [e.relpath for e in CacheEntry.objects.all() if layout.new_cache_relpath(e.relpath, platform)]
        if not games and not old_cache:
            self.stdout.write("the storage and the cache are in the per-platform layout: nothing to do")
            return
        if not opts["apply"]:
            for slug in games:
                self.stdout.write(f"games/{slug}: files from before platforms (would move under {platform}/)")
            for relpath in old_cache:
                self.stdout.write(f"cache {relpath}: would move under {platform}/")
            self.stdout.write("dry run: run with --apply to move them")
            return
        try:
            report = layout.upgrade(
                storage_root=storage.storage_root(),
                cache_root=storage.cache_root(),
                platform=platform,
                cache_entries=CacheEntry.objects.all(),
            )
            layout.relink_cache(cache_root=storage.cache_root(), entries=FullArchive.objects.all(), platform=platform)
        except layout.LayoutError as exc:
            raise CommandError(str(exc)) from None
        for line in report.moved + report.cache_relinked:
            self.stdout.write(line)
        self.stdout.write(f"moved {len(report.moved)} folder(s) and {len(report.cache_relinked)} cache entr(ies)")
