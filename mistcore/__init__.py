"""mistcore: the format and patch engines shared by the Mist server and the desktop patcher.

Nothing in this package imports Django or Qt, so the server and the patcher build and apply
exactly the same bytes. Modules, lowest layer first:

- ``errors``: the exception hierarchy (every failure is a ``MistCoreError``).
- ``fsutil``: streaming hashes, atomic files and folders, hardlink clones.
- ``manifest``: the ``mist-manifest/1`` file list of a build, path and version-name rules.
- ``zstdio``: bounded, truncation-checked zstd streams.
- ``safetar``: deterministic ``.tar.zst`` packing and hostile-input-safe extraction.
- ``engines``: per-file patch engines (``hdiff``, ``hdiff-lzma``, ``lzma-patch``, ``x86-split``, ``zstd-patch``,
  ``bsdiff-lzma``, ``hdiff-window``, ``zstd``, ``rdiff``).
- ``journal``: crash-safe commit of a staged update into an install folder.
- ``delta``: direct deltas between two versions (``mist-delta/1``).
- ``indirect``: librsync updates from whatever the client has (``mist-indirect/1``).
"""

__version__ = "0.1.0"
