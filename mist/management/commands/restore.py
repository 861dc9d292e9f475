"""`manage.py restore <backup-dir>`: restore a backup made by `manage.py backup`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mist.ops import OpsError, restore_backup


class Command(BaseCommand):
    help = (
        "Restore the database and MIST_STORAGE_ROOT from a mist-backup-<time>/ folder, after checking the "
        "sha256 of every part. Refuses a non-empty database or storage unless --force. Stop the web "
        "server and the worker first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup_dir", type=Path, help="A mist-backup-<time>/ folder")
        parser.add_argument("--force", action="store_true",
                            help="Drop every table of the database and replace the storage tree's contents")
        parser.add_argument("--lock-timeout", type=float, default=600,
                            help="Seconds to wait for running pushes to finish (default 600)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = restore_backup(source=options["backup_dir"], force=options["force"],
                                    lock_timeout=options["lock_timeout"], report=self.stdout.write)
        except OpsError as exc:
            raise CommandError(str(exc)) from exc
        counts = ", ".join(f"{n} {label}" for label, n in result.counts.items())
        self.stdout.write(f"the cache was emptied (disposable): {result.forgotten['cache_entries']} cache "
                          f"records and {result.forgotten['cache_jobs']} archive/reconstruct/indirect jobs "
                          "forgotten; the worker rebuilds them on demand")
        self.stdout.write(self.style.SUCCESS(
            f"restored the backup of {result.manifest['created_at']} (Mist {result.manifest['mist_version']}): "
            f"{counts}; {result.storage.files} files"))
        if result.pending_migrations:
            self.stdout.write(self.style.WARNING(
                f"this Mist has {len(result.pending_migrations)} newer migrations: run `manage.py migrate` "
                "before starting the services"))
