"""Check the audit log's hash chain; exit non-zero naming the first bad row."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain (exit status 1 and the first bad row if it was tampered with)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain()
        if not result.ok:
            raise CommandError(
                f"audit chain BROKEN at row {result.first_bad_id} after {result.checked} good row(s): {result.reason}"
            )
        self.stdout.write(f"audit chain OK: {result.checked} row(s), head {result.head_hash}")
