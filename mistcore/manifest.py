"""Build manifests (``mist-manifest/1``) and the path and version-name rules every layer shares.

A manifest lists every regular file of a build, sorted by path::

    {"files": [{"executable": false, "path": "bin/game", "sha256": "<64 hex>", "size": 123}, ...],
     "format": "mist-manifest/1", "total_size": 123, "version": "1.2.0"}

It is serialized with sorted keys and no whitespace, so the same build always gives the same
bytes. Paths are POSIX, relative, and must be creatable on Linux, macOS and Windows alike
(see ``validate_relpath``); two paths may not differ only by case or Unicode normalization,
and a path may not be both a file and a folder. Folders themselves are not recorded: an
empty folder is not part of a build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mistcore.errors import ManifestError, UnsafePathError
from mistcore.fsutil import CHUNK, open_regular

MANIFEST_FORMAT = "mist-manifest/1"
MAX_ENTRIES = 1_000_000
MAX_JSON_BYTES = 256 << 20
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[A-Za-z0-9._+-]{1,64}")
# Windows refuses these as a file name, with or without an extension ("con.txt" too).
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{p}{n}" for p in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
# Invalid in Windows names; ":" would even write an NTFS alternate data stream.
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')


def _is_reserved(component: str) -> bool:
    return component.split(".")[0].rstrip(" ").upper() in _RESERVED


def validate_relpath(path: str) -> str:
    """Return ``path`` if it is a safe, canonical POSIX relative file path; else UnsafePathError."""
    if not isinstance(path, str) or path == "":
        raise UnsafePathError(f"{path!r}: empty or not a string")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"{path!r}: not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"{path!r}: longer than {MAX_PATH_BYTES} bytes")
    if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
        raise UnsafePathError(f"{path!r}: absolute paths are not allowed")
    if "\\" in path:
        raise UnsafePathError(f"{path!r}: backslashes are not allowed")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UnsafePathError(f"{path!r}: control characters are not allowed")
    if path.endswith("/"):
        raise UnsafePathError(f"{path!r}: trailing slash")
    for component in path.split("/"):
        if component == "":
            raise UnsafePathError(f"{path!r}: empty path component")
        if component in (".", ".."):
            raise UnsafePathError(f"{path!r}: '.' and '..' components are not allowed")
        if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise UnsafePathError(f"{path!r}: component longer than {MAX_COMPONENT_BYTES} bytes")
        if component[-1] in ". ":
            raise UnsafePathError(f"{path!r}: component {component!r} ends in a dot or space")
        if _WINDOWS_FORBIDDEN.intersection(component):
            raise UnsafePathError(f"{path!r}: component {component!r} has a character Windows forbids")
        if _is_reserved(component):
            raise UnsafePathError(f"{path!r}: {component!r} is a reserved name on Windows")
    return path


def validate_version_name(name: str) -> str:
    """Return ``name`` if it is a valid version name (1-64 of [A-Za-z0-9._+-]); else ManifestError."""
    if not isinstance(name, str) or not _VERSION.fullmatch(name):
        raise ManifestError(f"version name {name!r}: must be 1-64 characters of A-Z a-z 0-9 . _ + -")
    if name.startswith("."):
        raise ManifestError(f"version name {name!r}: must not start with '.'")
    if name.endswith("."):
        raise ManifestError(f"version name {name!r}: must not end with '.' (Windows drops it)")
    if "__" in name:
        raise ManifestError(f"version name {name!r}: must not contain '__' (the <from>__<to> separator)")
    if _is_reserved(name):
        raise ManifestError(f"version name {name!r}: is a reserved name on Windows")
    return name


def path_key(path: str) -> str:
    """The key two paths collide on in case-insensitive or normalizing filesystems."""
    return unicodedata.normalize("NFC", path).casefold()


class PathSet:
    """Collects file paths and rejects duplicates, case clashes and file-versus-folder clashes."""

    def __init__(self, error: type[Exception] = UnsafePathError) -> None:
        self._error = error
        self._files: dict[str, str] = {}  # key -> path as given
        self._dirs: dict[str, str] = {}  # key of every parent folder -> a path that made it

    def add(self, path: str) -> None:
        key = path_key(path)
        if key in self._files:
            other = self._files[key]
            what = "duplicate path" if other == path else "paths differ only by case or normalization"
            raise self._error(f"{path!r}: {what} ({other!r})")
        if key in self._dirs:
            raise self._error(f"{path!r}: is a file but also a folder of {self._dirs[key]!r}")
        parts = key.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self._files:
                raise self._error(f"{path!r}: its folder {self._files[parent]!r} is also a file")
            self._dirs.setdefault(parent, path)
        self._files[key] = path


@dataclass(frozen=True)
class FileRecord:
    """One file of a build."""

    path: str
    size: int
    sha256: str
    executable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "executable": self.executable}


@dataclass
class Manifest:
    """The list of files of one version; ``files`` is kept sorted by path."""

    version: str
    files: tuple[FileRecord, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.files = tuple(sorted(self.files, key=lambda r: r.path))

    @property
    def total_size(self) -> int:
        return sum(r.size for r in self.files)

    def by_path(self) -> dict[str, FileRecord]:
        """Records keyed by path."""
        return {r.path: r for r in self.files}

    def content_hash(self) -> str:
        """SHA-256 over sorted (path, sha256, executable): equal for equal content, whatever the version name."""
        rows = [[r.path, r.sha256, r.executable] for r in self.files]
        return hashlib.sha256(_canonical_json(rows)).hexdigest()

    def to_json(self) -> bytes:
        """Stable JSON bytes (sorted keys, no whitespace, UTF-8)."""
        return _canonical_json(
            {
                "format": MANIFEST_FORMAT,
                "version": self.version,
                "files": [r.to_dict() for r in self.files],
                "total_size": self.total_size,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and strictly validate manifest JSON; ManifestError (or UnsafePathError) if anything is off."""
        obj = load_json_object(data, max_bytes=MAX_JSON_BYTES, what="manifest")
        expect_keys(obj, {"format", "version", "files", "total_size"}, "manifest")
        if obj["format"] != MANIFEST_FORMAT:
            raise ManifestError(f"manifest: format must be {MANIFEST_FORMAT!r}, got {obj['format']!r}")
        version = validate_version_name(obj["version"])
        files = obj["files"]
        if not isinstance(files, list):
            raise ManifestError("manifest: 'files' must be a list")
        if len(files) > MAX_ENTRIES:
            raise ManifestError(f"manifest: more than {MAX_ENTRIES} files")
        seen = PathSet(error=ManifestError)
        records = []
        for i, entry in enumerate(files):
            where = f"manifest files[{i}]"
            if not isinstance(entry, dict):
                raise ManifestError(f"{where}: must be an object")
            expect_keys(entry, {"path", "size", "sha256", "executable"}, where)
            path = entry["path"]
            if not isinstance(path, str):
                raise ManifestError(f"{where}: 'path' must be a string")
            try:
                validate_relpath(path)
            except UnsafePathError as exc:
                raise ManifestError(f"{where}: {exc}") from None
            seen.add(path)
            records.append(
                FileRecord(
                    path=path,
                    size=expect_size(entry["size"], f"{where} ({path})"),
                    sha256=expect_sha256(entry["sha256"], f"{where} ({path})"),
                    executable=expect_bool(entry["executable"], f"{where} ({path})"),
                )
            )
        manifest = cls(version=version, files=tuple(records))
        if [r.path for r in manifest.files] != [r.path for r in records]:
            raise ManifestError("manifest: files must be sorted by path")
        if expect_size(obj["total_size"], "manifest total_size") != manifest.total_size:
            raise ManifestError("manifest: total_size does not equal the sum of the file sizes")
        return manifest


@dataclass
class ManifestDiff:
    """Paths added, removed, changed (content or executable bit) and unchanged between two manifests."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


def diff_manifests(old: Manifest, new: Manifest) -> ManifestDiff:
    """Compare two manifests path by path."""
    old_map, new_map = old.by_path(), new.by_path()
    diff = ManifestDiff(added=[], removed=[], changed=[], unchanged=[])
    for path, rec in new_map.items():
        before = old_map.get(path)
        if before is None:
            diff.added.append(path)
        elif (before.sha256, before.size, before.executable) != (rec.sha256, rec.size, rec.executable):
            diff.changed.append(path)
        else:
            diff.unchanged.append(path)
    diff.removed = [p for p in old_map if p not in new_map]
    return diff


def scan_directory(root: Path, *, version: str, progress: Callable[[int], None] | None = None) -> Manifest:
    """Hash every file under ``root`` into a manifest; reject links, special files and unsafe names."""
    root = Path(root)
    validate_version_name(version)
    seen = PathSet()
    records: list[FileRecord] = []

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = os.fsdecode(entry.name)
            rel = f"{prefix}{name}"
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(f"{rel!r}: symlinks are not allowed in a build (replace it with the file)")
            if stat.S_ISDIR(st.st_mode):
                validate_relpath(rel)
                walk(Path(entry.path), rel + "/")
                continue
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(f"{rel!r}: devices, FIFOs and sockets are not allowed in a build")
            validate_relpath(rel)
            seen.add(rel)
            records.append(_hash_record(Path(entry.path), rel, st, progress))

    walk(root, "")
    if not records:
        raise ManifestError(f"{root}: the build has no files")
    if len(records) > MAX_ENTRIES:
        raise ManifestError(f"{root}: more than {MAX_ENTRIES} files")
    return Manifest(version=version, files=tuple(records))


def _hash_record(path: Path, rel: str, st: os.stat_result, progress: Callable[[int], None] | None) -> FileRecord:
    digest = hashlib.sha256()
    size = 0
    with open_regular(path, what=repr(rel)) as f:
        fst = os.fstat(f.fileno())
        # The entry could have been swapped (for a link) between listing and opening.
        if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
            raise UnsafePathError(f"{rel!r}: changed while the build was being scanned")
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress(len(chunk))
    return FileRecord(path=rel, size=size, sha256=digest.hexdigest(), executable=bool(st.st_mode & stat.S_IXUSR))


# Helpers shared by every strict JSON format in mistcore.


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same object always gives the same bytes."""
    return _canonical_json(obj)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestError(f"duplicate JSON key {key!r}")
        obj[key] = value
    return obj


def load_json_object(data: bytes, *, max_bytes: int, what: str) -> dict[str, Any]:
    """Parse JSON bytes into a dict, refusing oversized input, duplicate keys and NaN."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ManifestError(f"{what}: expected bytes")
    if len(data) > max_bytes:
        raise ManifestError(f"{what}: larger than {max_bytes} bytes")

    def no_constants(name: str) -> Any:
        raise ManifestError(f"{what}: {name} is not valid JSON")

    try:
        obj = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=no_constants)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and int()'s 4300-digit limit on huge literals.
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{what}: not valid JSON ({exc})") from None
    except ManifestError as exc:
        raise ManifestError(f"{what}: {exc}") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{what}: top level must be an object")
    return obj


def expect_keys(obj: dict[str, Any], keys: Iterable[str], where: str) -> None:
    """ManifestError unless ``obj`` has exactly ``keys``."""
    want = set(keys)
    have = set(obj)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        raise ManifestError(f"{where}: missing keys {missing}, unexpected keys {extra}")


def expect_size(value: Any, where: str) -> int:
    """A non-negative int (bools refused)."""
    if type(value) is not int or value < 0:
        raise ManifestError(f"{where}: size must be a non-negative integer, got {value!r}")
    return value


def expect_sha256(value: Any, where: str) -> str:
    """64 lowercase hex characters."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hex characters, got {value!r}")
    return value


def expect_bool(value: Any, where: str) -> bool:
    """A JSON boolean."""
    if type(value) is not bool:
        raise ManifestError(f"{where}: must be true or false, got {value!r}")
    return value


def expect_str(value: Any, where: str, *, max_len: int = 1024) -> str:
    """A string of at most ``max_len`` characters."""
    if not isinstance(value, str) or len(value) > max_len:
        raise ManifestError(f"{where}: must be a string of at most {max_len} characters")
    return value
