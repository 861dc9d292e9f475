"""Settings: server URL, install folder, bandwidth limit."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mist_patcher.core.config import Settings, normalize_server_url
from mist_patcher.core.errors import ConfigError
from mist_patcher.core.units import format_rate, parse_rate


class SettingsDialog(QDialog):
    """Edits a copy of the settings; ``values()`` returns them once accepted."""

    def __init__(self, settings: Settings, *, server: str, install_root: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Mist settings")
        self.setMinimumWidth(520)
        self._settings = settings
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.server = QLineEdit(server)
        form.addRow("Server URL", self.server)
        folder_row = QHBoxLayout()
        self.install_root = QLineEdit(install_root)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row.addWidget(self.install_root, 1)
        folder_row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(folder_row)
        form.addRow("Install folder", holder)
        self.limit = QLineEdit(format_rate(settings.limit_rate).replace(" ", "").replace("/s", "")
                               if settings.limit_rate else "")
        self.limit.setPlaceholderText("no limit (e.g. 5M for 5 MB/s)")
        form.addRow("Bandwidth limit", self.limit)
        layout.addLayout(form)
        self.error = QLabel()
        self.error.setObjectName("Error")
        self.error.hide()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._values: tuple[str, str, int] | None = None

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Install games into", self.install_root.text())
        if folder:
            self.install_root.setText(folder)

    def _accept(self) -> None:
        try:
            server = normalize_server_url(self.server.text())
            rate = parse_rate(self.limit.text().replace("B", "").replace(" ", ""))
        except (ConfigError, ValueError) as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self._values = (server, self.install_root.text().strip(), rate)
        self.accept()

    def values(self) -> tuple[str, str, int] | None:
        """(server URL, install folder, limit in bytes/s) after Save, else None."""
        return self._values
