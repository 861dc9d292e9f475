"""Child process for ``rdiff.patch_file``: ``python -m mistcore.engines.rdiff_worker BASIS DELTA OUT MAX_BYTES``.

Exit codes: 0 done (OUT written and fsynced), 2 usage, 3 output over MAX_BYTES, 4 the delta
read past the end of the basis (wrong basis), 5 librsync error. The parent enforces the timeout.
This module imports only pyrsync so it starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

EXIT_OUTPUT_CAP = 3
EXIT_BASIS_OVERRUN = 4
EXIT_LIBRSYNC = 5


class _CappedOutput:
    """Output file refusing to grow past a cap (a runaway delta must not fill the disk)."""

    def __init__(self, f: BinaryIO, cap: int) -> None:
        self._f = f
        self._cap = cap
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        if self.count > self._cap:
            os._exit(EXIT_OUTPUT_CAP)
        return self._f.write(data)

    def read(self, n: int = -1) -> bytes:  # pyrsync checks that the object looks like a file
        raise OSError("write-only")

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)


class _StrictBasis:
    """Basis reader that ends the process when librsync asks for bytes past the end of the basis.

    That only happens with a wrong basis or a corrupt delta, and it is exactly the case where
    librsync would otherwise loop forever; exiting from inside the callback is the one reliable stop.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if n is not None and n > 0 and len(data) < n:
            os._exit(EXIT_BASIS_OVERRUN)
        return data

    def write(self, data: bytes) -> int:
        raise OSError("read-only")


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: rdiff_worker BASIS DELTA OUT MAX_BYTES", file=sys.stderr)
        return 2
    basis, delta, out, max_bytes = argv[0], argv[1], argv[2], int(argv[3])
    import pyrsync

    with open(basis, "rb") as fb, open(delta, "rb") as fd, open(out, "xb") as fo:
        try:
            pyrsync.patch(_StrictBasis(fb), fd, _CappedOutput(fo, max_bytes))
        except Exception as exc:  # librsync's error class is not exported by pyrsync
            print(f"librsync: {exc}", file=sys.stderr)
            return EXIT_LIBRSYNC
        fo.flush()
        os.fsync(fo.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
