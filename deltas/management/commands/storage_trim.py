"""manage.py storage_trim [--budget BYTES] [--dry-run]: drop local copies the bucket holds (MIST_STORAGE=s3)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from builds import objectstore
from deltas.localcopies import trim_local_copies


def _size(text: str) -> int:
    units = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    text = text.strip().lower().removesuffix("b")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise CommandError(f"--budget: {text!r} is not a size like 500M or 20G") from None
    if value < 0:
        raise CommandError("--budget cannot be negative")
    return value


class Command(BaseCommand):
    help = ("MIST_STORAGE=s3: drop the local copies of base archives and delta bundles (and their folders) that the "
            "bucket holds, oldest version first, until they take at most --budget (default MIST_S3_LOCAL_BYTES). "
            "Each object is checked before its local copy goes; chain replay fetches what it needs back.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--budget", type=_size, default=None,
                            help="bytes the local copies may take, e.g. 20G (0: drop every copy that may go)")
        parser.add_argument("--dry-run", action="store_true", help="only say what would be dropped")

    def handle(self, *args: object, **opts: Any) -> None:
        if not objectstore.enabled():
            raise CommandError("MIST_STORAGE is not s3: the local disk is the only copy, nothing to trim")
        if opts["budget"] is None and int(settings.MIST_S3_LOCAL_BYTES) <= 0:
            raise CommandError("no budget: set MIST_S3_LOCAL_BYTES or pass --budget (see docs/RUNBOOK.md)")
        problem = objectstore.check()
        if problem:
            raise CommandError(f"the bucket does not answer: {problem}")
        report = trim_local_copies(budget=opts["budget"], dry_run=opts["dry_run"])
        verb = "would drop" if opts["dry_run"] else "dropped"
        for what in report.dropped:
            self.stdout.write(f"  {verb} {what}")
        for what in report.kept:
            self.stdout.write(f"  kept {what}")
        self.stdout.write(f"local copies: {report.before} -> {report.after} bytes (budget {report.budget}); "
                          f"{len(report.dropped)} {verb}, {len(report.kept)} kept over budget")
        if report.after > report.budget and report.kept:
            raise CommandError(f"{len(report.kept)} local copies could not go (their bucket objects are missing "
                               "or differ): run storage_check, then storage_sync")
