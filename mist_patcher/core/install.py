"""Install a game from its full archive; uninstall it.

Install = resumable download of the version's ``.tar.zst`` into the state folder (SHA-256
checked), safe extraction into a temp folder beside the destination that is renamed into place,
then every file hashed against the manifest (anything wrong is fetched whole).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mist_patcher.core.archive import extract_archive
from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.disk import free_bytes, is_disk_full, require_free, same_filesystem
from mist_patcher.core.errors import ConfigError, DiskFullError, IntegrityFailure, PatcherError
from mist_patcher.core.heal import heal_into_stage
from mist_patcher.core.platform import default_platform
from mist_patcher.core.progress import ProgressCallback, ignore_progress
from mist_patcher.core.recovery import recover_install
from mist_patcher.core.staging import ChangeSet, SwitchIn, remove_tree, rollback_folder
from mist_patcher.core.state import InstallRecord, check_slug
from mist_patcher.core.verify import verify_tree
from mistcore.platforms import PlatformError, validate_platform


def validate_platform_or_config(platform: str) -> str:
    try:
        return validate_platform(platform)
    except PlatformError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class InstallResult:
    """What an install did (or, with ``dry_run``, would do)."""

    slug: str
    version: str
    path: str
    route: str = "full"
    reason: str = ""
    archive_size: int | None = None
    download_bytes: int | None = None
    disk_bytes: int = 0
    downloaded: int = 0
    seconds: float = 0.0
    repaired: list[str] = field(default_factory=list)
    dry_run: bool = False
    platform: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "version": self.version,
            "platform": self.platform,
            "path": self.path,
            "route": self.route,
            "reason": self.reason,
            "archive_size": self.archive_size,
            "download_bytes": self.download_bytes,
            "disk_bytes": self.disk_bytes,
            "downloaded_bytes": self.downloaded,
            "seconds": round(self.seconds, 3),
            "repaired": self.repaired,
            "dry_run": self.dry_run,
        }


def resolve_version(game: dict[str, Any], version: str | None) -> str:
    """The requested version if the server lists it for us, else the latest; ConfigError if none fits."""
    names = [v["name"] for v in game.get("versions", [])]
    if version is None:
        latest = game.get("latest_version")
        if not latest:
            raise ConfigError(f"{game.get('slug')} has no published version yet")
        return str(latest)
    if version not in names:
        listed = ", ".join(names) if names else "none"
        raise ConfigError(f"{game.get('slug')} has no version {version!r} (available: {listed})")
    return version


def _folder_is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def install_game(
    ctx: PatcherContext,
    *,
    slug: str,
    version: str | None = None,
    dest: Path | None = None,
    dry_run: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    on_plan: Callable[[InstallResult], None] | None = None,
    platform: str | None = None,
) -> InstallResult:
    """Download, extract and verify a version into ``dest`` (default: <install root>/<slug>).

    The build is this machine's platform unless `platform` names another (e.g. a Windows build
    to run under Proton or Wine on Linux).
    """
    started = time.monotonic()
    check_slug(slug)
    with ctx.state.lock(slug):
        record = ctx.state.get(slug)
        if record is not None:
            recover_install(ctx, record)
            record = ctx.state.get(slug)
        if record is not None and record.complete:
            raise PatcherError(
                f"{slug} {record.version} is already installed in {record.path}; use update, verify or repair"
            )
        if platform is None:
            platform = (record.platform if record is not None and record.platform else None) or default_platform()
        validate_platform_or_config(platform)
        game = ctx.api.game(slug, platform=platform)
        offered = game.get("platforms")
        if offered is not None and platform not in offered:
            others = ", ".join(offered) or "none yet"
            hint = f"; install another with --platform {offered[0]}" if offered else ""
            raise ConfigError(f"{slug} has no {platform} build (builds for: {others}){hint}")
        version = resolve_version(game, version if version is not None else (record.version if record else None))
        if dest is None:
            dest = Path(record.path) if record else ctx.settings.effective_install_root(ctx.home) / slug
        dest = Path(dest).expanduser().absolute()
        resuming = record is not None and Path(record.path) == dest and record.version == version
        if not resuming and not _folder_is_empty(dest):
            raise ConfigError(f"{dest} is not empty; choose another folder with --dir")
        manifest = ctx.api.manifest(slug, version, platform=platform)
        known = ctx.api.archive_status(slug, version, platform=platform) if dry_run else None
        result = InstallResult(
            slug=slug, version=version, path=str(dest), dry_run=dry_run, platform=platform,
            reason="a fresh install downloads the full archive of the version",
            archive_size=known["size"] if known else None,
        )
        if dry_run:
            result.download_bytes = result.archive_size
            result.disk_bytes = manifest.total_size + (result.archive_size or manifest.total_size)
            if on_plan:
                on_plan(result)
            return result

        archive = ctx.api.ensure_archive(slug, version, control=control, platform=platform)
        archive_file = ctx.state.download_path(f"{slug}-{version}.tar.zst")
        result.archive_size = int(archive["size"])
        result.download_bytes = result.archive_size
        result.disk_bytes = manifest.total_size + result.archive_size
        if on_plan:
            on_plan(result)
        if not dest.exists():
            if same_filesystem(dest.parent if dest.parent.exists() else ctx.home, ctx.state.downloads_dir):
                require_free(ctx.state.downloads_dir, result.disk_bytes)
            else:
                require_free(ctx.state.downloads_dir, result.archive_size)
                require_free(dest, manifest.total_size)

        if record is None or not resuming:
            record = InstallRecord(slug=slug, version=version, path=str(dest), server=ctx.server,
                                   title=str(game.get("title", slug)), complete=False, platform=platform)
            ctx.state.save(record, manifest)
        download = ctx.downloader.fetch(
            archive["url"], archive_file, expected_size=result.archive_size, expected_sha256=archive["sha256"],
            progress=progress, control=control, message=f"{slug} {version}",
        )
        result.downloaded = download.transferred
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                extract_archive(src=archive_file, dest=dest, manifest=manifest, progress=progress, control=control)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFullError(need=manifest.total_size, have=free_bytes(dest.parent),
                                        where=str(dest.parent)) from exc
                raise
        elif dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
            extract_archive(src=archive_file, dest=dest, manifest=manifest, progress=progress, control=control)

        report = verify_tree(dest, manifest, threads=ctx.settings.verify_threads, progress=progress,
                             control=control, find_extra=False)
        if report.damaged:
            # Only after a resumed install found a half-finished folder: fetch the wrong files whole.
            with SwitchIn(ctx, record, target=manifest, changes=ChangeSet(written=report.damaged, removed=[])) as sw:
                heal_into_stage(ctx, slug=slug, manifest=manifest, paths=report.damaged, source_root=dest,
                                stage_dir=sw.stage_dir, block_level=False, progress=progress, control=control)
                sw.commit(old_manifest=None, keep_rollback=False)
            result.repaired = report.damaged
            if not verify_tree(dest, manifest, paths=report.damaged, find_extra=False).healthy:
                raise IntegrityFailure(f"{slug}: files are still wrong after the install")
        record.complete = True
        ctx.state.save(record, manifest)
        archive_file.unlink(missing_ok=True)
        result.seconds = time.monotonic() - started
        return result


@dataclass
class UninstallResult:
    slug: str
    version: str
    path: str
    removed_files: bool

    def to_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "version": self.version, "path": self.path, "removed_files": self.removed_files}


def uninstall_game(ctx: PatcherContext, *, slug: str, keep_files: bool = False) -> UninstallResult:
    """Forget an install and (unless ``keep_files``) delete its folder, rollback data and downloads."""
    with ctx.state.lock(slug):
        record = ctx.state.require(slug)
        recover_install(ctx, record)
        folder = record.folder
        if not keep_files and folder.exists():
            shutil.rmtree(folder)
        remove_tree(rollback_folder(ctx, slug))
        for leftover in ctx.state.downloads_dir.glob(f"{slug}-*"):
            leftover.unlink(missing_ok=True)
        remove_tree(ctx.state.downloads_dir / "files" / slug)
        ctx.state.delete(slug)
        return UninstallResult(slug, record.version, record.path, not keep_files)
