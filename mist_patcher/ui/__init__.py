"""The PySide6 desktop app: sign-in, library, downloads panel, settings."""
