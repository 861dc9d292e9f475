"""Seed the embedded demo: an admin, a friend, and a demo game with three generated Windows versions and a Linux build."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from builds.services import push_version
from catalog.models import Game
from mist.testing.gamedata import make_build, next_version

DEMO_ACCOUNTS = {
    "admin": ("mist-demo-admin", True),
    "friend": ("mist-demo-friend", False),
}
VERSIONS = ["1.0.0", "1.1.0", "1.2.0"]  # Windows builds (MIST_DEFAULT_PLATFORM unless set otherwise)
LINUX_VERSIONS = ["1.2.0"]  # the latest version also has a Linux build: the store shows both platforms


# A tiny stand-in for the game's program, so `mist-patcher play starfall` (and the Play button) start
# something real: it prints what it was given, waits a moment, and exits. Its mist-launch.json sets the
# launch options at push, as a real build's would.
LINUX_LAUNCHER = """#!/bin/sh
echo "Starfall (demo) is running in $(pwd) with arguments: $*"
echo "DEMO_QUALITY=$DEMO_QUALITY"
sleep "${STARFALL_SECONDS:-5}"
echo "Starfall (demo) quits."
"""
WINDOWS_LAUNCHER = "@echo off\r\necho Starfall (demo) is running with arguments: %*\r\ntimeout /t 5 >nul\r\n"


def add_launcher(root: Path, platform: str) -> Path:
    name = "starfall.sh" if platform == "linux" else "starfall.bat"
    launcher = root / "bin" / name
    launcher.write_text(LINUX_LAUNCHER if platform == "linux" else WINDOWS_LAUNCHER, newline="")
    launcher.chmod(0o755)
    options = [
        {"name": "Play", "executable": f"bin/{name}", "arguments": ["--fullscreen"], "working_dir": "data",
         "env": {"DEMO_QUALITY": "high"}},
        {"name": "Safe mode", "executable": f"bin/{name}", "arguments": ["--safe-mode", "--windowed"]},
    ]
    (root / "mist-launch.json").write_text(json.dumps({"launch": options}, indent=2))
    return root


class Command(BaseCommand):
    help = "Create demo accounts and a demo game with three versions pushed through the real pipeline."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--server-url", default="http://127.0.0.1:8000")

    def handle(self, *args: object, **opts: Any) -> None:
        User = get_user_model()
        for username, (password, staff) in DEMO_ACCOUNTS.items():
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
        game, _ = Game.objects.get_or_create(
            slug="starfall", defaults={"title": "Starfall (demo)", "description_override": (
                "A generated demo game: three versions pushed through Mist's real pipeline, so the "
                "store shows update sizes and the patcher has something to update."
            )},
        )
        with tempfile.TemporaryDirectory(prefix="mist-demo-") as tmp:
            previous = add_launcher(make_build(Path(tmp) / VERSIONS[0], seed=42, scale=4), "windows")
            builds = {VERSIONS[0]: previous}
            for step, name in enumerate(VERSIONS[1:], start=1):
                previous = next_version(previous, Path(tmp) / name, seed=42, step=step)
                builds[name] = previous
            pushes = [(name, src, "windows") for name, src in builds.items()]
            for name in LINUX_VERSIONS:
                linux = add_launcher(make_build(Path(tmp) / f"linux-{name}", seed=7, scale=2), "linux")
                pushes.append((name, linux, "linux"))
            for name, src, platform in pushes:
                if game.versions.filter(name=name, platform=platform).exists():
                    continue
                result = push_version(
                    game=game, name=name, source=src, notes=f"Demo release {name}.", platform=platform
                )
                queued = ", ".join(job.kind for job in result.queued)
                self.stdout.write(
                    f"pushed {game.slug} {name} ({platform}, {result.version.total_size / 1e6:.1f} MB); queued: {queued}"
                )
        url = opts["server_url"]
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Mist demo is ready at {url}/"))
        for username, (password, staff) in DEMO_ACCOUNTS.items():
            role = "admin (also /admin/)" if staff else "friend"
            self.stdout.write(f"  {role:22} username: {username:8} password: {password}")
        self.stdout.write(f"  patcher: mist-patcher --server {url} login --username friend")
        self.stdout.write("           mist-patcher install starfall && mist-patcher play starfall   (the Linux build)")
