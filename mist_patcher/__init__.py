"""The Mist patcher: installs games from a Mist server and keeps them up to date.

Layers, lowest first: ``core`` (HTTP client, downloads, install/update/verify/repair, state and
credentials; no Qt), ``jobs`` (QObject workers that run core operations off the UI thread),
``ui`` (PySide6 widgets) and ``cli`` (the ``mist-patcher`` command, one module per subcommand).
It talks to the server over HTTP only (docs/API.md) and shares formats with it through ``mistcore``.
"""

__version__ = "0.1.0"
