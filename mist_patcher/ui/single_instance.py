"""One desktop app per user and patcher home.

The store's ``mist://install/<slug>`` links start ``mist-patcher gui <url>`` on every click. The
first launch listens on a ``QLocalServer``; a later launch connects with a ``QLocalSocket``, sends
its link (or ``raise`` when it has none) and exits 0, and the first launch handles the link as a
fresh launch would and comes to the front. So only one process ever runs downloads into (and crash
recovery on) a patcher home.

The address is derived from the user and the patcher home (``MIST_PATCHER_HOME``), so two users or
two homes never share it. On Unix it is a socket file in ``$XDG_RUNTIME_DIR`` (else in a private
``<tmp>/mist-patcher-<uid>`` folder); both must belong to the user and be closed to others, else
the app runs without single-instance rather than talk to someone else's socket. On Windows it is a
named pipe. The server accepts only the current user (``UserAccessOption``).

Wire format: one UTF-8 line of at most ``MAX_MESSAGE`` bytes ending in ``\\n``, either ``raise``
or a ``mist://`` link; the answer is ``ok\\n`` or ``ignored\\n``. Anything else is logged and
dropped, never acted on.

A ``QLockFile`` next to the socket serialises "connect, else remove the stale socket and listen",
so two launches at the same moment cannot both become the first, and a socket file left by a
killed app (connect refused) is removed with ``QLocalServer.removeServer`` before listening.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, QTimer, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

MAX_MESSAGE = 2048  # bytes of one message, without its newline
RAISE = "raise"
CONNECT_TIMEOUT_MS = 1000
ANSWER_TIMEOUT_MS = 10_000  # the first app answers once its event loop runs (it may still be starting)
READ_TIMEOUT_MS = 3000  # a connection that sends no complete line in this time is dropped
LOCK_TIMEOUT_MS = 10_000
MAX_CONNECTIONS = 16
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class InvalidMessage(ValueError):
    """What arrived over the socket is not a message of ours."""


@dataclass(frozen=True)
class Message:
    """``raise`` (url is None) or a ``mist://`` link to handle."""

    url: str | None = None

    @property
    def kind(self) -> str:
        return "url" if self.url else RAISE


def encode_message(url: str | None) -> bytes:
    """The bytes a later launch sends: its link, or ``raise``. InvalidMessage for anything else."""
    text = RAISE if url is None else url.strip()
    data = text.encode("utf-8") + b"\n"
    parse_message(data)  # the sender checks what the receiver will check
    return data


def parse_message(data: bytes) -> Message:
    """One received line (with or without its newline) -> Message; InvalidMessage says why not."""
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    if len(data) > MAX_MESSAGE:
        raise InvalidMessage(f"longer than {MAX_MESSAGE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("not UTF-8") from None
    if not text:
        raise InvalidMessage("empty")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidMessage("contains whitespace or control characters")
    if text == RAISE:
        return Message()
    if not text.lower().startswith("mist://"):
        raise InvalidMessage("neither 'raise' nor a mist:// link")
    # The link itself is checked by the window (parse_mist_url), exactly as for a fresh launch.
    return Message(url=text)


def _describe(data: bytes) -> str:
    """A short, printable excerpt of rejected bytes for the log."""
    excerpt = repr(data[:60])
    return excerpt + ("..." if len(data) > 60 else "")


# --- address ---------------------------------------------------------------------------------

def _user_id() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is no reason to fail
        return os.environ.get("USERNAME", "")


def server_name(home: Path, user: str | None = None) -> str:
    """``mist-patcher-<hash of user and home>``: distinct per user and per patcher home."""
    user = _user_id() if user is None else user
    where = os.path.normcase(os.path.realpath(home))
    digest = hashlib.sha256(f"{user}\0{where}".encode()).hexdigest()[:20]
    return f"mist-patcher-{digest}"


def _private_dir(path: Path, *, create: bool) -> bool:
    """True when path is a real folder of ours that nobody else can enter."""
    try:
        if create:
            path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def socket_address(home: Path) -> str | None:
    """The QLocalServer address for this user and home, or None when no safe place exists."""
    name = server_name(home)
    if sys.platform.startswith("win"):
        return name  # a named pipe; the server restricts it to the user
    candidates: list[tuple[Path, bool]] = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        candidates.append((Path(runtime), False))
    candidates.append((Path(tempfile.gettempdir()) / f"mist-patcher-{os.getuid()}", True))
    for folder, create in candidates:
        path = str(folder / f"{name}.sock")
        if len(os.fsencode(path)) <= MAX_UNIX_PATH and _private_dir(folder, create=create):
            return path
    return None


def _lock_path(address: str) -> str:
    if sys.platform.startswith("win"):
        return str(Path(tempfile.gettempdir()) / f"{address}.lock")
    return address[: -len(".sock")] + ".lock" if address.endswith(".sock") else address + ".lock"


# --- client ----------------------------------------------------------------------------------

def send_message(address: str, data: bytes, *, connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
                 answer_timeout_ms: int = ANSWER_TIMEOUT_MS) -> bool:
    """Deliver data to the app listening at address; False when none listens (nothing sent).

    Blocking; works before any QApplication exists, so a later launch exits without opening one.
    """
    sock = QLocalSocket()
    sock.connectToServer(address)
    if not sock.waitForConnected(connect_timeout_ms):
        return False
    sock.write(data)
    sock.waitForBytesWritten(connect_timeout_ms)
    answer = b""
    while b"\n" not in answer and sock.waitForReadyRead(answer_timeout_ms):
        answer += bytes(sock.readAll().data())
    if not answer:
        # Connected and written: an app owns the address even if it answered slowly, so starting a
        # second one would be the very thing to avoid.
        log.warning("the running Mist did not answer in %.0f s; it will handle the request when it can",
                    answer_timeout_ms / 1000)
    elif answer.strip() != b"ok":
        log.warning("the running Mist did not accept the request (%s)", answer.strip().decode("ascii", "replace"))
    sock.disconnectFromServer()
    return True


# --- server ----------------------------------------------------------------------------------

class InstanceServer(QObject):
    """Accepts messages from later launches; emits ``message_received(Message)`` for valid ones."""

    message_received = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self.server.setMaxPendingConnections(MAX_CONNECTIONS)
        self.server.newConnection.connect(self._accept)
        self._buffers: dict[QLocalSocket, bytes] = {}

    def listen(self, address: str) -> bool:
        if not self.server.listen(address):
            log.warning("single instance: cannot listen on %s: %s", address, self.server.errorString())
            return False
        log.info("single instance: listening on %s", self.server.fullServerName())
        return True

    def close(self) -> None:
        for sock in list(self._buffers):
            sock.abort()
        self._buffers.clear()
        self.server.close()

    def _accept(self) -> None:
        while self.server.hasPendingConnections():
            sock = self.server.nextPendingConnection()
            if sock is None:
                break
            if len(self._buffers) >= MAX_CONNECTIONS:
                log.warning("single instance: too many connections; dropped one")
                sock.abort()
                sock.deleteLater()
                continue
            sock.setReadBufferSize(MAX_MESSAGE + 2)
            self._buffers[sock] = b""
            sock.readyRead.connect(lambda s=sock: self._read(s))
            sock.disconnected.connect(lambda s=sock: self._forget(s))
            QTimer.singleShot(READ_TIMEOUT_MS, sock, lambda s=sock: self._timed_out(s))
            if sock.bytesAvailable():
                self._read(sock)

    def _read(self, sock: QLocalSocket) -> None:
        if sock not in self._buffers:
            return
        room = MAX_MESSAGE + 2 - len(self._buffers[sock])
        buffer = self._buffers[sock] + bytes(sock.read(room).data())
        self._buffers[sock] = buffer
        line, newline, _ = buffer.partition(b"\n")
        if not newline:
            if len(buffer) > MAX_MESSAGE + 1:
                log.warning("single instance: ignored a message longer than %d bytes", MAX_MESSAGE)
                self._finish(sock, b"ignored\n")
            return
        try:
            message = parse_message(line)
        except InvalidMessage as exc:
            log.warning("single instance: ignored a message (%s): %s", exc, _describe(line))
            self._finish(sock, b"ignored\n")
            return
        log.info("single instance: received %s", message.url or RAISE)
        self._finish(sock, b"ok\n")
        try:
            self.message_received.emit(message)
        except Exception:  # noqa: BLE001 - a bad request must never take the app down
            log.exception("single instance: handling %s failed", message.url or RAISE)

    def _timed_out(self, sock: QLocalSocket) -> None:
        if sock in self._buffers:
            log.warning("single instance: ignored a connection that sent no complete message")
            self._finish(sock, b"ignored\n")

    def _finish(self, sock: QLocalSocket, answer: bytes) -> None:
        self._buffers.pop(sock, None)
        if sock.state() == QLocalSocket.LocalSocketState.ConnectedState:
            sock.write(answer)
            sock.flush()
            sock.disconnectFromServer()  # then disconnected -> _forget -> deleteLater
        else:
            sock.deleteLater()

    def _forget(self, sock: QLocalSocket) -> None:
        self._buffers.pop(sock, None)
        sock.deleteLater()


# --- the whole dance -------------------------------------------------------------------------

class SingleInstance:
    """``forward()`` before the QApplication exists; ``listen()`` once it does (when forward said no).

    ``address`` None (no safe folder for the socket) disables the mechanism: every launch opens
    a window, as before.
    """

    def __init__(self, home: Path, *, address: str | None = None) -> None:
        self.address = address if address is not None else socket_address(home)
        if self.address is None:
            log.warning("single instance: no private folder for the socket; several windows may open")
        self._lock = QLockFile(_lock_path(self.address)) if self.address else None
        self._locked = False
        self.server: InstanceServer | None = None

    def forward(self, url: str | None) -> bool:
        """True when another app of this user and home runs and got the request: exit now.

        False: this launch is the first; the startup lock stays held until ``listen()``.
        """
        if self.address is None or self._lock is None:
            return False
        try:
            data = encode_message(url)
        except InvalidMessage as exc:
            log.warning("single instance: %r is not a mist:// link (%s); only raising the app", url, exc)
            data = encode_message(None)
        self._locked = self._lock.tryLock(LOCK_TIMEOUT_MS)
        if not self._locked:
            log.warning("single instance: %s stays locked; going on without it", self._lock.fileName())
        if send_message(self.address, data):
            self.release()
            return True
        return False

    def listen(self, parent: QObject | None = None) -> InstanceServer | None:
        """Become the app others forward to (needs the QApplication); releases the startup lock."""
        try:
            if self.address is None:
                return None
            # Nobody answered under the lock: whatever is at the address is left by a killed app.
            if os.path.exists(self.address) and QLocalServer.removeServer(self.address):
                log.info("single instance: removed the stale socket %s", self.address)
            server = InstanceServer(parent)
            if not server.listen(self.address):
                server.deleteLater()
                return None
            self.server = server
            return server
        finally:
            self.release()

    def release(self) -> None:
        if self._locked and self._lock is not None:
            self._lock.unlock()
            self._locked = False
