"""What is installed where: one JSON record per game under ``<home>/installs/``, and per-game locks.

The record names the installed version and folder; the version's manifest is kept in
``manifests/<slug>.json`` so verify and repair work offline, and the target manifest of an update
being switched in is kept as ``manifests/<slug>.pending.json`` until the switch is finished. Records are written atomically;
the switch-in journal (see ``update``) decides which version the files really are after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from mist_patcher.core.errors import ConfigError, InstallBusy, NotInstalled
from mistcore.errors import MistCoreError
from mistcore.fsutil import atomic_write
from mistcore.manifest import Manifest

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}", re.IGNORECASE)


def check_slug(slug: str) -> str:
    """A game slug safe to use in file names; ConfigError otherwise."""
    if not _SLUG.fullmatch(slug or ""):
        raise ConfigError(f"{slug!r} is not a game slug (letters, digits, - and _)")
    return slug


@dataclass
class InstallRecord:
    """One installed game."""

    slug: str
    version: str
    path: str
    server: str = ""
    title: str = ""
    installed_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # The version before the last update (what `rollback` goes back to).
    previous_version: str = ""
    # Set while an install is being downloaded/extracted, cleared once it is recorded complete.
    complete: bool = True
    # The version whose files are being switched in right now (see staging.SwitchIn.commit).
    switching_to: str = ""
    # Whose build is installed (mistcore.platforms); "" for installs made before platforms, which
    # are the server's default platform (then no platform is sent, and the server's default applies).
    platform: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.path)


class StateStore:
    """The install records of one patcher home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.installs_dir = home / "installs"
        self.downloads_dir = home / "downloads"
        self.rollback_dir = home / "rollback"
        self.locks_dir = home / "locks"
        self.manifests_dir = home / "manifests"
        self.images_dir = home / "images"
        for folder in (
            self.installs_dir, self.manifests_dir, self.downloads_dir, self.rollback_dir, self.locks_dir,
            self.images_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def _record_path(self, slug: str) -> Path:
        return self.installs_dir / f"{check_slug(slug)}.json"

    def _manifest_path(self, slug: str) -> Path:
        return self.manifests_dir / f"{check_slug(slug)}.json"

    def _pending_path(self, slug: str) -> Path:
        return self.manifests_dir / f"{check_slug(slug)}.pending.json"

    def get(self, slug: str) -> InstallRecord | None:
        path = self._record_path(slug)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable install record ({exc})") from None
        known = set(InstallRecord.__dataclass_fields__)
        return InstallRecord(**{k: v for k, v in raw.items() if k in known})

    def platform_of(self, slug: str) -> str | None:
        """The platform of the installed build, or None (not installed, or installed before platforms)."""
        record = self.get(slug)
        return record.platform or None if record is not None else None

    def require(self, slug: str) -> InstallRecord:
        record = self.get(slug)
        if record is None:
            raise NotInstalled(f"{slug} is not installed (see `mist-patcher status`)")
        return record

    def all(self) -> list[InstallRecord]:
        out = []
        for path in sorted(self.installs_dir.glob("*.json")):
            record = self.get(path.stem)
            if record is not None:
                out.append(record)
        return out

    def save(self, record: InstallRecord, manifest: Manifest | None = None) -> None:
        """Write the manifest first, then the record: a record never points at a missing manifest."""
        if manifest is not None:
            if manifest.version != record.version:
                raise ValueError("manifest and record versions differ")
            with atomic_write(self._manifest_path(record.slug)) as f:
                f.write(manifest.to_json())
        record.updated_at = time.time()
        with atomic_write(self._record_path(record.slug), "w") as f:
            json.dump(asdict(record), f, indent=2, sort_keys=True)

    def manifest(self, slug: str) -> Manifest:
        path = self._manifest_path(slug)
        try:
            return Manifest.from_json(path.read_bytes())
        except FileNotFoundError:
            raise NotInstalled(f"{slug}: the installed manifest is missing; reinstall or run repair") from None
        except MistCoreError as exc:
            raise ConfigError(f"{path}: corrupt manifest ({exc})") from None

    def save_pending_manifest(self, slug: str, manifest: Manifest) -> None:
        """Keep the target manifest of an update before its switch-in starts (see recovery)."""
        with atomic_write(self._pending_path(slug)) as f:
            f.write(manifest.to_json())

    def pending_manifest(self, slug: str) -> Manifest | None:
        try:
            return Manifest.from_json(self._pending_path(slug).read_bytes())
        except (FileNotFoundError, MistCoreError):
            return None

    def drop_pending_manifest(self, slug: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._pending_path(slug).unlink()

    def delete(self, slug: str) -> None:
        for path in (self._record_path(slug), self._manifest_path(slug), self._pending_path(slug)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def download_path(self, name: str) -> Path:
        return self.downloads_dir / name

    @contextlib.contextmanager
    def lock(self, slug: str) -> Iterator[None]:
        """Hold the game's lock (one patcher at a time per game); InstallBusy if another holds it.

        An OS-level lock (flock / msvcrt): it is released by the kernel when the process dies, so a
        SIGKILLed patcher never leaves a stale lock behind.
        """
        path = self.locks_dir / f"{check_slug(slug)}.lock"
        f = open(path, "a+b")
        try:
            if not _try_lock(f):
                raise InstallBusy(f"another mist-patcher is working on {slug} right now")
            try:
                yield
            finally:
                _unlock(f)
        finally:
            f.close()


def _try_lock(f: IO[bytes]) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(f: IO[bytes]) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        with contextlib.suppress(OSError):
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    import fcntl

    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
