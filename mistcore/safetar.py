"""Deterministic ``.tar.zst`` packing and hostile-input-safe streaming extraction.

Packing writes a POSIX (pax) tar of regular files only, sorted by path, with mtime 0,
uid/gid 0, empty owner names and mode 0o755 (executable) or 0o644, streamed through one zstd
frame: the same files always give the same archive bytes.

Reading never calls ``tarfile.extract``: every member is checked here (the ``filter="data"``
rules and more), then its bytes are copied by us. Refused with ``ArchiveError`` naming the
member: absolute paths, ``..``, unsafe or Windows-impossible names, symlinks, hardlinks,
devices, FIFOs, sparse files, duplicate or case-insensitively equal paths, a path that is both
a file and a folder, too many members, members or totals over their caps, oversized pax/GNU
long-name headers (tarfile would read them into memory whole). Folder entries are accepted and
ignored (folders are made from file paths); a leading ``./`` (``tar -C dir .``) is dropped.
Extraction goes into a fresh temp folder beside ``dest`` that is renamed into place at the end.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from mistcore.errors import ArchiveError, UnsafePathError
from mistcore.fsutil import CHUNK, HashingWriter, atomic_dir, atomic_write, deferred_fsync, fsync_file, open_regular
from mistcore.manifest import PathSet, validate_relpath
from mistcore.zstdio import BoundedZstdReader

MAX_META_HEADER = 1 << 20
# Per-member tar overhead counted against the decompressed-size cap: header, pax header, padding.
_MEMBER_OVERHEAD = 4096


# ustar name fields: name, linkname, prefix. tarfile reads each up to its first NUL and drops the rest, so
# "game.exe\0.txt" would silently become "game.exe": a NUL followed by anything but padding is refused.
_NAME_FIELDS = ((0, 100), (157, 257), (345, 500))


class _GuardedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses huge pax/GNU long-name headers before tarfile reads them into memory,
    and names that carry a NUL byte (which tarfile would cut silently)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        for start, end in _NAME_FIELDS:
            field = buf[start:end]
            cut = field.find(b"\0")
            if cut != -1 and field[cut:].strip(b"\0"):
                shown = field.rstrip(b"\0").decode("utf-8", "backslashreplace")
                raise ArchiveError(f"tar member name {shown!r} contains a NUL byte: refused")
        return super().frombuf(buf, encoding, errors)

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        meta_types = (
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
        )
        if self.type in meta_types and self.size > MAX_META_HEADER:
            raise ArchiveError(f"tar metadata header of {self.size} bytes is larger than {MAX_META_HEADER}")
        member = super()._proc_member(tarfile_)  # type: ignore[misc]
        # pax and GNU long names are read whole; a NUL inside them is refused here.
        if "\0" in member.name or "\0" in member.linkname:
            raise ArchiveError(f"tar member name {member.name!r} contains a NUL byte: refused")
        return member


class MemberReader:
    """Reads one member's bytes from a streaming tar; also tells its name, size and executable bit."""

    def __init__(self, raw: IO[bytes], *, name: str, size: int, executable: bool) -> None:
        self._raw = raw
        self.name = name
        self.size = size
        self.executable = executable
        self._left = size

    def read(self, n: int = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        if want <= 0:
            return b""
        try:
            data = self._raw.read(want)
        except tarfile.TarError as exc:
            raise ArchiveError(f"{self.name!r}: {exc}") from None
        if len(data) == 0:
            raise ArchiveError(f"{self.name!r}: archive ends inside this member")
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True


def _member_name(raw: str) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    return name


def _iter_tar_stream(
    fileobj: IO[bytes], *, max_members: int, max_total_bytes: int, max_file_bytes: int | None = None
) -> Iterator[tuple[str, int, MemberReader]]:
    seen = PathSet(error=ArchiveError)
    members = 0
    total = 0
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_GuardedTarInfo, encoding="utf-8", errors="strict")
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a valid tar archive: {exc}") from None
    with tf:
        while True:
            try:
                ti = tf.next()
            except tarfile.TarError as exc:
                raise ArchiveError(f"corrupt tar archive: {exc}") from None
            except UnicodeError:
                raise ArchiveError("tar member name is not valid UTF-8") from None
            if ti is None:
                break
            members += 1
            if members > max_members:
                raise ArchiveError(f"archive has more than {max_members} members")
            name = _member_name(ti.name)
            if ti.isdir():
                if name in ("", "."):
                    continue
                _check_name(name.rstrip("/"), ti.name)
                continue
            _check_name(name, ti.name)
            if ti.issym() or ti.islnk():
                raise ArchiveError(f"{ti.name!r}: links are not allowed in an archive")
            if ti.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or ti.sparse is not None:
                raise ArchiveError(f"{ti.name!r}: only regular files are allowed (devices, FIFOs, sparse refused)")
            seen.add(name)
            if max_file_bytes is not None and ti.size > max_file_bytes:
                raise ArchiveError(f"{name!r}: {ti.size} bytes is over the per-file limit of {max_file_bytes}")
            total += ti.size
            if total > max_total_bytes:
                raise ArchiveError(f"{name!r}: archive content is over its limit of {max_total_bytes} bytes")
            raw = tf.extractfile(ti)
            if raw is None:  # pragma: no cover - regular files always have a reader
                raise ArchiveError(f"{name!r}: cannot read member")
            executable = bool(ti.mode & stat.S_IXUSR)
            member = MemberReader(raw, name=name, size=ti.size, executable=executable)
            # Whatever the caller leaves unread is skipped by tarfile when it moves to the next header.
            yield name, ti.size, member


def _check_name(name: str, raw: str) -> None:
    try:
        validate_relpath(name)
    except UnsafePathError as exc:
        raise ArchiveError(f"tar member {raw!r} refused: {exc}") from None


def _drain(reader: BoundedZstdReader) -> None:
    # tarfile stops at the end-of-archive blocks; reading on checks the zstd frame is complete.
    while reader.read(CHUNK):
        pass


def iter_tar_zst(
    src: Path, *, max_members: int, max_total_bytes: int, max_file_bytes: int | None = None
) -> Iterator[tuple[str, int, MemberReader]]:
    """Yield (name, size, reader) for each file of a .tar.zst, in archive order, after safety checks.

    Each reader must be used before the next item is requested (streaming); ``reader.executable``
    tells the member's executable bit. The zstd frame is checked complete at the end.
    """
    cap = max_total_bytes + (max_members + 4) * _MEMBER_OVERHEAD
    with open(src, "rb") as f:
        reader = BoundedZstdReader(f, max_output=cap)
        yield from _iter_tar_stream(
            cast(IO[bytes], reader),
            max_members=max_members,
            max_total_bytes=max_total_bytes,
            max_file_bytes=max_file_bytes,
        )
        _drain(reader)


def iter_tar(
    src: Path, *, max_members: int, max_total_bytes: int, max_file_bytes: int | None = None
) -> Iterator[tuple[str, int, MemberReader]]:
    """Like ``iter_tar_zst`` for an uncompressed tar."""
    with open(src, "rb") as f:
        yield from _iter_tar_stream(
            f, max_members=max_members, max_total_bytes=max_total_bytes, max_file_bytes=max_file_bytes
        )


def write_member(dest_root: Path, name: str, member: IO[bytes], *, size: int, executable: bool) -> None:
    """Create ``dest_root/name`` (never following links, never overwriting) from a member reader."""
    target = dest_root.joinpath(*name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        written = HashingWriter(out, limit=size, error=ArchiveError, what=repr(name))
        while chunk := member.read(CHUNK):
            written.write(chunk)
        if written.count != size:
            raise ArchiveError(f"{name!r}: archive ends inside this member")
        out.flush()
        fsync_file(out.fileno())
    os.chmod(target, 0o755 if executable else 0o644)


def extract_tar_zst(
    *, src: Path, dest: Path, max_members: int = 200_000, max_total_bytes: int, max_file_bytes: int | None = None
) -> list[str]:
    """Safely extract a .tar.zst into ``dest`` (which must not exist); return the file paths written."""
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} already exists")
    names: list[str] = []
    with atomic_dir(dest) as tmp, deferred_fsync():
        for name, size, member in iter_tar_zst(
            Path(src), max_members=max_members, max_total_bytes=max_total_bytes, max_file_bytes=max_file_bytes
        ):
            write_member(tmp, name, member, size=size, executable=member.executable)  # type: ignore[arg-type]
            names.append(name)
    return names


def _tarinfo(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o755 if executable else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _walk_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise UnsafePathError(f"{prefix}{d!r}: symlinks cannot be packed")
        out.extend(prefix + name for name in filenames)
    return out


def pack_tar_zst(
    *,
    root: Path,
    paths: Iterable[str] | None,
    dst: Path,
    level: int = 10,
    threads: int = 2,
    extra_files: dict[str, bytes] | None = None,
) -> tuple[int, str]:
    """Pack files of ``root`` (all when ``paths`` is None) plus ``extra_files`` into a deterministic .tar.zst."""
    root = Path(root)
    extra = dict(extra_files or {})
    listed = set(_walk_files(root) if paths is None else paths)
    if listed & set(extra):
        raise ValueError(f"{sorted(listed & set(extra))[0]!r} is both a file to pack and an extra file")
    names = sorted(listed | set(extra))
    seen = PathSet()
    for name in names:
        validate_relpath(name)
        seen.add(name)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with atomic_write(dst) as raw:
        counter = HashingWriter(raw)
        # The tar is closed inside _write_tar, before this writer ends the frame with its last blocks.
        with cctx.stream_writer(cast(IO[bytes], counter), closefd=False) as zw:
            _write_tar(zw, names, lambda name: root.joinpath(*name.split("/")), extra)
    return counter.count, counter.hexdigest()


def pack_tar(*, members: dict[str, Path], dst: Path, extra_files: dict[str, bytes] | None = None) -> tuple[int, str]:
    """Pack ``{archive name: file}`` plus ``extra_files`` into a deterministic uncompressed tar; (size, sha256)."""
    extra = dict(extra_files or {})
    names = sorted(set(members) | set(extra))
    seen = PathSet()
    for name in names:
        validate_relpath(name)
        seen.add(name)
    with atomic_write(dst) as raw:
        counter = HashingWriter(raw)
        _write_tar(counter, names, lambda name: Path(members[name]), extra)
    return counter.count, counter.hexdigest()


def _write_tar(fileobj: Any, names: list[str], source: Callable[[str], Path], extra: dict[str, bytes]) -> None:
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:
        for name in names:
            if name in extra:
                data = extra[name]
                tf.addfile(_tarinfo(name, len(data), False), _BytesReader(data))
                continue
            with open_regular(source(name), what=repr(name)) as f:
                st = os.fstat(f.fileno())
                tf.addfile(_tarinfo(name, st.st_size, bool(st.st_mode & stat.S_IXUSR)), f)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self._data)
        out, self._data = self._data[:n], self._data[n:]
        return bytes(out)


__all__ = [
    "MemberReader",
    "extract_tar_zst",
    "iter_tar",
    "iter_tar_fileobj",
    "iter_tar_zst",
    "pack_tar",
    "pack_tar_zst",
    "write_member",
]


def iter_tar_fileobj(
    fileobj: IO[bytes], *, max_members: int, max_total_bytes: int, max_file_bytes: int | None = None
) -> Iterator[tuple[str, int, MemberReader]]:
    """Like ``iter_tar`` for an already-open uncompressed tar stream (e.g. ``gzip.open(...)``)."""
    with fileobj:
        yield from _iter_tar_stream(
            fileobj, max_members=max_members, max_total_bytes=max_total_bytes, max_file_bytes=max_file_bytes
        )
