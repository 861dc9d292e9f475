"""``mist-patcher register-url-handler``: make ``mist://`` links from the store open the desktop app.

Linux: a freedesktop ``.desktop`` file with ``MimeType=x-scheme-handler/mist`` in
``$XDG_DATA_HOME/applications`` (default ``~/.local/share/applications``), then
``xdg-mime default mist-patcher.desktop x-scheme-handler/mist`` when xdg-mime exists.

Other systems need (not done here, said by the command):
- Windows: registry keys under ``HKEY_CURRENT_USER\\Software\\Classes\\mist``: default value
  ``URL:Mist``, an empty ``URL Protocol`` value, and ``shell\\open\\command`` =
  ``"<path to mist-patcher.exe>" gui "%1"`` (an installer usually writes them).
- macOS: the app bundle's ``Info.plist`` declares ``CFBundleURLTypes`` with scheme ``mist``; Launch
  Services registers it when the .app is first opened, and Qt delivers the URL as a
  ``QFileOpenEvent`` (``QDesktopServices.setUrlHandler`` / ``QEvent.FileOpen``), not argv.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from mist_patcher.cli.app import App
from mistcore.fsutil import atomic_write

NAME = "register-url-handler"
HELP = "make mist:// links open the desktop app (writes a .desktop file on Linux)"
DESKTOP_NAME = "mist-patcher.desktop"
WINDOWS_HINT = ("Windows: create HKCU\\Software\\Classes\\mist (default 'URL:Mist', empty 'URL Protocol') with "
                "shell\\open\\command = \"<mist-patcher.exe>\" gui \"%1\".")
MACOS_HINT = ("macOS: declare CFBundleURLTypes (scheme 'mist') in the app bundle's Info.plist; the URL arrives "
              "as a QFileOpenEvent.")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--print", action="store_true", help="print the .desktop file instead of writing it")
    parser.set_defaults(handler=run, skip_recovery=True)


def launcher_command() -> list[str]:
    """How the desktop should start the app: the installed script if on PATH, else this Python."""
    script = shutil.which("mist-patcher")
    if script:
        return [script]
    return [sys.executable, "-m", "mist_patcher.cli.main"]


def desktop_entry(extra_env: dict[str, str] | None = None) -> str:
    command = " ".join(shlex.quote(part) for part in launcher_command())
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (extra_env or {}).items())
    exec_line = f"env {env} {command} gui %u" if env else f"{command} gui %u"
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Name=Mist",
        "GenericName=Game launcher",
        "Comment=Install and update games from your Mist server",
        f"Exec={exec_line}",
        "Terminal=false",
        "Categories=Game;",
        "MimeType=x-scheme-handler/mist;",
        "StartupNotify=true",
        "",
    ])


def applications_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "applications"


def run(app: App) -> int:
    # A patcher with its own home (MIST_PATCHER_HOME) must keep it when launched from a link.
    extra = {k: os.environ[k] for k in ("MIST_PATCHER_HOME", "MIST_SERVER") if os.environ.get(k)}
    entry = desktop_entry(extra)
    if app.args.print:
        app.output.result({"desktop_entry": entry}, entry)
        return 0
    if sys.platform.startswith("win"):
        app.output.result({"registered": False, "hint": WINDOWS_HINT}, WINDOWS_HINT)
        return 1
    if sys.platform == "darwin":
        app.output.result({"registered": False, "hint": MACOS_HINT}, MACOS_HINT)
        return 1
    folder = applications_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DESKTOP_NAME
    with atomic_write(path, "w") as f:
        f.write(entry)
    registered_default = False
    if shutil.which("xdg-mime"):
        done = subprocess.run(["xdg-mime", "default", DESKTOP_NAME, "x-scheme-handler/mist"],
                              capture_output=True, check=False)
        registered_default = done.returncode == 0
    if shutil.which("update-desktop-database"):
        subprocess.run(["update-desktop-database", str(folder)], capture_output=True, check=False)
    human = f"Wrote {path}" + ("; mist:// links now open Mist." if registered_default
                               else "; run `xdg-mime default mist-patcher.desktop x-scheme-handler/mist` if links do not open it.")
    app.output.result({"registered": True, "desktop_file": str(path), "xdg_mime_default": registered_default}, human)
    return 0
