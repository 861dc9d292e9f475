"""The launcher's look: a dark palette and one style sheet."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

BACKGROUND = "#10151c"
SURFACE = "#18202a"
SURFACE_2 = "#202a36"
BORDER = "#2a3644"
TEXT = "#d6e2ee"
MUTED = "#8a9bb0"
ACCENT = "#2f8cff"
ACCENT_HOVER = "#4a9dff"
SUCCESS = "#4caf6d"
WARNING = "#f0a202"
DANGER = "#e05260"

STYLE = f"""
QWidget {{ background: {BACKGROUND}; color: {TEXT}; font-size: 13px; }}
QLabel {{ background: transparent; }}
#TopBar {{ background: #0b0f14; border-bottom: 1px solid {BORDER}; }}
#Logo {{ font-size: 20px; font-weight: 800; letter-spacing: 4px; color: white; }}
#NavLabel {{ color: {MUTED}; font-weight: 600; letter-spacing: 1px; }}
#NavLabelActive {{ color: white; font-weight: 700; letter-spacing: 1px; border-bottom: 2px solid {ACCENT};
                   padding-bottom: 4px; }}
#UserLabel {{ color: {MUTED}; }}
#SectionTitle {{ font-size: 18px; font-weight: 700; color: white; }}
#Subtle {{ color: {MUTED}; }}
#Card {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 8px; }}
#Card:hover {{ border: 1px solid {ACCENT}; }}
#CardTitle {{ font-size: 15px; font-weight: 700; color: white; }}
#CardStatus {{ color: {MUTED}; }}
#Badge {{ background: {WARNING}; color: #1a1200; font-weight: 800; font-size: 10px; border-radius: 4px;
          padding: 3px 7px; }}
#InstalledBadge {{ background: {SUCCESS}; color: #06200f; font-weight: 800; font-size: 10px;
                   border-radius: 4px; padding: 3px 7px; }}
QPushButton {{ background: {SURFACE_2}; border: 1px solid {BORDER}; border-radius: 5px; padding: 6px 12px;
               color: {TEXT}; }}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:disabled {{ color: #56657a; border-color: #222c38; }}
QPushButton#Primary {{ background: {ACCENT}; border: none; color: white; font-weight: 700; }}
QPushButton#Primary:hover {{ background: {ACCENT_HOVER}; }}
QPushButton#Primary:disabled {{ background: #24415f; color: #9fb3c8; }}
QPushButton#UpdateButton {{ background: {WARNING}; border: none; color: #1a1200; font-weight: 800; }}
QPushButton#PlayButton {{ background: {SUCCESS}; border: none; color: #04170b; font-weight: 800; }}
QPushButton#PlayButton:disabled {{ background: #1f3a2a; color: #8fb59c; }}
QPushButton#Danger {{ color: {DANGER}; }}
QPushButton#Compact {{ padding: 6px 9px; }}
QToolButton {{ background: {SURFACE_2}; border: 1px solid {BORDER}; border-radius: 5px; padding: 5px 8px; }}
QLineEdit, QSpinBox, QComboBox {{ background: #0c1117; border: 1px solid {BORDER}; border-radius: 5px;
                                  padding: 7px 9px; selection-background-color: {ACCENT}; }}
QLineEdit:focus {{ border-color: {ACCENT}; }}
QTabBar::tab {{ background: transparent; color: {MUTED}; padding: 8px 16px; border-bottom: 2px solid transparent; }}
QTabBar::tab:selected {{ color: white; border-bottom: 2px solid {ACCENT}; }}
QTabWidget::pane {{ border: none; }}
#SignInCard {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 12px; }}
#Error {{ color: {DANGER}; }}
#DownloadsPanel {{ background: #0d1218; border-top: 1px solid {BORDER}; }}
#DownloadRow {{ background: {SURFACE}; border: 1px solid {BORDER}; border-radius: 6px; }}
QProgressBar {{ background: #0b0f14; border: 1px solid {BORDER}; border-radius: 4px; height: 10px;
                text-align: center; color: transparent; }}
QProgressBar::chunk {{ background: qlineargradient(x1:0, y1:0, x2:1, y2:0, stop:0 {ACCENT}, stop:1 #35c2ff);
                       border-radius: 3px; }}
QScrollArea {{ border: none; }}
QScrollBar:vertical {{ background: transparent; width: 10px; margin: 0; }}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; border: none; background: none; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: none; }}
QToolButton::menu-indicator {{ image: none; width: 0; }}
#Transparent {{ background: transparent; }}
QScrollBar::handle:vertical {{ background: {BORDER}; border-radius: 5px; min-height: 30px; }}
QMenu {{ background: {SURFACE}; border: 1px solid {BORDER}; }}
QMenu::item:selected {{ background: {ACCENT}; }}
"""


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    for role, color in (
        (QPalette.ColorRole.Window, BACKGROUND),
        (QPalette.ColorRole.Base, "#0c1117"),
        (QPalette.ColorRole.AlternateBase, SURFACE),
        (QPalette.ColorRole.Text, TEXT),
        (QPalette.ColorRole.WindowText, TEXT),
        (QPalette.ColorRole.Button, SURFACE_2),
        (QPalette.ColorRole.ButtonText, TEXT),
        (QPalette.ColorRole.Highlight, ACCENT),
        (QPalette.ColorRole.HighlightedText, "#ffffff"),
    ):
        palette.setColor(role, QColor(color))
    app.setPalette(palette)
    app.setStyleSheet(STYLE)
