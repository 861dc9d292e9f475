"""The downloads panel: one row per running or finished operation, with pause, resume and cancel."""

from __future__ import annotations

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from mist_patcher.core.progress import PHASE_LABELS, ProgressEvent
from mist_patcher.core.units import format_bytes, format_duration, format_rate
from mist_patcher.jobs.worker import CoreJob

KIND_LABELS = {
    "install": "Installing",
    "update": "Updating",
    "verify": "Verifying",
    "repair": "Repairing",
    "rollback": "Rolling back",
    "uninstall": "Uninstalling",
    "play": "Playing",
}


class DownloadRow(QFrame):
    """Progress of one job: title, phase, bar, bytes, speed, ETA, and its controls."""

    def __init__(self, job: CoreJob, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DownloadRow")
        self.job = job
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        layout.setSpacing(12)

        text = QVBoxLayout()
        text.setSpacing(2)
        self.title = QLabel(f"<b>{job.title}</b>")
        text.addWidget(self.title)
        self.phase = QLabel(KIND_LABELS.get(job.kind, job.kind.title()))
        self.phase.setObjectName("Subtle")
        text.addWidget(self.phase)
        holder = QWidget()
        holder.setObjectName("Transparent")
        holder.setLayout(text)
        holder.setFixedWidth(230)
        layout.addWidget(holder)

        middle = QVBoxLayout()
        middle.setSpacing(4)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setFixedHeight(10)
        middle.addWidget(self.bar)
        self.detail = QLabel("Starting…")
        self.detail.setObjectName("Subtle")
        middle.addWidget(self.detail)
        layout.addLayout(middle, 1)

        self.pause_button = QPushButton("Pause")
        self.pause_button.setFixedWidth(80)
        self.pause_button.clicked.connect(self.toggle_pause)
        layout.addWidget(self.pause_button)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("Danger")
        self.cancel_button.setFixedWidth(80)
        self.cancel_button.clicked.connect(self.cancel)
        layout.addWidget(self.cancel_button)

        job.progress.connect(self.on_progress)
        job.note.connect(lambda message: self.detail.setText(message))
        job.succeeded.connect(lambda result: self.on_end("Done", 1000))
        job.failed.connect(lambda message: self.on_end(f"Failed: {message}", None))
        job.cancelled.connect(lambda: self.on_end("Cancelled — partial downloads are kept", None))

    def on_progress(self, event: ProgressEvent) -> None:
        if self.job.state == "paused":
            return
        label = PHASE_LABELS.get(event.phase, event.phase.title())
        self.phase.setText(f"{KIND_LABELS.get(self.job.kind, self.job.kind)} · {label}")
        self.bar.setValue(int(event.fraction * 1000))
        if event.phase in ("server", "restore"):
            self.detail.setText(event.message or label)
        else:
            self.detail.setText(
                f"{format_bytes(event.done)} of {format_bytes(event.total)} · {format_rate(event.speed)}"
                f" · ETA {format_duration(event.eta)}"
            )

    def toggle_pause(self) -> None:
        if self.job.state == "paused":
            self.job.resume()
            self.pause_button.setText("Pause")
            self.detail.setText("Resuming…")
        elif self.job.state == "running":
            self.job.pause()
            self.pause_button.setText("Resume")
            self.detail.setText("Paused")

    def cancel(self) -> None:
        self.job.cancel()
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.detail.setText("Cancelling…")

    def on_end(self, message: str, value: int | None) -> None:
        if value is not None:
            self.bar.setValue(value)
        self.detail.setText(message)
        self.phase.setText(f"{KIND_LABELS.get(self.job.kind, self.job.kind)} · {self.job.state}")
        self.pause_button.setVisible(False)
        self.cancel_button.setText("Clear")
        self.cancel_button.setObjectName("")
        self.cancel_button.setEnabled(True)
        self.cancel_button.clicked.disconnect()
        self.cancel_button.clicked.connect(self.deleteLater)


class DownloadsPanel(QFrame):
    """All rows, newest first; hidden behind a header line when empty."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DownloadsPanel")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 10, 24, 12)
        outer.setSpacing(8)
        header = QHBoxLayout()
        title = QLabel("DOWNLOADS")
        title.setObjectName("NavLabelActive")
        header.addWidget(title)
        self.summary = QLabel("Nothing in progress")
        self.summary.setObjectName("Subtle")
        header.addWidget(self.summary, 1)
        outer.addLayout(header)
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(6)
        self.placeholder = QLabel("Installs, updates, verifications and repairs show up here.")
        self.placeholder.setObjectName("Subtle")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.rows_box.addWidget(self.placeholder)
        self.rows_box.addStretch(1)
        container = QWidget()
        container.setLayout(self.rows_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(container)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        self.rows: list[DownloadRow] = []

    def add_job(self, job: CoreJob) -> DownloadRow:
        row = DownloadRow(job)
        self.rows_box.insertWidget(0, row)
        self.rows.append(row)
        row.destroyed.connect(lambda _=None, r=row: self._forget(r))
        job.finished.connect(self._update_summary)
        self._update_summary()
        return row

    def _forget(self, row: DownloadRow) -> None:
        if row in self.rows:
            self.rows.remove(row)
        if shiboken6.isValid(self.placeholder):  # not while the whole panel is being torn down
            self._update_summary()

    def row_for(self, job: CoreJob) -> DownloadRow | None:
        return next((r for r in self.rows if r.job is job), None)

    def _update_summary(self) -> None:
        self.placeholder.setVisible(not self.rows)
        running = sum(1 for r in self.rows if r.job.state in ("running", "paused", "queued"))
        self.summary.setText(f"{running} in progress" if running else "Nothing in progress")
