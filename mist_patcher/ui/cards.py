"""A game in the library: header image, title, install state, badge and action buttons."""

from __future__ import annotations

import hashlib

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QLinearGradient, QPainter, QPainterPath, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from mist_patcher.core.library import LibraryEntry
from mist_patcher.core.units import format_bytes
from mistcore.platforms import LABELS

CARD_WIDTH = 320
IMAGE_HEIGHT = 150  # Steam header images are 460x215; this keeps their ratio


def placeholder_header(title: str, width: int = CARD_WIDTH, height: int = IMAGE_HEIGHT) -> QPixmap:
    """A generated header for games without an image: a gradient picked from the title, and the title."""
    digest = hashlib.sha256(title.encode()).digest()
    hue = digest[0] / 255 * 360
    pixmap = QPixmap(width, height)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    gradient = QLinearGradient(0, 0, width, height)
    gradient.setColorAt(0, QColor.fromHsvF(hue / 360, 0.65, 0.55))
    gradient.setColorAt(1, QColor.fromHsvF(((hue + 50) % 360) / 360, 0.8, 0.22))
    painter.fillRect(0, 0, width, height, gradient)
    painter.setPen(QColor(255, 255, 255, 40))
    for i in range(6):
        painter.drawEllipse(int(width * (0.55 + 0.07 * i)), int(-height * 0.3 + 12 * i), 160, 160)
    painter.setPen(QColor("white"))
    font = QFont()
    font.setPointSize(17)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(QRectF(16, 0, width - 32, height - 14), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom |
                     Qt.TextFlag.TextWordWrap, title.upper())
    painter.end()
    return pixmap


def rounded_top(pixmap: QPixmap, radius: int = 8) -> QPixmap:
    """Crop a header image to the card's width and round its top corners."""
    scaled = pixmap.scaled(CARD_WIDTH, IMAGE_HEIGHT, Qt.AspectRatioMode.KeepAspectRatioByExpanding,
                           Qt.TransformationMode.SmoothTransformation)
    out = QPixmap(CARD_WIDTH, IMAGE_HEIGHT)
    out.fill(Qt.GlobalColor.transparent)
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    path = QPainterPath()
    path.addRoundedRect(QRectF(0, 0, CARD_WIDTH, IMAGE_HEIGHT + radius), radius, radius)
    painter.setClipPath(path)
    x = (scaled.width() - CARD_WIDTH) // 2
    y = (scaled.height() - IMAGE_HEIGHT) // 2
    painter.drawPixmap(0, 0, scaled, x, y, CARD_WIDTH, IMAGE_HEIGHT)
    painter.end()
    return out


class GameCard(QFrame):
    """One library entry; emits ``action(kind, slug)`` for install/update/verify/repair/rollback/uninstall."""

    action = Signal(str, str)

    def __init__(self, entry: LibraryEntry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self.setFixedWidth(CARD_WIDTH + 2)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.entry = entry
        self.busy = False
        self.has_header_image = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 12)
        layout.setSpacing(8)

        self.image = QLabel()
        self.image.setFixedSize(CARD_WIDTH, IMAGE_HEIGHT)
        self.image.setPixmap(rounded_top(placeholder_header(entry.title)))
        layout.addWidget(self.image)

        self.badge = QLabel("UPDATE AVAILABLE", self.image)
        self.badge.setObjectName("Badge")
        self.badge.adjustSize()
        self.badge.move(CARD_WIDTH - self.badge.width() - 10, 10)

        self.installed_badge = QLabel("INSTALLED", self.image)
        self.installed_badge.setObjectName("InstalledBadge")
        self.installed_badge.adjustSize()
        self.installed_badge.move(CARD_WIDTH - self.installed_badge.width() - 10, 10)

        body = QVBoxLayout()
        body.setContentsMargins(14, 0, 14, 0)
        body.setSpacing(3)
        self.title = QLabel(entry.title)
        self.title.setObjectName("CardTitle")
        body.addWidget(self.title)
        self.status = QLabel()
        self.status.setObjectName("CardStatus")
        body.addWidget(self.status)
        layout.addLayout(body)

        buttons = QHBoxLayout()
        buttons.setContentsMargins(14, 4, 14, 0)
        buttons.setSpacing(6)
        self.primary = QPushButton()
        self.primary.setObjectName("Primary")
        self.primary.setMinimumWidth(88)
        self.primary.clicked.connect(self._primary_clicked)
        buttons.addWidget(self.primary)
        self.play_button = QPushButton("Play")
        self.play_button.setObjectName("PlayButton")
        self.play_button.setToolTip("Start the game (its playtime is recorded)")
        self.play_button.clicked.connect(lambda: self.action.emit("play", self.entry.slug))
        buttons.addWidget(self.play_button)
        self.verify_button = QPushButton("Verify")
        self.verify_button.setObjectName("Compact")
        self.verify_button.clicked.connect(lambda: self.action.emit("verify", self.entry.slug))
        buttons.addWidget(self.verify_button)
        self.repair_button = QPushButton("Repair")
        self.repair_button.setObjectName("Compact")
        self.repair_button.clicked.connect(lambda: self.action.emit("repair", self.entry.slug))
        buttons.addWidget(self.repair_button)
        buttons.addStretch(1)
        self.more = QToolButton()
        self.more.setText("•••")
        self.more.setToolTip("More: verify, repair, roll back, uninstall")
        self.more.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.more)
        self.menu_actions = {
            "verify": menu.addAction("Verify files"),
            "repair": menu.addAction("Repair"),
            "rollback": menu.addAction("Roll back last update"),
            "uninstall": menu.addAction("Uninstall"),
        }
        for kind, act in self.menu_actions.items():
            act.triggered.connect(lambda checked=False, k=kind: self.action.emit(k, self.entry.slug))
        self.more.setMenu(menu)
        buttons.addWidget(self.more)
        layout.addLayout(buttons)
        self.set_entry(entry)

    def _primary_clicked(self) -> None:
        state = self.entry.state
        if state in ("not_installed", "incomplete"):
            self.action.emit("install", self.entry.slug)
        elif state == "update_available":
            self.action.emit("update", self.entry.slug)
        else:
            self.action.emit("verify", self.entry.slug)

    def set_header(self, pixmap: QPixmap) -> None:
        if not pixmap.isNull():
            self.image.setPixmap(rounded_top(pixmap))
            self.has_header_image = True

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.set_entry(self.entry)

    def set_entry(self, entry: LibraryEntry) -> None:
        self.entry = entry
        state = entry.state
        installed = entry.installed_version is not None and state != "incomplete"
        self.badge.setVisible(state == "update_available")
        self.installed_badge.setVisible(state == "installed")
        size = f" · {format_bytes(entry.latest_size)}" if entry.latest_size else ""
        text = {
            "not_installed": f"Not installed · {entry.latest_version or 'no version yet'}{size}",
            "incomplete": f"Install not finished · {entry.installed_version}",
            "update_available": f"Installed {entry.installed_version}  →  {entry.latest_version} available",
            "installed": f"Installed · version {entry.installed_version}",
            "removed_from_server": f"Installed {entry.installed_version} · no longer on the server",
        }[state]
        if entry.platforms:  # which builds the server has, e.g. "Windows, Linux"
            text += " · " + ", ".join(LABELS.get(p, p) for p in entry.platforms)
        self.status.setText(text)
        self.status.setToolTip(
            f"Installed build: {LABELS.get(entry.installed_platform, entry.installed_platform)}"
            if entry.installed_platform else ""
        )
        self.primary.setText({"not_installed": "Install", "incomplete": "Resume install",
                              "update_available": "Update"}.get(state, "Verify"))
        self.primary.setObjectName("UpdateButton" if state == "update_available" else "Primary")
        self.primary.style().unpolish(self.primary)
        self.primary.style().polish(self.primary)
        self.primary.setEnabled(not self.busy and (installed or bool(entry.latest_version)))
        self.play_button.setVisible(installed)
        self.play_button.setEnabled(not self.busy)
        # Installed and current: Play is the main action. With an update waiting: Update and Play side by
        # side, Verify and Repair move into the ••• menu (the card is narrow).
        self.primary.setVisible(state != "installed")
        self.verify_button.setVisible(state == "installed")
        self.repair_button.setVisible(state == "installed")
        for kind in ("verify", "repair"):
            self.menu_actions[kind].setVisible(installed and state != "installed")
        self.more.setVisible(installed)
        for button in (self.verify_button, self.repair_button, self.more):
            button.setEnabled(not self.busy)
