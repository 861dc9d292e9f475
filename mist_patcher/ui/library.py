"""The library page: a grid of game cards that re-flows with the window width."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from mist_patcher.core.library import LibraryEntry
from mist_patcher.ui.cards import CARD_WIDTH, GameCard

SPACING = 18


class LibraryPage(QWidget):
    """Cards by slug; ``action(kind, slug)`` is re-emitted from every card."""

    action = Signal(str, str)
    refresh_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 18, 24, 8)
        outer.setSpacing(12)
        header = QHBoxLayout()
        title = QLabel("Library")
        title.setObjectName("SectionTitle")
        header.addWidget(title)
        self.counts = QLabel()
        self.counts.setObjectName("Subtle")
        header.addWidget(self.counts)
        header.addStretch(1)
        self.message = QLabel()
        self.message.setObjectName("Subtle")
        header.addWidget(self.message)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_requested.emit)
        header.addWidget(refresh)
        outer.addLayout(header)

        self.grid = QGridLayout()
        self.grid.setSpacing(SPACING)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        container = QWidget()
        container.setLayout(self.grid)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(container)
        outer.addWidget(self.scroll_area, 1)
        self.empty = QLabel("No games yet. Your admin pushes them to the server.")
        self.empty.setObjectName("Subtle")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.hide()
        outer.addWidget(self.empty)
        self.cards: dict[str, GameCard] = {}
        self._order: list[GameCard] = []
        self._columns = 0

    def set_entries(self, entries: list[LibraryEntry]) -> None:
        """Add, update and remove cards to match ``entries`` (keeps cards, images and busy flags)."""
        wanted = {e.slug for e in entries}
        for slug in list(self.cards):
            if slug not in wanted:
                card = self.cards.pop(slug)
                self.grid.removeWidget(card)
                card.deleteLater()
        order = []
        for entry in entries:
            existing = self.cards.get(entry.slug)
            if existing is None:
                card = GameCard(entry)
                card.action.connect(self.action.emit)
                self.cards[entry.slug] = card
            else:
                card = existing
                card.set_entry(entry)
            order.append(card)
        self._order = order
        installed = sum(1 for e in entries if e.installed_version and e.complete)
        updates = sum(1 for e in entries if e.update_available)
        text = f"{len(entries)} games · {installed} installed"
        if updates:
            text += f" · {updates} update{'s' if updates > 1 else ''} available"
        self.counts.setText(text)
        self.empty.setVisible(not entries)
        self._columns = 0
        self._reflow()

    def _reflow(self) -> None:
        width = self.scroll_area.viewport().width()
        columns = max(1, (width + SPACING) // (CARD_WIDTH + 2 + SPACING))
        if columns == self._columns:
            return
        self._columns = columns
        for card in self._order:
            self.grid.removeWidget(card)
        for i, card in enumerate(self._order):
            self.grid.addWidget(card, i // columns, i % columns)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._reflow()
