"""Move an install to any published version by following the server's update plan.

Routes (chosen by the server's planner, shown to the user before anything starts):

- ``direct``: the chain of pre-built bundles, applied in order (one step straight into the
  stage; several steps into a hardlinked clone of the install, step after step);
- ``indirect``: librsync signatures of the differing local files go up, rdiff deltas come back;
- ``full``: the target's full archive, extracted into the stage.

Every route writes into a stage next to the install under a journal and switches in at the end
(see ``staging``); files the stage still gets wrong are fetched whole before the switch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mist_patcher.core.archive import extract_archive
from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.disk import require_free, same_filesystem
from mist_patcher.core.errors import IntegrityFailure, PatcherError
from mist_patcher.core.heal import heal_into_stage
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mist_patcher.core.recovery import recover_install
from mist_patcher.core.repair import heal_damaged
from mist_patcher.core.staging import ChangeSet, SwitchIn, remove_tree, work_dir_for
from mist_patcher.core.state import InstallRecord
from mist_patcher.core.verify import verify_tree
from mistcore.delta import apply_delta_to_stage, commit_stage, unpack_bundle
from mistcore.errors import IntegrityError, MistCoreError
from mistcore.fsutil import clone_tree
from mistcore.manifest import Manifest

ROUTES = ("direct", "jump", "indirect", "full")


@dataclass
class UpdateResult:
    """The plan an update followed (or would follow, with ``dry_run``) and what it cost."""

    slug: str
    from_version: str
    to_version: str
    route: str
    reason: str = ""
    download_bytes: int = 0
    disk_bytes: int = 0
    alternatives: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    downloaded: int = 0
    uploaded: int = 0
    fetched_whole: list[str] = field(default_factory=list)
    modified_locally: list[str] = field(default_factory=list)  # left out of the delta, fetched block-level
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def up_to_date(self) -> bool:
        return self.route == "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "route": self.route,
            "reason": self.reason,
            "download_bytes": self.download_bytes,
            "disk_bytes": self.disk_bytes,
            "alternatives": self.alternatives,
            "steps": self.steps,
            "downloaded_bytes": self.downloaded,
            "uploaded_bytes": self.uploaded,
            "fetched_whole": self.fetched_whole,
            "modified_locally": self.modified_locally,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
            "up_to_date": self.up_to_date,
        }


def update_game(
    ctx: PatcherContext,
    *,
    slug: str,
    version: str | None = None,
    dry_run: bool = False,
    force_route: str | None = None,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    on_plan: Callable[[UpdateResult], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> UpdateResult:
    """Plan (server), show the cost, check disk space, stage, verify, switch in."""
    started = time.monotonic()
    with ctx.state.lock(slug):
        record = ctx.state.require(slug)
        recover_install(ctx, record)
        record = ctx.state.require(slug)
        if not record.complete:
            raise PatcherError(f"{slug}: the install did not finish; run `mist-patcher install {slug}` again")
        installed = ctx.state.manifest(slug)
        platform = record.platform or None  # installs from before platforms: the server's default
        plan = ctx.api.update_plan(slug, from_version=record.version, to_version=version, platform=platform)
        pending_jump = (plan.get("jump") or {}) if plan.get("route") == "jump" and not dry_run else {}
        if plan.get("steps") and plan.get("route") == "jump":
            pending_jump = {}  # made already: nothing to wait for
        if pending_jump.get("job_url"):
            # The server makes a delta between exactly these two versions now; wait, then ask again (it is
            # then ready, for us and every friend making the same jump).
            if note:
                note(f"the server is making a delta {record.version} -> {plan.get('to_version')} for this jump")
            ctx.api.wait_job(pending_jump["job_url"], control=control, on_update=_job_progress(progress, "jump"))
            plan = ctx.api.update_plan(slug, from_version=record.version, to_version=version, platform=platform)
            if plan.get("route") == "jump" and not plan.get("steps"):
                raise PatcherError("the server made the jump delta but does not offer it: try again")
        result = UpdateResult(
            slug=slug,
            from_version=record.version,
            to_version=str(plan.get("to_version") or version or record.version),
            route=str(plan.get("route", "none")),
            reason=str(plan.get("reason", "")),
            download_bytes=int(plan.get("download_bytes") or 0),
            disk_bytes=int(plan.get("disk_bytes") or 0),
            alternatives=dict(plan.get("alternatives") or {}),
            steps=len(plan.get("steps") or []),
            dry_run=dry_run,
        )
        if force_route and force_route != result.route and result.route != "none":
            result.notes.append(f"route {force_route} forced instead of the planner's {result.route}")
            result.route = force_route
            result.download_bytes = int(result.alternatives.get(force_route) or result.download_bytes)
        if on_plan:
            on_plan(result)
        if result.up_to_date or dry_run:
            result.seconds = time.monotonic() - started
            return result
        if result.route not in ROUTES:
            raise PatcherError(f"the server chose a route this patcher does not know: {result.route!r}")

        install = record.folder
        require_free(install.parent, result.disk_bytes)
        if not same_filesystem(install.parent, ctx.state.downloads_dir):
            require_free(ctx.state.downloads_dir, result.download_bytes)
        target = ctx.api.manifest(slug, result.to_version, platform=platform)
        changes = ChangeSet.between(installed, target)

        def say(message: str) -> None:
            result.notes.append(message)
            if note:
                note(message)

        run = _Runner(ctx, record, plan, installed, target, result, progress, control, say)
        route = result.route
        if route in ("direct", "jump"):  # a jump is one direct bundle between exactly these two versions
            bundles = run.download_direct_bundles()
            try:
                run.switch_in(changes, lambda stage: run.apply_direct(bundles, changes, stage))
            except IntegrityError as exc:
                # A local file is not the version the delta expects (modified by the user or a mod).
                say(f"direct update could not apply ({exc}); switching to an indirect update")
                route = result.route = "indirect"
            finally:
                for bundle in bundles:
                    bundle.unlink(missing_ok=True)
        if route == "indirect":
            paths = list((plan.get("indirect") or {}).get("paths") or changes.written)
            run.switch_in(changes, lambda stage: run.apply_indirect(paths, stage))
        elif route == "full":
            run.switch_in(changes, lambda stage: run.apply_full(changes, stage))

        # Files the update did not touch must still be there with their size (a cheap stat each);
        # ones that are not (deleted or changed by the user) are healed now, block-level.
        sizes = {r.path: r.size for r in target.files}
        untouched = set(sizes) - set(changes.written)
        wrong = [p for p in sorted(untouched) if not _size_matches(install, p, sizes[p])]
        if wrong:
            say(f"{len(wrong)} untouched file(s) were missing or changed locally; repairing them")
            repaired = heal_damaged(ctx, ctx.state.require(slug), target, wrong, progress=progress,
                                    control=control, note=note)
            result.downloaded += repaired.downloaded
            result.uploaded += repaired.uploaded
            result.fetched_whole.extend(repaired.whole)
        result.seconds = time.monotonic() - started
        return result


def _job_progress(progress: ProgressCallback, what: str) -> Callable[[dict], None]:
    """Report a server job's progress like the archive and indirect waits do."""
    meter = ProgressMeter(progress, phase="server", total=100, message=f"the server is making the {what} delta")
    meter.report()

    def on_job(job: dict) -> None:
        fraction = float(job.get("progress") or 0.0)
        meter.done = int(100 * min(1.0, fraction if fraction <= 1 else fraction / 100))
        meter.report(f"server job {job.get('status')}")

    return on_job


def _size_matches(root: Path, rel: str, size: int) -> bool:
    path = root.joinpath(*rel.split("/"))
    try:
        return path.is_file() and not path.is_symlink() and path.stat().st_size == size
    except OSError:
        return False


class _Runner:
    """The steps of one update, sharing its context and counters."""

    def __init__(
        self,
        ctx: PatcherContext,
        record: InstallRecord,
        plan: dict[str, Any],
        installed: Manifest,
        target: Manifest,
        result: UpdateResult,
        progress: ProgressCallback,
        control: Control,
        say: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.record = record
        self.plan = plan
        self.installed = installed
        self.target = target
        self.result = result
        self.progress = progress
        self.control = control
        self.say = say
        self.install = record.folder
        # Files mistcore already hashed while writing them into the stage: path -> SHA-256.
        self.verified: dict[str, str] = {}

    # Downloads come before the journal starts: the install is untouched while the network works.

    def download_direct_bundles(self) -> list[Path]:
        bundles = []
        for i, step in enumerate(self.plan.get("steps") or []):
            if step.get("kind", "direct") not in ("direct", "jump"):
                raise PatcherError(f"unknown update step kind {step.get('kind')!r}")
            name = f"{self.record.slug}-{step['from_version']}__{step['to_version']}.tar.zst"
            fetched = self.ctx.downloader.fetch(
                step["url"], self.ctx.state.download_path(name),
                expected_size=step.get("size"), expected_sha256=step.get("sha256"),
                progress=self.progress, control=self.control,
                message=f"step {i + 1}/{self.result.steps}: {step['from_version']} -> {step['to_version']}",
            )
            self.result.downloaded += fetched.transferred
            bundles.append(fetched.path)
        return bundles

    def switch_in(self, changes: ChangeSet, stage_files: Callable[[Path], None]) -> None:
        with SwitchIn(self.ctx, self.record, target=self.target, changes=changes,
                      need_bytes=self.result.disk_bytes) as switch:
            stage = switch.stage_dir
            stage_files(stage)
            self._check_stage(changes, stage)
            self.control.checkpoint()
            switch.commit(old_manifest=self.installed)

    def _check_stage(self, changes: ChangeSet, stage: Path) -> None:
        """Every written file must be the target's; anything else is fetched whole now.

        Files a patch engine already verified against the same SHA-256 as the target manifest
        (mistcore checks each result before renaming it) only get a size check, not a second hash.
        """
        records = self.target.by_path()
        to_hash = []
        bad = []
        for rel in changes.written:
            record = records[rel]
            if self.verified.get(rel) == record.sha256:
                if not _size_matches(stage, rel, record.size):
                    bad.append(rel)
            else:
                to_hash.append(rel)
        report = verify_tree(stage, self.target, paths=to_hash, find_extra=False,
                             progress=self.progress, control=self.control,
                             threads=self.ctx.settings.verify_threads)
        bad += report.damaged + report.wrong_mode
        if not bad:
            return
        self.say(f"{len(bad)} file(s) did not come out right; fetching them whole")
        healed = heal_into_stage(self.ctx, slug=self.record.slug, manifest=self.target, paths=bad,
                                 source_root=self.install, stage_dir=stage, block_level=False,
                                 progress=self.progress, control=self.control)
        self.result.downloaded += healed.downloaded
        self.result.fetched_whole.extend(healed.whole)
        again = verify_tree(stage, self.target, paths=bad, find_extra=False)
        if again.damaged:
            raise IntegrityFailure(f"{len(again.damaged)} file(s) are still wrong, e.g. {again.damaged[0]}")

    def apply_direct(self, bundles: list[Path], changes: ChangeSet, stage: Path) -> None:
        """Apply the bundle (or chain of bundles) into the stage. A file the delta cannot start from because
        it was modified locally (its basis is not the version the delta expects) is left out of the patching
        and fetched on its own by the indirect route, block-level against the local file."""
        steps = self.plan.get("steps") or []
        chain = len(bundles) > 1
        work = work_dir_for(self.install)
        remove_tree(work)
        work.mkdir(parents=True)
        tree = work / "tree"
        skipped: set[str] = set()  # paths whose patching was left out (local basis not the expected one)
        if chain:
            # A chain applies each step to the previous one's result: a hardlinked clone of the
            # install is that scratch tree (no copy; mistcore never writes into a file in place).
            clone_tree(self.install, tree)
        try:
            for i, (step, bundle) in enumerate(zip(steps, bundles, strict=True)):
                self.control.checkpoint()
                unpacked = work / f"step-{i}"
                delta = unpack_bundle(src=bundle, dest=unpacked,
                                      max_total_bytes=2 * bundle.stat().st_size + self.target.total_size + (64 << 20))
                if (delta.from_version, delta.to_version) != (step["from_version"], step["to_version"]):
                    raise PatcherError(
                        f"bundle {bundle.name} is {delta.from_version} -> {delta.to_version}, "
                        f"expected {step['from_version']} -> {step['to_version']}"
                    )
                meter = ProgressMeter(self.progress, phase="patch",
                                      total=sum(op.target_size or 0 for op in delta.ops),
                                      message=f"{delta.from_version} -> {delta.to_version}")
                meter.report()
                bad: list[str] = []
                if chain:
                    step_stage = work / f"stage-{i}"
                    apply_delta_to_stage(delta=delta, delta_dir=unpacked, source_root=tree,
                                         stage_dir=step_stage, progress=meter.advance, bad_basis=bad)
                    left_out = set(bad)
                    commit_stage(install_root=tree, stage_dir=step_stage,
                                 written=[p for p in delta.written if p not in left_out], removed=delta.removed,
                                 executable=[op.path for op in delta.ops if op.executable and op.path not in left_out])
                    remove_tree(step_stage)
                else:
                    apply_delta_to_stage(delta=delta, delta_dir=unpacked, source_root=self.install,
                                         stage_dir=stage, progress=meter.advance, bad_basis=bad)
                meter.finish()
                skipped.update(bad)
                for op in delta.ops:
                    if op.op == "remove" or op.path in skipped:
                        self.verified.pop(op.path, None)
                    elif op.target_sha256 is not None:
                        self.verified[op.path] = op.target_sha256
                remove_tree(unpacked)
            if chain:
                # The end of the chain is the target: move what the update changes into the stage.
                for rel in changes.written:
                    src = tree.joinpath(*rel.split("/"))
                    if rel not in skipped and src.is_file():
                        dst = stage.joinpath(*rel.split("/"))
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
        finally:
            remove_tree(work)
        local = sorted(skipped & set(changes.written))
        if local:
            self.say(f"{len(local)} file(s) were modified locally (e.g. {local[0]}); the delta cannot start from "
                     "them, so they are fetched block-level against the local copy")
            self.result.modified_locally.extend(local)
            self.apply_indirect(local, stage)

    def apply_indirect(self, paths: list[str], stage: Path) -> None:
        healed = heal_into_stage(
            self.ctx, slug=self.record.slug, manifest=self.target, paths=paths, source_root=self.install,
            stage_dir=stage, whole_below=0, missing_via_indirect=True, progress=self.progress,
            control=self.control, note=self.say,
        )
        self.result.downloaded += healed.downloaded
        self.result.uploaded += healed.uploaded
        self.result.fetched_whole.extend(healed.whole)

    def apply_full(self, changes: ChangeSet, stage: Path) -> None:
        full = self.plan.get("full") or {}
        archive_url = full.get("archive_url") or f"games/{self.record.slug}/versions/{self.target.version}/archive"
        response = self.ctx.api.request("POST", archive_url, ok=(200, 202))
        body = response.json()
        info = body if response.status_code == 200 else self.ctx.api.wait_job(body["job_url"], control=self.control)
        archive = self.ctx.state.download_path(f"{self.record.slug}-{self.target.version}.tar.zst")
        fetched = self.ctx.downloader.fetch(
            info["url"], archive, expected_size=info.get("size"), expected_sha256=info.get("sha256"),
            progress=self.progress, control=self.control, message=f"full archive {self.target.version}",
        )
        self.result.downloaded += fetched.transferred
        try:
            extract_archive(src=archive, dest=stage, manifest=self.target, only=set(changes.written),
                            into_stage=True, progress=self.progress, control=self.control)
        except MistCoreError:
            archive.unlink(missing_ok=True)
            raise
        archive.unlink(missing_ok=True)
