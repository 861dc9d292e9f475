"""A real local HTTP server standing in for Steam's appdetails API and its image CDN.

Tests program what each app id answers (ok, 500 then ok, 404, success false, bad JSON, slow) and
which images the "CDN" serves; the catalog talks to it over loopback exactly as it talks to Steam.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0


@dataclass
class SeenRequest:
    path: str
    query: dict[str, list[str]]
    user_agent: str


@dataclass
class SteamFake:
    """Programmable appdetails + image server on 127.0.0.1 (start/stop, or use the `steam` fixture)."""

    apps: dict[int, list[Reply]] = field(default_factory=dict)
    images: dict[str, Reply] = field(default_factory=dict)
    seen: list[SeenRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- programming -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]

    @property
    def appdetails_url(self) -> str:
        return f"{self.base_url}/api/appdetails"

    def script(self, app_id: int, *replies: Reply) -> None:
        """Answer these replies in order to requests for `app_id`; the last one repeats."""
        with self._lock:
            self.apps[app_id] = list(replies)

    def app_ok(
        self, app_id: int, *, name: str, description: str = "", header: str = "", delay: float = 0.0
    ) -> None:
        self.script(app_id, self.ok_reply(app_id, name=name, description=description, header=header, delay=delay))

    def ok_reply(
        self, app_id: int, *, name: str, description: str = "", header: str = "", delay: float = 0.0
    ) -> Reply:
        payload = {
            str(app_id): {
                "success": True,
                "data": {
                    "type": "game",
                    "name": name,
                    "steam_appid": app_id,
                    "short_description": description,
                    "header_image": header,
                    "is_free": False,
                },
            }
        }
        return Reply(body=json.dumps(payload).encode(), delay=delay)

    @staticmethod
    def not_found_reply() -> Reply:
        return Reply(status=404, body=b"<html>Not Found</html>", content_type="text/html")

    @staticmethod
    def server_error_reply() -> Reply:
        return Reply(status=500, body=b"<html>Internal Server Error</html>", content_type="text/html")

    @staticmethod
    def failure_reply(app_id: int) -> Reply:
        return Reply(body=json.dumps({str(app_id): {"success": False}}).encode())

    @staticmethod
    def bad_json_reply() -> Reply:
        return Reply(body=b'{"10": {"success": true, "data": {"name": "Cut', content_type="application/json")

    def image(self, name: str, data: bytes, *, content_type: str = "image/png", delay: float = 0.0) -> str:
        """Serve `data` at /img/<name>; returns its URL."""
        with self._lock:
            self.images[name] = Reply(body=data, content_type=content_type, delay=delay)
        return f"{self.base_url}/img/{name}"

    def requests_for(self, app_id: int) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == "/api/appdetails" and r.query.get("appids") == [str(app_id)]]

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> SteamFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlparse(self.path)
                query = parse_qs(url.query)
                fake.seen.append(SeenRequest(url.path, query, self.headers.get("User-Agent", "")))
                reply = fake._reply_for(url.path, query)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is the point of a slow reply

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a sleeping "slow" handler must not hold up the test's teardown
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _reply_for(self, path: str, query: dict[str, list[str]]) -> Reply:
        with self._lock:
            if path == "/api/appdetails":
                try:
                    app_id = int(query.get("appids", [""])[0])
                except ValueError:
                    return Reply(status=400, body=b"bad appids", content_type="text/plain")
                replies = self.apps.get(app_id)
                if not replies:
                    return self.failure_reply(app_id)
                return replies.pop(0) if len(replies) > 1 else replies[0]
            if path.startswith("/img/") and path[5:] in self.images:
                return self.images[path[5:]]
        return self.not_found_reply()


def make_png(width: int = 460, height: int = 215, *, top: tuple[int, int, int] = (40, 70, 140),
             bottom: tuple[int, int, int] = (200, 60, 90)) -> bytes:
    """A real PNG (vertical gradient with a diagonal band), so browsers render something game-like."""
    rows = []
    for y in range(height):
        t = y / max(height - 1, 1)
        base = [round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)]
        row = bytearray([0])  # filter type 0 for each scanline
        for x in range(width):
            glow = 60 if abs((x - y * 2) % 160 - 80) < 14 else 0
            row += bytes(min(255, c + glow) for c in base)
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture
def steam(settings: Any) -> Iterator[SteamFake]:
    """The Steam fake, wired into settings with a short timeout so 'slow' tests take under a second."""
    fake = SteamFake().start()
    settings.STEAM_APPDETAILS_URL = fake.appdetails_url
    settings.MIST_STEAM_TIMEOUT = 0.5
    try:
        yield fake
    finally:
        fake.stop()
