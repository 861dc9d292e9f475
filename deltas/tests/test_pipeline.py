"""The heart of Mist, end to end on a real worker: push v1, v2, v3 -> worker makes direct deltas
-> apply v1 -> v2 -> v3 with the shared apply code; chain replay of v2; an indirect v1 -> v3."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from builds import storage
from builds.models import Job, Version
from builds.services import push_version
from catalog.models import Game
from deltas import services
from deltas.models import DirectDelta
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist.testing.worker import WorkerCluster
from mistcore import delta as mdelta
from mistcore import indirect as mindirect
from mistcore.journal import recover

pytestmark = pytest.mark.django_db(transaction=True)


def _ready(name: str) -> bool:
    v = Version.objects.get(name=name)
    if v.status == Version.Status.FAILED:
        raise AssertionError(f"{name} failed: {v.error}")
    return v.status == Version.Status.READY


@pytest.fixture
def builds_dir(tmp_path: Path) -> dict[str, Path]:
    v1 = make_build(tmp_path / "src" / "v1", seed=7, big_file_bytes=400_000)
    v2 = next_version(v1, tmp_path / "src" / "v2", seed=7, step=1)
    v3 = next_version(v2, tmp_path / "src" / "v3", seed=7, step=2)
    return {"1.0": v1, "1.1": v2, "1.2": v3}


def test_push_worker_apply_replay_indirect(settings: Any, tmp_path: Path, builds_dir: dict[str, Path]) -> None:
    settings.MIST_HDIFF_MAX_BYTES = 256 * 1024  # huge.bin (400 KB) goes through the windowed engine
    worker = WorkerCluster(tmp_path / "worker.log").start()
    try:
        game = Game.objects.create(slug="demo", title="Demo")
        for name, src in builds_dir.items():
            push_version(game=game, name=name, source=src, notes=f"notes {name}")
            worker.wait_for(lambda n=name: _ready(n), timeout=120, what=f"{name} ready")  # type: ignore[misc]

        # the depot is v3, byte for byte
        assert tree_bytes(storage.depot_dir("demo", "windows")) == tree_bytes(builds_dir["1.2"])

        # direct updates: apply the downloaded bundles in order to an install of v1
        install = tmp_path / "install"
        shutil.copytree(builds_dir["1.0"], install)
        for old, new in [("1.0", "1.1"), ("1.1", "1.2")]:
            delta = DirectDelta.objects.get(from_version__name=old, to_version__name=new)
            assert delta.bundle_size > 0 and delta.status == DirectDelta.Status.READY
            unpacked = tmp_path / f"bundle-{new}"
            manifest = mdelta.unpack_bundle(
                src=storage.delta_bundle_path("demo", "windows", old, new), dest=unpacked, max_total_bytes=10**9
            )
            engines = {op.engine for op in manifest.ops if op.engine}
            assert "hdiff-window" in engines, engines  # the file over MIST_HDIFF_MAX_BYTES
            assert any(op.op == "copy" for op in manifest.ops)  # the renamed level travels free
            mdelta.apply_delta_dir(delta_dir=unpacked, install_root=install, work_dir=tmp_path / f"work-{new}")
            assert tree_bytes(install) == tree_bytes(builds_dir[new])
        v3 = Version.objects.get(name="1.2")
        assert v3.update_size == DirectDelta.objects.get(to_version=v3).bundle_size
        assert v3.update_size < v3.total_size / 4

        # chain replay: v2 is no longer on the storage; it is rebuilt from the base archive
        assert not storage.tree_dir("demo", "windows", "1.1").exists()
        shutil.rmtree(storage.cached_version_dir("demo", "windows", "1.1"), ignore_errors=True)
        shutil.rmtree(storage.cached_version_dir("demo", "windows", "1.0"), ignore_errors=True)
        rebuilt = services.reconstruct_version(version=Version.objects.get(name="1.1"))
        assert tree_bytes(rebuilt) == tree_bytes(builds_dir["1.1"])

        # indirect update v1 -> v3 through the worker
        client_root = tmp_path / "client"
        shutil.copytree(builds_dir["1.0"], client_root)
        plan = services.plan_update(
            game=game, from_version=Version.objects.get(name="1.0"), to_version=v3
        )
        assert plan.route in {"direct", "indirect"}
        paths = plan.indirect_paths
        have = [p for p in paths if (client_root / p).is_file()]
        sig_tar = tmp_path / "sigs.tar"
        mindirect.signature_set(root=client_root, paths=have, out_tar=sig_tar)

        class Upload:
            def chunks(self) -> Any:
                yield sig_tar.read_bytes()

        job = services.request_indirect_update(
            game=game, to_version=v3, signatures_upload=Upload(), paths=paths, user=None
        )

        def job_done() -> bool:
            job.refresh_from_db()
            if job.status == Job.Status.FAILED:
                raise AssertionError(job.error)
            return job.status == Job.Status.DONE

        worker.wait_for(job_done, timeout=120, what="indirect job")
        bundle = storage.cache_root() / job.result["path"]
        stage = tmp_path / "stage"
        written = mindirect.apply_indirect_to_stage(
            bundle=bundle, install_root=client_root, stage_dir=stage, max_total_bytes=10**9
        )
        from mistcore.journal import begin, commit

        removed = sorted(set(tree_bytes(client_root)) - set(tree_bytes(builds_dir["1.2"])))
        begin(install_root=client_root, stage_dir=stage, target_version="1.2", written=written, removed=removed,
              executable=[p for p, (_, x) in tree_bytes(builds_dir["1.2"]).items() if x])
        commit(install_root=client_root)
        recover(install_root=client_root)
        assert tree_bytes(client_root) == tree_bytes(builds_dir["1.2"])
    finally:
        worker.stop()
