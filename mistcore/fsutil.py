"""Filesystem helpers: streaming SHA-256, bounded copies, atomic files and folders, hardlink clones.

Atomic files are written as ``.<name>.tmp-<random>`` in the destination's own folder (so the
final ``os.replace`` never crosses a filesystem), fsynced, then renamed into place; the folder
is fsynced afterwards so the rename survives a power cut. Atomic folders follow the same idea
with a ``.<name>.tmp-<random>`` sibling folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from mistcore.errors import IntegrityError, MistCoreError, UnsafePathError

CHUNK = 1 << 20

Progress = Callable[[int], None]
"""Progress callbacks receive the number of bytes processed since the previous call."""


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a bytes object."""
    return hashlib.sha256(data).hexdigest()


class HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through and enforces a cap."""

    def __init__(
        self,
        fileobj: IO[bytes] | None,
        *,
        limit: int | None = None,
        error: type[MistCoreError] = IntegrityError,
        what: str = "output",
    ) -> None:
        self._f = fileobj
        self._limit = limit
        self._error = error
        self._what = what
        self.count = 0
        self._digest = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._limit is not None and self.count + n > self._limit:
            raise self._error(f"{self._what} is larger than its limit of {self._limit} bytes")
        self.count += n
        self._digest.update(data)
        if self._f is not None:
            self._f.write(data)
        return n

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def copy_stream(
    src_fileobj: IO[bytes],
    dst_fileobj: IO[bytes] | None,
    *,
    progress: Progress | None = None,
    limit: int | None = None,
) -> tuple[int, str]:
    """Copy a stream in 1 MiB chunks; return (bytes, sha256); IntegrityError past ``limit`` bytes."""
    out = HashingWriter(dst_fileobj, limit=limit, what="stream")
    while True:
        # Read one byte past the limit at most, so an oversized stream is caught without reading it all.
        want = CHUNK if limit is None else max(1, min(CHUNK, limit - out.count + 1))
        chunk = src_fileobj.read(want)
        if not chunk:
            break
        out.write(chunk)
        if progress is not None:
            progress(len(chunk))
    return out.count, out.hexdigest()


_deferred = 0
_deferred_lock = threading.Lock()


@contextlib.contextmanager
def deferred_fsync() -> Iterator[None]:
    """Within: skip per-file fsyncs; at the end: one ``os.sync()`` makes every write durable at once.

    Staging many files with an fsync each spent ~75% of a patch apply (bench item 5) and most of a
    push in fsync; one sync at the end gives the same guarantee to whatever comes next (the journal
    switching to "committing", the database commit of a push).
    """
    global _deferred
    with _deferred_lock:
        _deferred += 1
    try:
        yield
    finally:
        with _deferred_lock:
            _deferred -= 1
            last = _deferred == 0
        if last:
            os.sync()


def fsync_file(fd: int) -> None:
    """fsync a file descriptor, unless inside ``deferred_fsync``."""
    if not _deferred:
        os.fsync(fd)


def _temp_name(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{kind}-{secrets.token_hex(6)}")


def fsync_dir(path: Path | str) -> None:
    """fsync a folder so renames inside it are durable (a no-op where folders cannot be opened)."""
    if _deferred:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        # Windows cannot open a folder this way; NTFS journals the rename itself.
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path | str, mode: str = "wb") -> Iterator[Any]:
    """Write to a temp file beside ``path``; fsync and rename it into place only on success."""
    if "r" in mode or "a" in mode or "+" in mode:
        raise ValueError(f"atomic_write needs a write-only mode, got {mode!r}")
    path = Path(path)
    tmp = _temp_name(path)
    f: IO[Any] = open(tmp, "xb") if "b" in mode else open(tmp, "x", encoding="utf-8")
    try:
        yield f
        f.flush()
        fsync_file(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, exc_info: Any) -> None:
        # Read-only files (Windows) or folders without write permission: make writable and retry once.
        try:
            os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(p)
        except FileNotFoundError:
            pass

    shutil.rmtree(path, onerror=onerror)


@contextlib.contextmanager
def atomic_dir(path: Path | str, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temp sibling folder; rename it to ``path`` on success, delete it on failure."""
    path = Path(path)
    tmp = _temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(f"{path} already exists")
            aside = _temp_name(path, "old")
            os.rename(path, aside)
            os.rename(tmp, path)
            fsync_dir(path.parent)
            _rmtree(aside)
        else:
            os.rename(tmp, path)
            fsync_dir(path.parent)
    except BaseException:
        if tmp.exists():
            _rmtree(tmp)
        raise


def link_or_copy(src: Path | str, dst: Path | str) -> None:
    """Hardlink ``src`` to ``dst``; copy (with metadata) where hardlinks are not possible."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        shutil.copy2(src, dst)


def clone_tree(src: Path | str, dst: Path | str) -> None:
    """Recreate ``src`` at ``dst`` (which must not exist) with every file hardlinked.

    Safe only because nothing in mistcore writes into a file in place: updates always write a
    new file and ``os.replace`` it, so the clones never share a change.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    dst.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in sorted(dirnames):
            s = Path(dirpath) / name
            if s.is_symlink():
                raise UnsafePathError(f"{(rel / name).as_posix()}: symlinks are not allowed in a version tree")
            (dst / rel / name).mkdir()
        for name in sorted(filenames):
            s = Path(dirpath) / name
            st = os.lstat(s)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(f"{(rel / name).as_posix()}: not a regular file")
            link_or_copy(s, dst / rel / name)


def open_regular(path: Path, *, what: str | None = None) -> BinaryIO:
    """Open a regular file for reading, refusing symlinks and special files."""
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{what or path}: is a symlink") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"{what or path}: not a regular file")
    return os.fdopen(fd, "rb")
