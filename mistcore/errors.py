"""Exceptions raised by mistcore; callers catch ``MistCoreError`` or one of its subclasses."""

from __future__ import annotations


class MistCoreError(Exception):
    """Base class of every error mistcore raises on purpose; ``path`` names the file concerned, if known."""

    def __init__(self, message: str = "", *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnsafePathError(MistCoreError):
    """A path that could escape its folder or cannot exist on every client platform."""


class ManifestError(MistCoreError):
    """A manifest (or delta/indirect manifest) that is malformed or inconsistent."""


class IntegrityError(MistCoreError):
    """A size or SHA-256 that does not match what was recorded."""


class BasisMismatch(IntegrityError):
    """The file a patch or copy starts from is missing or not the version the delta was made against
    (modified locally): the op cannot apply, but another route (rdiff against that file) can."""


class ArchiveError(MistCoreError):
    """A tar or zstd stream that is corrupt, truncated, hostile or over its size cap."""


class PatchError(MistCoreError):
    """A patch engine failed (bad patch, wrong format, worker crash or timeout)."""


class SignatureError(MistCoreError):
    """An rdiff signature (or signature set) that is malformed or over its limits."""
