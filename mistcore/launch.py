"""Launch options: how to start a game's build. Shared by the server (admin, push, API) and the patcher.

A build may carry them in ``mist-launch.json`` at its root, so ``push`` alone can set them::

    {"launch": [
        {"name": "Play", "executable": "bin/game.x86_64", "arguments": ["--fullscreen"],
         "working_dir": "bin", "env": {"SDL_VIDEODRIVER": "x11"}},
        {"name": "Dedicated server", "executable": "bin/server", "arguments": ["-port", "27015"]}
    ]}

Rules (checked on the server at push and in the admin, and again by the patcher before it starts
anything): ``executable`` is a file of that build's manifest (a POSIX relative path, never leaving the
install folder); ``working_dir`` is empty (the executable's folder) or a relative path inside the
install; ``arguments`` is a list of strings; ``env`` maps variable names to strings; names are unique.
The first option is the default ("Play").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from mistcore.errors import MistCoreError
from mistcore.manifest import Manifest, validate_relpath

LAUNCH_FILE = "mist-launch.json"
MAX_LAUNCH_FILE_BYTES = 64 * 1024
MAX_OPTIONS = 16
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class LaunchConfigError(MistCoreError):
    """A launch option that cannot be used: it names a missing file, leaves the install, or is malformed."""


@dataclass(frozen=True)
class LaunchOption:
    name: str
    executable: str
    arguments: tuple[str, ...] = ()
    working_dir: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "executable": self.executable, "arguments": list(self.arguments),
                "working_dir": self.working_dir, "env": dict(self.env)}

    @classmethod
    def from_dict(cls, raw: Any, *, where: str = "launch option") -> LaunchOption:
        if not isinstance(raw, dict):
            raise LaunchConfigError(f"{where}: must be an object")
        unknown = set(raw) - {"name", "executable", "arguments", "working_dir", "env"}
        if unknown:
            raise LaunchConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        name = raw.get("name", "Play")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise LaunchConfigError(f"{where}: name must be a non-empty string of at most 64 characters")
        where = f"launch option {name!r}"
        executable = raw.get("executable")
        if not isinstance(executable, str):
            raise LaunchConfigError(f"{where}: executable must be a path inside the build")
        try:
            validate_relpath(executable)
        except MistCoreError as exc:
            raise LaunchConfigError(f"{where}: executable {exc}") from None
        working_dir = raw.get("working_dir", "") or ""
        if not isinstance(working_dir, str):
            raise LaunchConfigError(f"{where}: working_dir must be a string")
        if working_dir not in ("", "."):
            try:
                validate_relpath(working_dir)
            except MistCoreError as exc:
                raise LaunchConfigError(f"{where}: working_dir {exc}") from None
        else:
            working_dir = ""
        arguments = raw.get("arguments", [])
        if not isinstance(arguments, list) or not all(isinstance(a, str) and "\0" not in a for a in arguments):
            raise LaunchConfigError(f"{where}: arguments must be a list of strings")
        env = raw.get("env", {}) or {}
        if not isinstance(env, dict):
            raise LaunchConfigError(f"{where}: env must map variable names to strings")
        for key, value in env.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise LaunchConfigError(f"{where}: {key!r} is not an environment variable name")
            if not isinstance(value, str) or "\0" in value:
                raise LaunchConfigError(f"{where}: env {key} must be a string")
        return cls(name=name.strip(), executable=executable, arguments=tuple(arguments), working_dir=working_dir,
                   env={str(k): str(v) for k, v in env.items()})


def parse_options(raw: Any) -> list[LaunchOption]:
    """A list of option objects -> LaunchOptions (names unique), or LaunchConfigError."""
    if not isinstance(raw, list):
        raise LaunchConfigError("launch: must be a list of launch options")
    if len(raw) > MAX_OPTIONS:
        raise LaunchConfigError(f"launch: at most {MAX_OPTIONS} options")
    options = [LaunchOption.from_dict(item, where=f"launch option #{i + 1}") for i, item in enumerate(raw)]
    names = [o.name.casefold() for o in options]
    if len(set(names)) != len(names):
        raise LaunchConfigError("launch: two options have the same name")
    return options


def parse_launch_file(data: bytes) -> list[LaunchOption]:
    """The options of a ``mist-launch.json`` file."""
    if len(data) > MAX_LAUNCH_FILE_BYTES:
        raise LaunchConfigError(f"{LAUNCH_FILE}: larger than {MAX_LAUNCH_FILE_BYTES} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LaunchConfigError(f"{LAUNCH_FILE}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or set(raw) != {"launch"}:
        raise LaunchConfigError(f'{LAUNCH_FILE}: must be an object with one key, "launch"')
    options = parse_options(raw["launch"])
    if not options:
        raise LaunchConfigError(f"{LAUNCH_FILE}: no launch option")
    return options


def check_against(option: LaunchOption, manifest: Manifest) -> None:
    """LaunchConfigError unless the option's executable is a file of this build and its working folder
    is the install or a folder of the build."""
    files = manifest.by_path()
    if option.executable not in files:
        raise LaunchConfigError(
            f"launch option {option.name!r}: {option.executable} is not a file of {manifest.version}"
        )
    if option.working_dir:
        prefix = option.working_dir.rstrip("/") + "/"
        if not any(path.startswith(prefix) for path in files):
            raise LaunchConfigError(
                f"launch option {option.name!r}: working folder {option.working_dir} is not a folder of "
                f"{manifest.version}"
            )


def select(options: list[LaunchOption], name: str | None) -> LaunchOption:
    """The option called `name` (case-insensitive), or the first."""
    if not options:
        raise LaunchConfigError("this game has no launch option for this build: ask the admin to add one")
    if name is None:
        return options[0]
    for option in options:
        if option.name.casefold() == name.casefold():
            return option
    known = ", ".join(repr(o.name) for o in options)
    raise LaunchConfigError(f"no launch option {name!r} (this build has {known})")
