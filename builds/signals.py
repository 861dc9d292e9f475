"""Signals that let upper layers react to builds without builds importing them.

- `version_pushed(version, user)`: sent inside the push transaction for a non-base version;
  receivers return the list of Jobs they queued (the deltas app queues the direct delta).
- `version_ready(version)`: sent after commit when a version became ready (downloads builds its archive).
"""

from django.dispatch import Signal

version_pushed = Signal()
version_ready = Signal()
