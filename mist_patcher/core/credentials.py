"""Tokens (never the password): in the OS keychain when a real one exists, else a 0600 file.

When ``MIST_PATCHER_HOME`` is set the file is always used, so tests and side-by-side installs
never read or write the user's keychain. Tokens are kept per server URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from mist_patcher.core.config import APP_NAME, home_is_explicit
from mist_patcher.core.errors import ConfigError
from mistcore.fsutil import fsync_dir


@dataclass
class Tokens:
    """What the server gave at login: the short-lived access JWT and the refresh JWT."""

    access: str
    refresh: str
    username: str = ""
    scope: str = ""
    device_id: str = ""


class CredentialStore(Protocol):
    description: str

    def load(self, server: str) -> Tokens | None: ...

    def save(self, server: str, tokens: Tokens) -> None: ...

    def delete(self, server: str) -> None: ...


class FileCredentialStore:
    """``<home>/credentials.json``, mode 0600, written atomically; maps server URL -> tokens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path} (mode 0600)"

    def _read_all(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # A corrupt credentials file only means "log in again".
            return {}
        return data if isinstance(data, dict) else {}

    def _write_all(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(6)}")
        # Created 0600 from the first byte: the tokens are never readable by others, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # in case a umask or an odd filesystem widened it
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path.parent)

    def load(self, server: str) -> Tokens | None:
        entry = self._read_all().get(server)
        if not isinstance(entry, dict) or not entry.get("access") or not entry.get("refresh"):
            return None
        return Tokens(**{k: str(v) for k, v in entry.items() if k in Tokens.__dataclass_fields__})

    def save(self, server: str, tokens: Tokens) -> None:
        data = self._read_all()
        data[server] = asdict(tokens)
        self._write_all(data)

    def delete(self, server: str) -> None:
        data = self._read_all()
        if server in data:
            del data[server]
            if data:
                self._write_all(data)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()


class KeyringCredentialStore:
    """The OS keychain (Secret Service, macOS Keychain, Windows Credential Locker) via ``keyring``."""

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self.description = f"OS keychain ({type(backend).__module__}.{type(backend).__name__})"

    def load(self, server: str) -> Tokens | None:
        raw = self._backend.get_password(APP_NAME, server)  # type: ignore[attr-defined]
        if not raw:
            return None
        try:
            entry = json.loads(raw)
            return Tokens(**{k: str(v) for k, v in entry.items() if k in Tokens.__dataclass_fields__})
        except (ValueError, TypeError):
            return None

    def save(self, server: str, tokens: Tokens) -> None:
        self._backend.set_password(APP_NAME, server, json.dumps(asdict(tokens)))  # type: ignore[attr-defined]

    def delete(self, server: str) -> None:
        import keyring.errors

        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            self._backend.delete_password(APP_NAME, server)  # type: ignore[attr-defined]


def real_keyring_backend() -> object | None:
    """The active keyring backend if it is a real keychain (not the fail/null ones), else None."""
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken keyring configuration must not stop the patcher
        return None
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        return None
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return None
    try:
        # Secret Service with no D-Bus session, a locked keychain...: probe once, fall back quietly.
        backend.get_password(APP_NAME, "__probe__")
    except Exception:
        return None
    return backend


def open_credential_store(home: Path) -> CredentialStore:
    """The keychain when a real one exists and MIST_PATCHER_HOME is unset; else the 0600 file."""
    if not home_is_explicit():
        backend = real_keyring_backend()
        if backend is not None:
            return KeyringCredentialStore(backend)
    path = home / "credentials.json"
    if path.exists() and os.name == "posix" and path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by other users; run: chmod 600 {path}")
    return FileCredentialStore(path)
