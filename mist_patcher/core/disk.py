"""Free-space checks before work starts, and turning ENOSPC into one clear message."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from mist_patcher.core.errors import DiskFullError
from mistcore.errors import MistCoreError

# Headroom kept free beyond what the plan says, so the system itself does not run dry:
# 5% of the need, between 64 KiB and 16 MiB.
MARGIN_MIN = 64 * 1024
MARGIN_MAX = 16 * 1024 * 1024


def margin_for(need: int) -> int:
    return min(MARGIN_MAX, max(MARGIN_MIN, need // 20))


def existing_ancestor(path: Path) -> Path:
    """The nearest folder of ``path`` that exists (where free space can be measured)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free bytes for this user on the filesystem holding ``path``."""
    return shutil.disk_usage(existing_ancestor(path)).free


def same_filesystem(a: Path, b: Path) -> bool:
    return os.stat(existing_ancestor(a)).st_dev == os.stat(existing_ancestor(b)).st_dev


def require_free(path: Path, need: int) -> None:
    """DiskFullError unless ``need`` bytes (plus a margin) are free where ``path`` lives."""
    have = free_bytes(path)
    if need + margin_for(need) > have:
        raise DiskFullError(need=need, have=have, where=str(existing_ancestor(path)))


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, directly or as the cause of a mistcore error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        if isinstance(exc, MistCoreError) and "No space left on device" in str(exc):
            return True  # a patch child process that ran out of space reports it in its message
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False
