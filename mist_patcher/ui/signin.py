"""The sign-in page: server URL, then a password or a pairing code from the store's account page."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QLabel,
    QLineEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)


class SignInPage(QWidget):
    """Emits ``password_submitted(server, username, password)`` or ``code_submitted(server, code)``."""

    password_submitted = Signal(str, str, str)
    code_submitted = Signal(str, str)

    def __init__(self, server: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        card = QFrame()
        card.setObjectName("SignInCard")
        card.setFixedWidth(420)
        layout = QVBoxLayout(card)
        layout.setContentsMargins(32, 28, 32, 28)
        layout.setSpacing(12)
        logo = QLabel("MIST")
        logo.setObjectName("Logo")
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(logo)
        hint = QLabel("Sign in to your friends' game server")
        hint.setObjectName("Subtle")
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(hint)

        self.server = QLineEdit(server)
        self.server.setPlaceholderText("https://mist.example.org")
        server_form = QFormLayout()
        server_form.addRow("Server", self.server)
        layout.addLayout(server_form)

        self.tabs = QTabWidget()
        password_tab = QWidget()
        form = QFormLayout(password_tab)
        self.username = QLineEdit()
        self.username.setPlaceholderText("username")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("password")
        self.password.returnPressed.connect(self.submit)
        form.addRow("Username", self.username)
        form.addRow("Password", self.password)
        self.tabs.addTab(password_tab, "Password")
        code_tab = QWidget()
        code_form = QFormLayout(code_tab)
        self.code = QLineEdit()
        self.code.setPlaceholderText("e.g. 4F7K-92QX")
        self.code.returnPressed.connect(self.submit)
        code_form.addRow("Pairing code", self.code)
        code_hint = QLabel("Get a code on the store's account page.")
        code_hint.setObjectName("Subtle")
        code_form.addRow(code_hint)
        self.tabs.addTab(code_tab, "Pairing code")
        layout.addWidget(self.tabs)

        self.error = QLabel()
        self.error.setObjectName("Error")
        self.error.setWordWrap(True)
        self.error.hide()
        layout.addWidget(self.error)
        self.button = QPushButton("Sign in")
        self.button.setObjectName("Primary")
        self.button.clicked.connect(self.submit)
        layout.addWidget(self.button)

        row = QVBoxLayout()
        row.addWidget(card, alignment=Qt.AlignmentFlag.AlignHCenter)
        outer.addLayout(row)
        outer.addStretch(2)

    def submit(self) -> None:
        self.error.hide()
        server = self.server.text().strip()
        if self.tabs.currentIndex() == 0:
            if not self.username.text().strip() or not self.password.text():
                self.show_error("Enter your username and password.")
                return
            self.set_busy(True)
            self.password_submitted.emit(server, self.username.text().strip(), self.password.text())
        else:
            if not self.code.text().strip():
                self.show_error("Enter the pairing code.")
                return
            self.set_busy(True)
            self.code_submitted.emit(server, self.code.text().strip())

    def set_busy(self, busy: bool) -> None:
        self.button.setEnabled(not busy)
        self.button.setText("Signing in…" if busy else "Sign in")

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error.setText(message)
        self.error.show()

    def clear_secrets(self) -> None:
        self.password.clear()
        self.code.clear()
