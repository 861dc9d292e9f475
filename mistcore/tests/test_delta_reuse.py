"""A delta over several versions re-uses the blobs of the deltas between them (by basis and target content)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from mistcore import delta as mdelta
from mistcore.delta import known_blobs
from mistcore.tests.helpers import (
    assert_delta_applies,
    counting_diffs,
    mutate,
    relinked_library,
    structured_bytes,
    write_tree,
)
from mistcore.tests.helpers import delta_between as _delta


def _three_versions(work: Path) -> None:
    """v1 -> v2 -> v3: a pack changes in v2 only, a library in v3 only, a config in both, a file is added in v2."""
    rng = random.Random(7)
    pack, config = structured_bytes(rng, 300_000), b"\n".join(b"key%d = %d" % (i, i) for i in range(2000))
    lib_old, lib_new = relinked_library(random.Random(8))
    added = structured_bytes(rng, 50_000)
    pack2 = mutate(rng, pack)
    write_tree(work / "v1", {"data/pack.bin": pack, "lib/game.so": lib_old, "config.ini": config})
    write_tree(work / "v2", {"data/pack.bin": pack2, "lib/game.so": lib_old, "config.ini": config + b"\nv2",
                             "data/new.bin": added})
    write_tree(work / "v3", {"data/pack.bin": pack2, "lib/game.so": lib_new, "config.ini": config + b"\nv2\nv3",
                             "data/new.bin": added})



def test_a_jump_reuses_the_patches_of_files_that_changed_once(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the push-time deltas v1 -> v2 -> v3, and the jump v1 -> v3 made from scratch
    _three_versions(work)
    _delta(work, "v1", "v2", "d12")
    _delta(work, "v2", "v3", "d23")
    fresh = _delta(work, "v1", "v3", "fresh")
    # when the jump is made again with the push-time deltas' blobs at hand
    diffed = counting_diffs(monkeypatch)
    jump = _delta(work, "v1", "v3", "jump", reuse=known_blobs([work / "d12", work / "d23"]))
    # then only the file that changed twice was diffed; the pack's and the library's patches and the added
    # file's blob came from the push-time deltas, and the jump is the same, blob for blob, as the one made anew
    assert diffed == ["config.ini"]
    assert jump.ops == fresh.ops
    ops = {op.path: op for op in jump.ops}
    assert ops["lib/game.so"].engine == "bsdiff-lzma" and ops["data/new.bin"].op == "add"
    # and it turns v1 into v3
    assert_delta_applies(work, "jump", "v1", "v3")


def test_a_damaged_or_missing_blob_is_made_anew_never_copied(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given push-time deltas whose library patch was damaged on disk and whose pack patch is gone
    _three_versions(work)
    _delta(work, "v1", "v2", "d12")
    d23 = _delta(work, "v2", "v3", "d23")
    reuse = known_blobs([work / "d12", work / "d23"])
    lib = next(op for op in d23.ops if op.path == "lib/game.so")
    blob = work / "d23" / str(lib.blob)
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    blob.write_bytes(bytes(damaged))
    pack = next(op for op in mdelta.DeltaManifest.from_json((work / "d12" / mdelta.MANIFEST_NAME).read_bytes()).ops
                if op.path == "data/pack.bin")
    (work / "d12" / str(pack.blob)).unlink()
    # when the jump is made with them
    diffed = counting_diffs(monkeypatch)
    _delta(work, "v1", "v3", "jump", reuse=reuse)
    # then those two files were diffed again and the jump still turns v1 into v3
    assert sorted(diffed) == ["config.ini", "data/pack.bin", "lib/game.so"]
    assert_delta_applies(work, "jump", "v1", "v3")
