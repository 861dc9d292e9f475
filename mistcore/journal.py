"""Crash-safe updates: stage every new file beside the install, then commit with a journal.

The journal is ``<install_root>/.mist-update-journal.json``, always replaced atomically::

    {"format": "mist-journal/1", "state": "staging" | "committing", "stage_dir": "/abs/path",
     "target_version": "1.3", "written": [paths], "removed": [paths], "executable": [paths]}

Sequence: ``begin`` (state ``staging``) and the caller writing the new files into ``stage_dir``
(in either order; the install is untouched) -> ``commit`` sets ``committing`` and runs ``commit_stage``, which
deletes removed files, then ``os.replace``s each staged file into the install, then deletes the
journal and the stage. ``commit_stage`` is idempotent, so after a crash at any point
``recover`` either discards the stage (``staging``: the old version is intact) or finishes the
commit (``committing``): the install is always exactly the old or exactly the new version.
The stage must be outside the install and should be on the same filesystem (otherwise each
move is a copy then a rename, still idempotent but slower). ``begin`` drops a ``.mist-stage``
marker in the stage: only a marked folder is ever deleted, whatever a damaged journal says.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mistcore.errors import ManifestError, MistCoreError
from mistcore.fsutil import _rmtree, _temp_name, atomic_write, fsync_dir
from mistcore.manifest import canonical_json, expect_keys, load_json_object, path_key, validate_relpath

JOURNAL_NAME = ".mist-update-journal.json"
STAGE_MARKER = ".mist-stage"
JOURNAL_FORMAT = "mist-journal/1"
STATES = ("staging", "committing")


@dataclass
class Journal:
    """The recorded plan of one update in progress."""

    install_root: Path
    stage_dir: Path
    target_version: str
    written: list[str]
    removed: list[str]
    executable: list[str] = field(default_factory=list)
    state: str = "staging"

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "format": JOURNAL_FORMAT,
                "state": self.state,
                "stage_dir": str(self.stage_dir),
                "target_version": self.target_version,
                "written": self.written,
                "removed": self.removed,
                "executable": self.executable,
            }
        )


def journal_path(install_root: Path) -> Path:
    """Where the journal of ``install_root`` lives."""
    return Path(install_root) / JOURNAL_NAME


def read_journal(*, install_root: Path) -> Journal | None:
    """The unfinished update of ``install_root``, or None."""
    path = journal_path(install_root)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    obj = load_json_object(data, max_bytes=512 << 20, what="update journal")
    expect_keys(
        obj, {"format", "state", "stage_dir", "target_version", "written", "removed", "executable"}, "update journal"
    )
    if obj["format"] != JOURNAL_FORMAT or obj["state"] not in STATES:
        raise ManifestError(f"{path}: unknown journal format or state")
    lists = {}
    for key in ("written", "removed", "executable"):
        value = obj[key]
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise ManifestError(f"{path}: {key!r} must be a list of paths")
        lists[key] = [validate_relpath(p) for p in value]
    if not isinstance(obj["stage_dir"], str) or not isinstance(obj["target_version"], str):
        raise ManifestError(f"{path}: stage_dir and target_version must be strings")
    return Journal(
        install_root=Path(install_root),
        stage_dir=Path(obj["stage_dir"]),
        target_version=obj["target_version"],
        written=lists["written"],
        removed=lists["removed"],
        executable=lists["executable"],
        state=obj["state"],
    )


def _write_journal(journal: Journal) -> None:
    with atomic_write(journal_path(journal.install_root)) as f:
        f.write(journal.to_json())


def begin(
    *,
    install_root: Path,
    stage_dir: Path,
    target_version: str,
    written: Iterable[str],
    removed: Iterable[str],
    executable: Iterable[str] = (),
) -> Journal:
    """Record an update about to be staged; MistCoreError if another one is unfinished."""
    install_root, stage_dir = Path(install_root), Path(stage_dir).absolute()
    if read_journal(install_root=install_root) is not None:
        raise MistCoreError(f"{install_root}: an earlier update is unfinished; run recover() first")
    if _is_within(stage_dir, install_root):
        raise MistCoreError(f"{stage_dir}: the stage folder must be outside the install folder")
    # The stage may be filled before or after begin(); either way it is deleted once the update ends.
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / STAGE_MARKER).touch()
    journal = Journal(
        install_root=install_root,
        stage_dir=stage_dir,
        target_version=target_version,
        written=sorted(validate_relpath(p) for p in written),
        removed=sorted(validate_relpath(p) for p in removed),
        executable=sorted(validate_relpath(p) for p in executable),
    )
    _write_journal(journal)
    return journal


def _remove_stage(stage_dir: Path) -> None:
    # Only a folder begin() marked: a damaged journal must never make us delete anything else.
    if (stage_dir / STAGE_MARKER).is_file():
        _rmtree(stage_dir)


def _is_within(path: Path, root: Path) -> bool:
    resolved, root_resolved = path.resolve(), root.resolve()
    return resolved == root_resolved or root_resolved in resolved.parents


def _finish(journal: Journal) -> None:
    journal.state = "committing"
    _write_journal(journal)
    commit_stage(
        install_root=journal.install_root,
        stage_dir=journal.stage_dir,
        written=journal.written,
        removed=journal.removed,
        executable=journal.executable,
    )
    os.unlink(journal_path(journal.install_root))
    fsync_dir(journal.install_root)
    _remove_stage(journal.stage_dir)


def commit(*, install_root: Path) -> Journal:
    """Move the staged files of the recorded update into place; return the finished journal."""
    journal = read_journal(install_root=install_root)
    if journal is None:
        raise MistCoreError(f"{install_root}: no update to commit (call begin() first)")
    _finish(journal)
    return journal


def discard(*, install_root: Path) -> None:
    """Abandon a staged update: delete the stage, then the journal (the install was not touched)."""
    journal = read_journal(install_root=install_root)
    if journal is None:
        return
    if journal.state != "staging":
        raise MistCoreError(f"{install_root}: the update is already committing; call recover() to finish it")
    _remove_stage(journal.stage_dir)
    os.unlink(journal_path(install_root))
    fsync_dir(install_root)


def recover(*, install_root: Path) -> str:
    """After a crash: "clean" (nothing to do), "rolled_back" (stage discarded) or "rolled_forward"."""
    journal = read_journal(install_root=install_root)
    if journal is None:
        return "clean"
    if journal.state == "staging":
        discard(install_root=install_root)
        return "rolled_back"
    _finish(journal)
    return "rolled_forward"


def _move_into_place(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Different filesystems: copy beside the target, rename over it, then drop the staged copy.
        tmp = _temp_name(dst)
        shutil.copy2(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        os.unlink(src)


def _exact_name_exists(path: Path) -> bool:
    try:
        return path.name in os.listdir(path.parent)
    except OSError:
        return False


def _prune_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone with a non-empty sibling): stop here
        folder = folder.parent


def commit_stage(
    *,
    install_root: Path,
    stage_dir: Path,
    written: list[str],
    removed: list[str],
    executable: Collection[str] | None = None,
) -> None:
    """Delete ``removed`` files, then move each staged file into the install; safe to run again after a crash."""
    install_root, stage_dir = Path(install_root), Path(stage_dir)
    exec_set = None if executable is None else set(executable)
    written_keys = {path_key(w) for w in written}
    touched: set[Path] = set()
    # Removals first: a removed file may stand where a new folder goes (and case-only renames).
    for rel in removed:
        target = install_root.joinpath(*validate_relpath(rel).split("/"))
        if target.is_dir() and not target.is_symlink():
            # Already replaced by the new version's folder in an earlier, interrupted run.
            if not any(w.startswith(rel + "/") for w in written):
                raise MistCoreError(f"{rel}: expected a file to remove, found a folder")
            continue
        if path_key(rel) in written_keys and not _exact_name_exists(target):
            # A case-only rename on a case-insensitive disk: the file there now is the new one.
            continue
        try:
            os.unlink(target)
        except (FileNotFoundError, NotADirectoryError):
            pass  # already gone; NotADirectory: a parent is already the new version's file
        touched.add(target.parent)
        # Pruning runs even when the file was already gone: a crash may have come between the two.
        _prune_empty_parents(target.parent, install_root)
    for rel in written:
        src = stage_dir.joinpath(*validate_relpath(rel).split("/"))
        dst = install_root.joinpath(*rel.split("/"))
        if os.path.lexists(src):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                dst.rmdir()  # an empty leftover folder where the new file goes; a full one is an error
            _move_into_place(src, dst)
            touched.add(dst.parent)
        elif not dst.is_file():
            raise MistCoreError(f"{rel}: neither staged nor installed; the stage was lost, update again")
        if exec_set is not None:
            os.chmod(dst, 0o755 if rel in exec_set else 0o644)
    for folder in sorted(touched):
        if folder.exists():
            fsync_dir(folder)
