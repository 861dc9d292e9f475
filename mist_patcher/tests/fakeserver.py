"""A small, real HTTP server speaking the patcher's half of docs/API.md, for core tests without Django.

It builds its artifacts with the same mistcore code the real server uses (manifests, archives,
direct deltas, indirect bundles), serves ``/dl/...`` with Range/If-Range/X-Mist-SHA256, and logs
every request so tests can check what crossed the wire. The real server is exercised by the
end-to-end tests (``test_e2e_live.py``); this one keeps the unit tests fast and Django-free.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mistcore.delta import build_direct_delta, bundle_delta
from mistcore.fsutil import sha256_file
from mistcore.indirect import build_indirect_bundle, read_signature_set
from mistcore.manifest import Manifest, diff_manifests, scan_directory
from mistcore.safetar import pack_tar_zst


@dataclass
class Artifact:
    path: Path
    size: int
    sha256: str


@dataclass
class FakeVersion:
    name: str
    tree: Path
    manifest: Manifest
    archive: Artifact


@dataclass
class RequestLog:
    method: str
    path: str
    status: int
    sent: int
    range: str | None = None


@dataclass
class FakeGame:
    slug: str
    title: str
    versions: list[FakeVersion] = field(default_factory=list)
    direct: dict[tuple[str, str], Artifact] = field(default_factory=dict)


class FakeMist:
    """The server's state plus a ThreadingHTTPServer on 127.0.0.1 (start()/stop())."""

    def __init__(self, root: Path, *, username: str = "friend", password: str = "friend-Passw0rd!") -> None:
        self.root = Path(root)
        self.users = {username: password}
        self.games: dict[str, FakeGame] = {}
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.revoked: set[str] = set()
        self.pairing_codes: dict[str, str] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.log: list[RequestLog] = []
        self.force_route: str | None = None
        self.chunk_delay = 0.0  # seconds slept per 64 KiB sent (slow downloads for cancel/kill tests)
        self.job_polls_before_done = 1
        self.disk_bytes_override: int | None = None
        self.header_images: dict[str, bytes] = {}  # slug -> PNG, served at /media/<slug>.png
        self._lock = threading.Lock()
        self._httpd: _QuietServer | None = None

    # --- content ------------------------------------------------------------------------------

    def add_version(self, slug: str, name: str, source: Path, *, title: str | None = None) -> FakeVersion:
        """Publish a version from a folder: manifest, archive, and the direct delta from the previous one."""
        game = self.games.setdefault(slug, FakeGame(slug=slug, title=title or slug.replace("-", " ").title()))
        tree = self.root / "trees" / slug / name
        shutil.copytree(source, tree)
        manifest = scan_directory(tree, version=name)
        archive_path = self.root / "archives" / slug / f"{name}.tar.zst"
        archive_path.parent.mkdir(parents=True, exist_ok=True)
        size, sha = pack_tar_zst(root=tree, paths=None, dst=archive_path, level=3)
        version = FakeVersion(name, tree, manifest, Artifact(archive_path, size, sha))
        if game.versions:
            prev = game.versions[-1]
            delta_dir = self.root / "deltas" / slug / f"{prev.name}__{name}"
            delta_dir.parent.mkdir(parents=True, exist_ok=True)
            build_direct_delta(old_root=prev.tree, old_manifest=prev.manifest, new_root=tree, new_manifest=manifest,
                               out_dir=delta_dir, workers=1, level=3)
            bundle = delta_dir.with_name(delta_dir.name + ".tar.zst")
            bsize, bsha = bundle_delta(delta_dir=delta_dir, dst=bundle)
            game.direct[(prev.name, name)] = Artifact(bundle, bsize, bsha)
        game.versions.append(version)
        return version

    def version(self, slug: str, name: str) -> FakeVersion:
        for v in self.games[slug].versions:
            if v.name == name:
                return v
        raise KeyError(name)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeMist:
        handler = type("Handler", (_Handler,), {"mist": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def bytes_sent(self, prefix: str = "/dl/") -> int:
        return sum(entry.sent for entry in self.log if entry.path.startswith(prefix))

    # --- API logic ----------------------------------------------------------------------------

    def issue_tokens(self) -> dict[str, str]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return {"access": access, "refresh": refresh, "scope": "user"}

    def plan(self, slug: str, from_version: str, to_version: str | None) -> dict[str, Any]:
        game = self.games[slug]
        names = [v.name for v in game.versions]
        to_version = to_version or names[-1]
        if to_version not in names or from_version not in names:
            raise KeyError(to_version if to_version not in names else from_version)
        old, new = self.version(slug, from_version), self.version(slug, to_version)
        diff = diff_manifests(old.manifest, new.manifest)
        paths = sorted(diff.added + diff.changed)
        i, j = names.index(from_version), names.index(to_version)
        steps: list[dict[str, Any]] = []
        if i < j:
            for a, b in zip(names[i:j], names[i + 1 : j + 1], strict=True):
                art = game.direct[(a, b)]
                steps.append({"kind": "direct", "from_version": a, "to_version": b,
                              "url": f"/dl/direct/{slug}/{a}__{b}", "size": art.size, "sha256": art.sha256})
        direct = sum(int(s["size"]) for s in steps) if steps else None
        full = new.archive.size
        indirect = sum(new.manifest.by_path()[p].size for p in paths) // 2
        if from_version == to_version:
            route = "none"
        elif self.force_route:
            route = self.force_route
        elif direct is not None and direct <= indirect:
            route = "direct"
        else:
            route = "indirect" if indirect < full else "full"
        download = {"direct": direct, "indirect": indirect, "full": full, "none": 0}[route] or 0
        return {
            "from_version": from_version, "to_version": to_version, "route": route,
            "reason": f"fake planner picked {route}", "download_bytes": download,
            "disk_bytes": (download + sum(new.manifest.by_path()[p].size for p in paths)
                           if self.disk_bytes_override is None else self.disk_bytes_override),
            "alternatives": {"direct": direct, "indirect": indirect, "full": full},
            "steps": steps if route == "direct" else [],
            "indirect": {"paths": paths, "request_url": f"/api/v1/games/{slug}/indirect"},
            "full": {"archive_url": f"/api/v1/games/{slug}/versions/{to_version}/archive", "size": full},
            "target_manifest_url": f"/api/v1/games/{slug}/versions/{to_version}/manifest",
        }

    def run_indirect(self, slug: str, to_version: str, sig_tar: Path, paths: list[str]) -> dict[str, Any]:
        version = self.version(slug, to_version)
        work = Path(tempfile.mkdtemp(dir=self.root, prefix="sigs-"))
        sigs = read_signature_set(src=sig_tar, dest_dir=work, allowed_paths=set(paths), max_bytes=64 << 20)
        job_id = str(uuid.uuid4())
        out = self.root / "indirect" / f"{job_id}.tar.zst"
        out.parent.mkdir(parents=True, exist_ok=True)
        build_indirect_bundle(signatures=dict(sigs), basis_info=sigs.basis_info, target_root=version.tree,
                              target_manifest=version.manifest, paths=paths, out=out, level=3)
        job = {"id": job_id, "kind": "indirect", "status": "queued", "progress": 0.0, "error": "", "result": {},
               "_polls": 0, "_artifact": Artifact(out, out.stat().st_size, sha256_file(out))}
        self.jobs[job_id] = job
        return job


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that cancels a download resets the connection; that is expected, not an error.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    mist: FakeMist
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # --- helpers ------------------------------------------------------------------------------

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._record(status, 0)

    def _record(self, status: int, sent: int) -> None:
        with self.mist._lock:
            self.mist.log.append(RequestLog(self.command, urlsplit(self.path).path, status, sent,
                                            self.headers.get("Range")))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.mist.access_tokens

    def _deny(self) -> None:
        self._send_json(401, {"detail": "Given token not valid for any token type"})

    # --- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        mist = self.mist
        body = self._body() if method == "POST" else b""
        if path == "/api/v1/auth/token" and method == "POST":
            data = json.loads(body or b"{}")
            if mist.users.get(data.get("username")) != data.get("password"):
                return self._send_json(401, {"detail": "Wrong username or password."})
            return self._send_json(200, mist.issue_tokens())
        if path == "/api/v1/auth/token/refresh" and method == "POST":
            refresh = json.loads(body or b"{}").get("refresh")
            if refresh not in mist.refresh_tokens or refresh in mist.revoked:
                return self._send_json(401, {"detail": "Token is invalid or expired"})
            # Like the real server (ROTATE_REFRESH_TOKENS + BLACKLIST_AFTER_ROTATION).
            mist.revoked.add(refresh)
            tokens = mist.issue_tokens()
            return self._send_json(200, {"access": tokens["access"], "refresh": tokens["refresh"]})
        if path == "/api/v1/auth/devices/redeem" and method == "POST":
            data = json.loads(body or b"{}")
            if data.get("code") not in mist.pairing_codes:
                return self._send_json(400, {"detail": "Unknown or expired pairing code."})
            mist.pairing_codes.pop(data["code"])
            return self._send_json(200, {**mist.issue_tokens(), "device_id": 7})
        m = re.fullmatch(r"/media/([^/]+)\.png", path)
        if m and m.group(1) in mist.header_images:
            data = mist.header_images[m.group(1)]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return self._record(200, 0)
        if not self._authorized():
            return self._deny()
        if path == "/api/v1/auth/logout" and method == "POST":
            mist.revoked.add(json.loads(body or b"{}").get("refresh"))
            return self._send_json(204, {})
        if path == "/api/v1/games":
            return self._send_json(200, {"games": [
                {"slug": g.slug, "title": g.title, "description": f"{g.title} description",
                 "header_image_url": f"/media/{g.slug}.png" if g.slug in mist.header_images else "",
                 "is_private": False, "latest_version": g.versions[-1].name,
                 "latest_size": g.versions[-1].manifest.total_size, "updated_at": "2025-01-01T00:00:00Z"}
                for g in mist.games.values()
            ]})
        m = re.fullmatch(r"/api/v1/games/([^/]+)", path)
        if m:
            game = mist.games.get(m.group(1))
            if game is None:
                return self._send_json(404, {"detail": "Not found."})
            return self._send_json(200, {
                "slug": game.slug, "title": game.title, "description": "", "header_image_url": "",
                "latest_version": game.versions[-1].name,
                "versions": [{"name": v.name, "seq": i + 1, "total_size": v.manifest.total_size,
                              "file_count": len(v.manifest.files)} for i, v in enumerate(game.versions)],
            })
        m = re.fullmatch(r"/api/v1/games/([^/]+)/versions/([^/]+)/(manifest|archive)", path)
        if m:
            try:
                version = mist.version(m.group(1), m.group(2))
            except KeyError:
                return self._send_json(404, {"detail": "Not found."})
            if m.group(3) == "manifest":
                data = version.manifest.to_json()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return self._record(200, 0)
            art = version.archive
            return self._send_json(200, {"url": f"/dl/archive/{m.group(1)}/{m.group(2)}", "size": art.size,
                                         "sha256": art.sha256})
        m = re.fullmatch(r"/api/v1/games/([^/]+)/updates", path)
        if m and method == "POST":
            data = json.loads(body or b"{}")
            try:
                return self._send_json(200, mist.plan(m.group(1), data.get("from_version"), data.get("to_version")))
            except KeyError as exc:
                return self._send_json(400, {"detail": f"unknown version {exc}"})
        m = re.fullmatch(r"/api/v1/games/([^/]+)/indirect", path)
        if m and method == "POST":
            fields = _parse_multipart(self.headers.get("Content-Type", ""), body)
            sig_tar = Path(tempfile.mkstemp(dir=mist.root, suffix=".tar")[1])
            sig_tar.write_bytes(fields["signatures"])
            job = mist.run_indirect(m.group(1), fields["to_version"].decode(), sig_tar,
                                    json.loads(fields["paths"]))
            return self._send_json(202, {"job": _public(job), "job_url": f"/api/v1/jobs/{job['id']}"})
        m = re.fullmatch(r"/api/v1/jobs/([^/]+)", path)
        if m:
            job = mist.jobs.get(m.group(1))  # type: ignore[assignment]
            if job is None:
                return self._send_json(404, {"detail": "Not found."})
            job["_polls"] += 1
            if job["_polls"] >= mist.job_polls_before_done:
                art = job["_artifact"]
                job.update(status="done", progress=1.0,
                           result={"url": f"/dl/indirect/{job['id']}", "size": art.size, "sha256": art.sha256})
            else:
                job.update(status="running", progress=0.5)
            return self._send_json(200, _public(job))
        art = self._artifact(path)  # type: ignore[assignment]
        if art is not None:
            return self._serve_file(art)
        return self._send_json(404, {"detail": "Not found."})

    def _artifact(self, path: str) -> Artifact | None:
        mist = self.mist
        try:
            m = re.fullmatch(r"/dl/archive/([^/]+)/([^/]+)", path)
            if m:
                return mist.version(m.group(1), m.group(2)).archive
            m = re.fullmatch(r"/dl/direct/([^/]+)/(.+)__(.+)", path)
            if m:
                return mist.games[m.group(1)].direct[(m.group(2), m.group(3))]
            m = re.fullmatch(r"/dl/indirect/([^/]+)", path)
            if m:
                return mist.jobs[m.group(1)]["_artifact"]
            m = re.fullmatch(r"/dl/file/([^/]+)/(?:(?:windows|linux|macos)/)?([^/]+)/(.+)", path)  # one platform
            if m:
                version = mist.version(m.group(1), m.group(2))
                rec = version.manifest.by_path()[m.group(3)]
                return Artifact(version.tree.joinpath(*rec.path.split("/")), rec.size, rec.sha256)
        except KeyError:
            return None
        return None

    def _serve_file(self, art: Artifact) -> None:
        start, end, status = 0, art.size - 1, 200
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if header and (if_range is None or if_range.strip('"') == art.sha256):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)), art.size - 1) if m.group(2) else art.size - 1
                if start >= art.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{art.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return self._record(416, 0)
                status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{art.sha256}"')
        self.send_header("X-Mist-SHA256", art.sha256)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{art.size}")
        self.end_headers()
        sent = 0
        if self.command != "HEAD":
            try:
                with open(art.path, "rb") as f:
                    f.seek(start)
                    while sent < length:
                        chunk = f.read(min(64 * 1024, length - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if self.mist.chunk_delay:
                            time.sleep(self.mist.chunk_delay)
            except (BrokenPipeError, ConnectionResetError):
                pass
        self._record(status, sent)


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if not k.startswith("_")}


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = part.get_payload(decode=True) or b""  # type: ignore[assignment]
    return fields

