"""The patcher's long operations as ``CoreJob``s (install, update, verify, repair, rollback, uninstall)."""

from __future__ import annotations

from pathlib import Path

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.install import install_game, uninstall_game
from mist_patcher.core.play import play_game
from mist_patcher.core.repair import repair_game, verify_game
from mist_patcher.core.rollback import rollback_game
from mist_patcher.core.update import update_game
from mist_patcher.jobs.worker import CoreJob


def install_job(ctx: PatcherContext, slug: str, *, title: str = "", version: str | None = None,
                dest: Path | None = None) -> CoreJob:
    return CoreJob(
        lambda progress, control, note: install_game(ctx, slug=slug, version=version, dest=dest,
                                                     progress=progress, control=control),
        kind="install", slug=slug, title=title,
    )


def update_job(ctx: PatcherContext, slug: str, *, title: str = "", version: str | None = None) -> CoreJob:
    return CoreJob(
        lambda progress, control, note: update_game(ctx, slug=slug, version=version, progress=progress,
                                                    control=control, note=note),
        kind="update", slug=slug, title=title,
    )


def verify_job(ctx: PatcherContext, slug: str, *, title: str = "") -> CoreJob:
    return CoreJob(
        lambda progress, control, note: verify_game(ctx, slug=slug, progress=progress, control=control),
        kind="verify", slug=slug, title=title,
    )


def repair_job(ctx: PatcherContext, slug: str, *, title: str = "") -> CoreJob:
    return CoreJob(
        lambda progress, control, note: repair_game(ctx, slug=slug, progress=progress, control=control, note=note),
        kind="repair", slug=slug, title=title,
    )


def rollback_job(ctx: PatcherContext, slug: str, *, title: str = "") -> CoreJob:
    return CoreJob(
        lambda progress, control, note: rollback_game(ctx, slug=slug, progress=progress, control=control,
                                                      note=note),
        kind="rollback", slug=slug, title=title,
    )


def uninstall_job(ctx: PatcherContext, slug: str, *, title: str = "") -> CoreJob:
    return CoreJob(
        lambda progress, control, note: uninstall_game(ctx, slug=slug),
        kind="uninstall", slug=slug, title=title,
    )


def play_job(ctx: PatcherContext, slug: str, *, title: str = "", update_first: bool = False) -> CoreJob:
    """Start the game and wait for it to exit (the session is recorded and reported); with `update_first`,
    install the waiting update, then play."""
    def run(progress, control, note):  # type: ignore[no-untyped-def]
        if update_first:
            update_game(ctx, slug=slug, progress=progress, control=control, note=note)
        note(f"Playing {title or slug}")
        return play_game(ctx, slug=slug)

    return CoreJob(run, kind="play", slug=slug, title=title)
