"""Adopt a copy of a game already on this machine (a friend's USB stick, a backup, an old copy from elsewhere).

The folder's files are hashed and matched by path and sha256 against the manifest of every version the server
offers; the version whose files match the most bytes becomes the install's version. Files of that version that
are missing or differ locally are then repaired (block-level against the local copy where there is one, see
``heal``), so the install is exactly that version and the next update takes a direct delta or a jump from
it, never a whole-game indirect update. Files that are no part of it (saves, mods) are left alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.errors import ConfigError, PatcherError
from mist_patcher.core.install import validate_platform_or_config
from mist_patcher.core.platform import default_platform
from mist_patcher.core.progress import ProgressCallback, ProgressEvent, ignore_progress
from mist_patcher.core.repair import heal_damaged
from mist_patcher.core.state import InstallRecord, check_slug
from mistcore.manifest import Manifest, scan_directory


@dataclass(frozen=True)
class Match:
    version: str
    matched_files: int
    matched_bytes: int
    total_files: int
    total_bytes: int

    @property
    def share(self) -> float:
        return self.matched_bytes / self.total_bytes if self.total_bytes else 0.0


def rank_versions(local: Manifest, candidates: dict[str, Manifest]) -> list[Match]:
    """Every candidate version by the bytes of its files the local folder has at the same path with the same
    sha256, best first (on a tie, the later version in `candidates`' order)."""
    have = {(r.path, r.sha256) for r in local.files}
    matches = []
    for order, (name, manifest) in enumerate(candidates.items()):
        hit = [r for r in manifest.files if (r.path, r.sha256) in have]
        matches.append((Match(version=name, matched_files=len(hit), matched_bytes=sum(r.size for r in hit),
                              total_files=len(manifest.files), total_bytes=manifest.total_size), order))
    matches.sort(key=lambda m: (m[0].matched_bytes, m[0].matched_files, m[1]), reverse=True)
    return [m for m, _order in matches]


@dataclass
class AdoptResult:
    slug: str
    path: str
    platform: str
    version: str
    matched_files: int
    total_files: int
    matched_bytes: int
    total_bytes: int
    repaired: list[str] = field(default_factory=list)  # missing or different locally: fetched for this version
    extra: int = 0  # local files no part of the version, left alone
    candidates: list[dict[str, Any]] = field(default_factory=list)
    downloaded: int = 0
    uploaded: int = 0
    dry_run: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adopt_game(
    ctx: PatcherContext,
    *,
    slug: str,
    folder: Path,
    platform: str | None = None,
    dry_run: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    note: Callable[[str], None] | None = None,
) -> AdoptResult:
    """Record `folder` as an install of the version of `slug` it matches best, and repair it to exactly that."""
    started = time.monotonic()
    check_slug(slug)
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder")
    with ctx.state.lock(slug):
        existing = ctx.state.get(slug)
        if existing is not None:
            raise PatcherError(f"{slug} is already installed in {existing.path}; uninstall it first "
                               f"(`mist-patcher uninstall {slug} --keep-files`) to adopt another copy")
        platform = validate_platform_or_config(platform or default_platform())
        game = ctx.api.game(slug, platform=platform)
        names = [str(v["name"]) for v in game.get("versions", [])]
        if not names:
            raise ConfigError(f"{slug} has no published {platform} version to match against")
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        done = 0

        def hashed(n: int) -> None:
            nonlocal done
            done += n
            control.checkpoint()
            progress(ProgressEvent(phase="hash", done=done, total=total))

        local = scan_directory(folder, version="local", progress=hashed)
        manifests = {name: ctx.api.manifest(slug, name, platform=platform) for name in names}
        ranked = rank_versions(local, manifests)
        best = ranked[0]
        if best.matched_files == 0:
            raise PatcherError(f"{folder} matches no version of {slug} ({platform}): install it instead")
        target = manifests[best.version]
        local_by_path = {r.path: r for r in local.files}
        wrong = [r.path for r in target.files
                 if (r.path not in local_by_path or local_by_path[r.path].sha256 != r.sha256
                     or local_by_path[r.path].executable != r.executable)]
        wanted = {r.path for r in target.files}
        result = AdoptResult(
            slug=slug, path=str(folder), platform=platform, version=best.version, matched_files=best.matched_files,
            total_files=best.total_files, matched_bytes=best.matched_bytes, total_bytes=best.total_bytes,
            repaired=wrong, extra=sum(1 for r in local.files if r.path not in wanted),
            candidates=[{"version": m.version, "matched_files": m.matched_files, "matched_bytes": m.matched_bytes,
                         "total_bytes": m.total_bytes} for m in ranked],
            dry_run=dry_run,
        )
        if note:
            note(f"{folder} is {slug} {best.version}: {best.matched_files} of {best.total_files} files match "
                 f"({best.share:.0%} of its bytes); {len(wrong)} to repair")
        if dry_run:
            result.seconds = time.monotonic() - started
            return result
        record = InstallRecord(slug=slug, version=best.version, path=str(folder), server=ctx.server,
                               title=str(game.get("title", slug)), complete=True, platform=platform)
        ctx.state.save(record, target)
        if wrong:
            healed = heal_damaged(ctx, record, target, wrong, progress=progress, control=control, note=note)
            result.downloaded, result.uploaded = healed.downloaded, healed.uploaded
        result.seconds = time.monotonic() - started
        return result
