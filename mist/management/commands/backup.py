"""`manage.py backup <dest-dir>`: a consistent backup of the database and the storage tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mist.ops import OpsError, create_backup


class Command(BaseCommand):
    help = (
        "Back up the database (pg_dump, or dumpdata on SQLite) and MIST_STORAGE_ROOT (without staging/) "
        "into a new folder mist-backup-<time>/ under DEST_DIR. Pushes are refused while it runs. "
        "The cache is not backed up: it is disposable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dest_dir", type=Path, help="Folder that receives the new mist-backup-<time>/ folder")
        parser.add_argument("--lock-timeout", type=float, default=600,
                            help="Seconds to wait for running pushes to finish (default 600)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = create_backup(dest=options["dest_dir"], lock_timeout=options["lock_timeout"],
                                   report=self.stdout.write)
        except OpsError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"backup written to {result.path} in {result.manifest['seconds']} s"))
