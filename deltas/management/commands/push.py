import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from builds.models import Version
from builds.services import BuildError, push_version
from catalog.models import Game
from catalog.platforms import PLATFORMS
from deltas.models import DirectDelta


class _Progress:
    """A progress bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: Any, total: int, tty: bool) -> None:
        self.stream, self.total, self.tty = stream, total, tty
        self.done = 0
        self.start = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 5):
            return
        self.last = now
        self.show(now)

    def show(self, now: float, end: str = "") -> None:
        rate = self.done / max(now - self.start, 1e-6)
        pct = 100 * self.done / self.total if self.total else 0
        text = f"copied {self.done / 1e6:,.1f} / {self.total / 1e6:,.1f} MB ({pct:.0f}%) at {rate / 1e6:.1f} MB/s"
        if self.tty:
            width = 30
            filled = int(width * pct / 100)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _source_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.exists() else 0


class Command(BaseCommand):
    help = "Push a build (directory, .zip or .tar(.gz/.zst)) as the newest version of a game."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("version")
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--platform", choices=PLATFORMS, default=None,
            help="The platform this build is for (default: MIST_DEFAULT_PLATFORM); a version holds one build per platform",
        )
        parser.add_argument("--notes", default="", help="Release notes")
        parser.add_argument("--unpublished", action="store_true", help="Keep it hidden from friends when ready")
        parser.add_argument(
            "--wait", type=int, default=0, metavar="SECONDS",
            help="Wait up to SECONDS for the worker, then print the patch-efficiency report",
        )

    def handle(self, *args: object, **opts: Any) -> None:
        game = Game.objects.filter(slug=opts["slug"]).first()
        if game is None:
            raise CommandError(f"no game {opts['slug']!r}: create it with manage.py new_game")
        source: Path = opts["path"]  # type: ignore[assignment]
        tty = sys.stdout.isatty()
        progress = _Progress(sys.stdout if tty else self.stdout, _source_size(source), tty)
        started = time.monotonic()
        try:
            result = push_version(
                game=game, name=opts["version"], source=source, notes=opts["notes"],
                publish=not opts["unpublished"], progress=progress, platform=opts["platform"],  # type: ignore[arg-type]
            )
        except BuildError as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            # The connection died (restart, failover): the version's transaction did not commit.
            raise CommandError(
                f"lost the database during the push ({exc.__class__.__name__}: {str(exc).strip()}); "
                f"{opts['version']} was not recorded (check with `manage.py ls {game.slug}`): push again"
            ) from None
        if tty:
            progress.show(time.monotonic(), end="\n")
        v = result.version
        seconds = time.monotonic() - started
        self.stdout.write(
            f"pushed {game.slug} {v.name} ({v.platform}): {v.file_count} files, {v.total_size / 1e6:,.1f} MB "
            f"in {seconds:.1f}s ({v.total_size / 1e6 / max(seconds, 1e-6):.1f} MB/s)"
        )
        for job in result.queued:
            self.stdout.write(f"queued {job.kind} job {job.pk} ({job.key})")
        if not opts["wait"]:
            self.stdout.write("the worker (manage.py qcluster) makes it ready; `manage.py delta_report` shows sizes")
            return
        deadline = time.monotonic() + opts["wait"]
        while time.monotonic() < deadline:
            v.refresh_from_db()
            if v.status in (Version.Status.READY, Version.Status.FAILED):
                break
            time.sleep(1)
        if v.status == Version.Status.FAILED:
            raise CommandError(f"the worker failed to process {v.name}: {v.error}")
        if v.status != Version.Status.READY:
            raise CommandError(f"{v.name} is still {v.status} after {opts['wait']}s: is the worker running?")
        delta = DirectDelta.objects.filter(to_version=v).first()
        write_report(self, v, delta)


def write_report(command: BaseCommand, version: Version, delta: DirectDelta | None) -> None:
    """Per file: patch size against file size, with a hint where a file barely diffs."""
    out = command.stdout
    if delta is None:
        out.write(f"{version.name} is the base version: no update to report")
        return
    out.write(
        f"update {delta.from_version.name} -> {version.name}: {delta.bundle_size / 1e6:,.2f} MB to download "
        f"for a {version.total_size / 1e6:,.1f} MB game ({100 * delta.bundle_size / max(version.total_size, 1):.1f}%)"
    )
    counts = ", ".join(f"{n} {op}" for op, n in sorted(delta.op_counts.items()))
    out.write(f"operations: {counts}")
    out.write(f"{'patch':>12} {'file':>12} {'ratio':>6}  engine        path")
    for row in delta.report[:40]:
        out.write(
            f"{row['patch_size'] / 1e6:>10.3f}MB {row['size'] / 1e6:>10.3f}MB {row['ratio']:>6.2f}  "
            f"{row['engine'] or '-':13} {row['path']}"
        )
        if row["hint"]:
            out.write(command.style.WARNING(f"    ! {row['hint']}"))
