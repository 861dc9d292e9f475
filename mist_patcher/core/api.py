"""HTTP client of the Mist API v1 (docs/API.md): tokens, games, manifests, plans, jobs, archives.

The access token is refreshed transparently: a 401 on an authenticated request triggers one
``auth/token/refresh`` with the stored refresh token, then the request is retried once. When
the refresh token is refused too, the stored tokens are dropped and ``NotLoggedIn`` is raised.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import requests

from mist_patcher import __version__
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.credentials import CredentialStore, Tokens
from mist_patcher.core.errors import ApiError, NotLoggedIn, PatcherError, ServerUnreachable
from mistcore.engines import ENGINES
from mistcore.errors import MistCoreError
from mistcore.manifest import Manifest

API_PREFIX = "/api/v1/"
USER_AGENT = f"mist-patcher/{__version__} ({platform.system()})"
JobProgress = Callable[[dict[str, Any]], None]


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        # DRF validation errors: {"field": ["message", ...]}
        parts = []
        for key, value in body.items():
            msg = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key}: {msg}")
        if parts:
            return "; ".join(parts)
    return str(body)[:300]


class ApiClient:
    """One server, one user. Safe to share between threads (one requests.Session per thread)."""

    def __init__(
        self,
        server: str,
        *,
        store: CredentialStore | None = None,
        timeout: float = 30.0,
        job_poll_interval: float = 0.5,
    ) -> None:
        self.server = server.rstrip("/")
        self.store = store
        self.timeout = timeout
        self.job_poll_interval = job_poll_interval
        self._local = threading.local()
        self._refresh_lock = threading.Lock()
        self._tokens: Tokens | None = store.load(self.server) if store is not None else None

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    @property
    def logged_in(self) -> bool:
        return self._tokens is not None

    def url(self, path: str) -> str:
        """Absolute URL: ``/dl/...`` and ``/api/...`` are server-rooted, bare paths are under /api/v1/."""
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/"):
            return urljoin(self.server + "/", path)
        return self.server + API_PREFIX + path

    def _send(self, method: str, url: str, *, auth: bool, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if self._tokens is None:
                raise NotLoggedIn("not logged in: run `mist-patcher login` first")
            headers["Authorization"] = f"Bearer {self._tokens.access}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, url, headers=headers, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(f"cannot reach the server at {self.server}: {_short(exc)}") from None
        except requests.exceptions.Timeout:
            raise ServerUnreachable(f"the server at {self.server} did not answer in {self.timeout:.0f} s") from None
        except requests.exceptions.RequestException as exc:
            raise ServerUnreachable(f"request to {url} failed: {_short(exc)}") from None

    def request(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, refreshing the access token once on 401; ApiError unless status is in ``ok``."""
        url = self.url(path)
        rewind = _rewinder(kwargs)
        used = self._tokens.access if (auth and self._tokens) else None
        response = self._send(method, url, auth=auth, **kwargs)
        if response.status_code == 401 and auth:
            response.close()
            self._refresh(used)
            rewind()
            response = self._send(method, url, auth=auth, **kwargs)
            if response.status_code == 401:
                raise NotLoggedIn(f"the server refused the login ({_detail(response)}): log in again")
        if response.status_code not in ok:
            detail = _detail(response)
            response.close()
            raise ApiError(response.status_code, detail, url=url)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def _refresh(self, used_access: str | None) -> None:
        with self._refresh_lock:
            tokens = self._tokens
            if tokens is None:
                raise NotLoggedIn("not logged in: run `mist-patcher login` first")
            if tokens.access != used_access:
                return  # another thread refreshed while we waited
            if self._adopt_newer_stored(tokens):
                return  # another process (the GUI, another CLI run) refreshed: use its tokens
            response = self._send("POST", self.url("auth/token/refresh"), auth=False, json={"refresh": tokens.refresh})
            if response.status_code != 200:
                detail = _detail(response)
                # Refresh tokens rotate: another process may have used ours a moment ago.
                if self._adopt_newer_stored(tokens):
                    return
                self._forget()
                raise NotLoggedIn(f"your session has expired ({detail}): log in again")
            body = response.json()
            self._set_tokens(
                Tokens(
                    access=body["access"],
                    refresh=body.get("refresh") or tokens.refresh,  # rotation is optional on the server
                    username=tokens.username,
                    scope=tokens.scope,
                    device_id=tokens.device_id,
                )
            )

    def _adopt_newer_stored(self, ours: Tokens) -> bool:
        stored = self.store.load(self.server) if self.store is not None else None
        if stored is not None and stored.refresh != ours.refresh:
            self._tokens = stored
            return True
        return False

    def _set_tokens(self, tokens: Tokens) -> None:
        self._tokens = tokens
        if self.store is not None:
            self.store.save(self.server, tokens)

    def _forget(self) -> None:
        self._tokens = None
        if self.store is not None:
            self.store.delete(self.server)

    # --- auth -----------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> Tokens:
        """Exchange username and password for tokens (the password itself is never stored)."""
        body = self.post_json("auth/token", {"username": username, "password": password}, auth=False)
        tokens = Tokens(access=body["access"], refresh=body["refresh"], username=username, scope=body.get("scope", ""))
        self._set_tokens(tokens)
        return tokens

    def redeem_pairing_code(self, code: str, *, device_name: str) -> Tokens:
        """Exchange a pairing code from the store's account page for tokens."""
        body = self.post_json("auth/devices/redeem", {"code": code.strip(), "name": device_name}, auth=False)
        tokens = Tokens(
            access=body["access"],
            refresh=body["refresh"],
            username=str(body.get("username", "")),
            scope=body.get("scope", ""),
            device_id=str(body.get("device_id", "")),
        )
        self._set_tokens(tokens)
        return tokens

    def logout(self) -> bool:
        """Blacklist the refresh token on the server (best effort) and forget the tokens locally."""
        tokens = self._tokens
        told_server = False
        if tokens is not None:
            try:
                response = self._send("POST", self.url("auth/logout"), auth=True, json={"refresh": tokens.refresh})
                told_server = response.status_code in (200, 204)
            except PatcherError:
                pass
        self._forget()
        return told_server

    # --- catalog --------------------------------------------------------------------------------

    def games(self, *, platform: str | None = None) -> list[dict[str, Any]]:
        """The games we may see; with a platform, each game's latest version is that platform's."""
        return list(self.get_json("games", params=_platform_params(platform))["games"])

    def game(self, slug: str, *, platform: str | None = None) -> dict[str, Any]:
        return dict(self.get_json(f"games/{quote(slug)}", params=_platform_params(platform)))

    def manifest(self, slug: str, version: str, *, platform: str | None = None) -> Manifest:
        response = self.request(
            "GET", f"games/{quote(slug)}/versions/{quote(version)}/manifest", params=_platform_params(platform)
        )
        try:
            manifest = Manifest.from_json(response.content)
        except MistCoreError as exc:
            raise PatcherError(f"the server sent an invalid manifest for {slug} {version}: {exc}") from None
        if manifest.version != version:
            raise PatcherError(f"asked for the manifest of {version}, the server sent {manifest.version}")
        return manifest

    def update_plan(
        self,
        slug: str,
        *,
        from_version: str | None,
        to_version: str | None,
        local_manifest: Manifest | None = None,
        platform: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"from_version": from_version, "to_version": to_version}
        if platform:
            body["platform"] = platform
        if local_manifest is not None:
            body["local_manifest"] = json.loads(local_manifest.to_json())
        return dict(self.post_json(f"games/{quote(slug)}/updates", body))

    def request_indirect(
        self, slug: str, *, to_version: str, signatures: Path, paths: list[str], platform: str | None = None
    ) -> dict[str, Any]:
        """Upload a signature set; returns the 202 body (``job``, ``job_url``)."""
        # The patch engines this patcher applies: the server may then diff a file whose exact content it
        # knows (the same sha256 in a version it has) with them instead of librsync.
        data = {"to_version": to_version, "paths": json.dumps(paths), "engines": ",".join(sorted(ENGINES))}
        if platform:
            data["platform"] = platform
        with open(signatures, "rb") as f:
            response = self.request(
                "POST",
                f"games/{quote(slug)}/indirect",
                ok=(200, 201, 202),
                data=data,
                files={"signatures": ("signatures.tar", f, "application/x-tar")},
                timeout=max(self.timeout, 300),
            )
        return dict(response.json())

    def archive(self, slug: str, version: str, *, platform: str | None = None) -> dict[str, Any]:
        """Ask for a version's full archive; returns 200's ``{url,size,sha256}`` or 202's ``{job, job_url}``."""
        response = self.request(
            "POST", f"games/{quote(slug)}/versions/{quote(version)}/archive", ok=(200, 202),
            params=_platform_params(platform),
        )
        body = dict(response.json())
        body["_status"] = response.status_code
        return body

    def archive_status(self, slug: str, version: str, *, platform: str | None = None) -> dict[str, Any] | None:
        """``{url, size, sha256}`` if the full archive is built, else None; starts no work (dry runs)."""
        try:
            return dict(self.get_json(
                f"games/{quote(slug)}/versions/{quote(version)}/archive", params=_platform_params(platform)
            ))
        except ApiError as exc:
            if exc.status == 404 and "not built" in exc.detail:
                return None
            raise

    def wait_job(
        self,
        job_url: str,
        *,
        control: Control = NEVER_CANCELLED,
        on_update: JobProgress | None = None,
        timeout: float = 3600.0,
    ) -> dict[str, Any]:
        """Poll a worker job until it is done; return its ``result``; PatcherError if it failed."""
        deadline = time.monotonic() + timeout
        delay = self.job_poll_interval
        while True:
            control.checkpoint()
            job = dict(self.get_json(job_url))
            if on_update is not None:
                on_update(job)
            status = job.get("status")
            if status == "done":
                return dict(job.get("result") or {})
            if status == "failed":
                raise PatcherError(f"the server's {job.get('kind', 'job')} failed: {job.get('error') or 'no reason given'}")
            if time.monotonic() > deadline:
                raise PatcherError(f"the server's job {job.get('id')} did not finish in {timeout:.0f} s")
            control.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def ensure_archive(
        self, slug: str, version: str, *, control: Control = NEVER_CANCELLED, on_update: JobProgress | None = None,
        platform: str | None = None,
    ) -> dict[str, Any]:
        """``{url, size, sha256}`` of a version's full archive, waiting for the worker to build it."""
        body = self.archive(slug, version, platform=platform)
        if body["_status"] == 200:
            return body
        return self.wait_job(body["job_url"], control=control, on_update=on_update)

    def file_url(self, slug: str, version: str, path: str, *, platform: str | None = None) -> str:
        if platform:
            return f"/dl/file/{quote(slug)}/{quote(platform)}/{quote(version)}/{quote(path)}"
        return f"/dl/file/{quote(slug)}/{quote(version)}/{quote(path)}"  # the server's default platform


def _platform_params(platform: str | None) -> dict[str, str] | None:
    """``?platform=`` when one is named; none for installs made before platforms (the server's default)."""
    return {"platform": platform} if platform else None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


def _rewinder(kwargs: dict[str, Any]) -> Callable[[], None]:
    """Seek uploaded files back to their start, so a request can be resent after a token refresh."""
    files = kwargs.get("files") or {}
    handles = [v[1] if isinstance(v, tuple) else v for v in files.values()]
    starts = [(h, h.tell()) for h in handles if hasattr(h, "seek") and hasattr(h, "tell")]

    def rewind() -> None:
        for handle, pos in starts:
            handle.seek(pos)

    return rewind
