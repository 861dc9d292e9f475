"""Launching an installed game, and recording how long it was played.

``play_game`` holds the game's lock for the whole session (so no update or repair can touch the files
while the game runs, and a game being updated cannot be started), checks the launch option against the
installed manifest again (mistcore.launch: the executable must be a file of the build, nothing may leave
the install folder), runs a Windows build through a runner (umu-run or wine) on Linux and macOS, and
sends the game's output to ``<home>/logs/<slug>/``.

Every session is a JSON file in ``<home>/sessions/`` written when the game starts and re-written every
``HEARTBEAT`` seconds while it runs, so a patcher killed during play still leaves a session that ends at
its last heartbeat. ``sync_sessions`` reports finished sessions to the server (idempotent by session id:
sending one twice counts once) and keeps the ones it could not send for the next time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.errors import ApiError, InstallBusy, NotLoggedIn, PatcherError, ServerUnreachable
from mist_patcher.core.state import InstallRecord, check_slug
from mistcore.fsutil import atomic_write
from mistcore.launch import LaunchConfigError, LaunchOption, check_against, parse_options, select
from mistcore.platforms import current_platform

HEARTBEAT = 30.0  # seconds between two writes of a running session
RUNNER_ENV = "MIST_PATCHER_RUNNER"
RUNNERS = ("umu-run", "wine")  # looked up on PATH, in this order, for a Windows build off Windows


class PlayError(PatcherError):
    """The game cannot be started (no launch option, a missing file, no runner, busy)."""


class RunnerMissing(PlayError):
    """A Windows build on Linux or macOS with no runner installed or configured."""


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


# --- sessions ---------------------------------------------------------------------------------------------


@dataclass
class PlaySession:
    id: str
    game: str
    version: str
    platform: str
    option: str
    started_at: float
    heartbeat_at: float
    ended_at: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    log: str = ""
    # "" until sent; then "reported", or "rejected" with the server's reason (never retried).
    status: str = ""
    reason: str = ""

    @property
    def seconds(self) -> int:
        return int(max(0.0, (self.ended_at or self.heartbeat_at) - self.started_at))

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "game": self.game, "version": self.version, "platform": self.platform,
                "option": self.option, "started_at": _iso(self.started_at),
                "ended_at": _iso(self.ended_at or self.heartbeat_at), "exit_code": self.exit_code}


class SessionStore:
    """The play sessions of one patcher home, one file each (written atomically)."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "sessions"
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, session_id: str) -> Path:
        return self.folder / f"{uuid.UUID(session_id)}.json"

    def save(self, session: PlaySession) -> None:
        with atomic_write(self._path(session.id), "w") as f:
            json.dump(asdict(session), f, indent=1, sort_keys=True)

    def all(self) -> list[PlaySession]:
        out = []
        known = set(PlaySession.__dataclass_fields__)
        for path in sorted(self.folder.glob("*.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                out.append(PlaySession(**{k: v for k, v in raw.items() if k in known}))
            except (OSError, ValueError, TypeError):
                continue  # a file we cannot read is left for a human; it never blocks the others
        return sorted(out, key=lambda s: s.started_at)

    def finished(self, *, now: float | None = None) -> list[PlaySession]:
        """Sessions to report: ended ones, and ones whose patcher died (no heartbeat for 3 beats)."""
        now = _now() if now is None else now
        out = []
        for session in self.all():
            if session.status:
                continue
            if session.ended_at is None:
                if now - session.heartbeat_at < 3 * HEARTBEAT:
                    continue  # still being played (its patcher writes a heartbeat every HEARTBEAT seconds)
                session.ended_at = session.heartbeat_at  # the patcher was killed: end at its last beat
                self.save(session)
            out.append(session)
        return out


@dataclass
class SyncResult:
    sent: int = 0
    rejected: list[str] = field(default_factory=list)
    pending: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_sessions(ctx: PatcherContext, *, now: float | None = None) -> SyncResult:
    """Send every finished, unsent session to the server; keep the rest for the next time."""
    store = SessionStore(ctx.home)
    result = SyncResult()
    todo = store.finished(now=now)
    for index, session in enumerate(todo):
        try:
            ctx.api.post_json("playtime/sessions", session.report(), ok=(200, 201))
        except ApiError as exc:
            if exc.status in (400, 404, 409):
                # The server will never take it (a game we may no longer see, a bad clock): say so, once.
                session.status, session.reason = "rejected", f"{exc.status}: {exc.detail}"
                store.save(session)
                result.rejected.append(f"{session.game} {session.id}: {session.reason}")
                continue
            result.pending = len(todo) - index
            result.error = str(exc)
            break
        except (ServerUnreachable, NotLoggedIn) as exc:
            result.pending = len(todo) - index
            result.error = str(exc)
            break
        session.status = "reported"
        store.save(session)
        result.sent += 1
    return result


def local_playtime(ctx: PatcherContext) -> dict[str, dict[str, Any]]:
    """Seconds and sessions per game from this machine's records (reported or not)."""
    out: dict[str, dict[str, Any]] = {}
    for session in SessionStore(ctx.home).all():
        row = out.setdefault(session.game, {"seconds": 0, "sessions": 0, "unsent": 0, "last_played": 0.0})
        row["seconds"] += session.seconds
        row["sessions"] += 1
        row["unsent"] += 0 if session.status else 1
        row["last_played"] = max(row["last_played"], session.ended_at or session.heartbeat_at)
    return out


# --- launch options ---------------------------------------------------------------------------------------


def _cache_path(ctx: PatcherContext, slug: str) -> Path:
    folder = ctx.home / "launch"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{check_slug(slug)}.json"


def launch_options(ctx: PatcherContext, record: InstallRecord) -> list[LaunchOption]:
    """The installed version's launch options: from the server (and cached), or the cache when offline."""
    cache = _cache_path(ctx, record.slug)
    params = {"platform": record.platform} if record.platform else None
    try:
        body = ctx.api.get_json(
            f"games/{quote(record.slug)}/versions/{quote(record.version)}/launch", params=params
        )
        raw = body.get("options", [])
        with atomic_write(cache, "w") as f:
            json.dump({"version": record.version, "platform": record.platform, "options": raw}, f, indent=1)
    except (ServerUnreachable, NotLoggedIn) as exc:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise PlayError(f"{record.slug}: cannot fetch its launch options ({exc}) and none are saved") from None
        if cached.get("version") != record.version:
            raise PlayError(f"{record.slug}: offline, and the saved launch options are for another version") from None
        raw = cached.get("options", [])
    try:
        return parse_options(raw)
    except LaunchConfigError as exc:
        raise PlayError(f"{record.slug}: {exc}") from None


def pending_update(ctx: PatcherContext, record: InstallRecord) -> str | None:
    """The newer version the server offers for this install's platform, or None (also when offline)."""
    try:
        game = ctx.api.game(record.slug, platform=record.platform or None)
    except (ServerUnreachable, NotLoggedIn, ApiError):
        return None
    latest = game.get("latest_version")
    return latest if latest and latest != record.version else None


# --- running ----------------------------------------------------------------------------------------------


def find_runner(ctx: PatcherContext) -> list[str] | None:
    """How to run a Windows build here: MIST_PATCHER_RUNNER, the `runner` setting, else umu-run or wine on
    PATH (None if there is none)."""
    configured = os.environ.get(RUNNER_ENV, "").strip() or str(ctx.settings.extra.get("runner") or "").strip()
    if configured:
        argv = shlex.split(configured)
        found = shutil.which(argv[0])
        if found is None:
            raise RunnerMissing(f"the configured runner {argv[0]!r} is not installed or not executable "
                                f"(set by {RUNNER_ENV} or `mist-patcher config --set-runner`)")
        return [found, *argv[1:]]
    for name in RUNNERS:
        found = shutil.which(name)
        if found:
            return [found]
    return None


def build_command(ctx: PatcherContext, *, build_platform: str, executable: Path,
                  arguments: tuple[str, ...]) -> list[str]:
    host = current_platform()
    if build_platform == host:
        return [str(executable), *arguments]
    if build_platform == "windows":
        runner = find_runner(ctx)
        if runner is None:
            raise RunnerMissing(
                f"this is a Windows build and no runner is installed: install umu-run (Proton) or wine, "
                f"or point {RUNNER_ENV} / `mist-patcher config --set-runner COMMAND` at one"
            )
        return [*runner, str(executable), *arguments]
    raise PlayError(f"a {build_platform} build cannot run on {host}: install the {host} build instead "
                    f"(`mist-patcher install GAME --platform {host}`)")


@dataclass
class PlayResult:
    slug: str
    version: str
    platform: str
    option: str
    session_id: str
    command: list[str]
    log: str
    exit_code: int | None
    seconds: int
    sync: SyncResult | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sync"] = self.sync.to_dict() if self.sync else None
        return data


def play_game(
    ctx: PatcherContext,
    *,
    slug: str,
    option: str | None = None,
    on_started: Callable[[PlayResult], None] | None = None,
    sync: bool = True,
) -> PlayResult:
    """Start the game, wait for it to exit, record and report the session."""
    try:
        with ctx.state.lock(slug):
            result = _play_locked(ctx, slug=slug, option=option, on_started=on_started)
    except InstallBusy:
        raise PlayError(f"{slug} is busy: an update, a repair or a game session of it is running; "
                        f"wait for it to finish") from None
    if sync:
        result.sync = sync_sessions(ctx)
    return result


def _play_locked(ctx: PatcherContext, *, slug: str, option: str | None,
                 on_started: Callable[[PlayResult], None] | None) -> PlayResult:
    record = ctx.state.require(slug)
    if not record.complete or record.switching_to:
        raise PlayError(f"{slug}: its install or update did not finish; run `mist-patcher update {slug}` first")
    manifest = ctx.state.manifest(slug)
    platform = record.platform or "windows"
    try:
        chosen = select(launch_options(ctx, record), option)
        check_against(chosen, manifest)  # the server checked too; the files on this disk are what count
    except LaunchConfigError as exc:
        raise PlayError(f"{slug}: {exc}") from None
    install = record.folder.resolve()
    executable = install.joinpath(*chosen.executable.split("/"))
    workdir = install.joinpath(*chosen.working_dir.split("/")) if chosen.working_dir else executable.parent
    for path in (executable, workdir):
        if not path.resolve().is_relative_to(install):
            raise PlayError(f"{slug}: launch option {chosen.name!r} leaves the install folder")
    if not executable.is_file():
        raise PlayError(f"{slug}: {chosen.executable} is missing from the install (run `mist-patcher repair {slug}`)")
    command = build_command(ctx, build_platform=platform, executable=executable, arguments=chosen.arguments)
    env = {**os.environ, **chosen.env}

    session_id = str(uuid.uuid4())
    started = _now()
    logs = ctx.home / "logs" / check_slug(slug)
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{session_id[:8]}.log"
    store = SessionStore(ctx.home)
    session = PlaySession(id=session_id, game=slug, version=record.version, platform=platform, option=chosen.name,
                          started_at=started, heartbeat_at=started, pid=os.getpid(), log=str(log_path))
    result = PlayResult(slug=slug, version=record.version, platform=platform, option=chosen.name,
                        session_id=session_id, command=command, log=str(log_path), exit_code=None, seconds=0)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
        except OSError as exc:
            raise PlayError(f"{slug}: could not start {command[0]}: {exc.strerror or exc}") from None
        store.save(session)
        if on_started is not None:
            on_started(result)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT):
                session.heartbeat_at = _now()
                with contextlib.suppress(OSError):
                    store.save(session)

        beater = threading.Thread(target=beat, name=f"play-{slug}", daemon=True)
        beater.start()
        try:
            code = proc.wait()
        finally:
            stop.set()
            beater.join(timeout=5)
    session.ended_at = session.heartbeat_at = _now()
    session.exit_code = code
    store.save(session)
    result.exit_code = code
    result.seconds = session.seconds
    return result
