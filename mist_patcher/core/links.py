"""``mist://`` links from the store: ``mist://install/<slug>`` (and ``mist://open/<slug>``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from mist_patcher.core.errors import ConfigError
from mist_patcher.core.state import check_slug

ACTIONS = ("install", "open")


@dataclass(frozen=True)
class MistLink:
    action: str
    slug: str


def parse_mist_url(url: str) -> MistLink:
    """Parse a store link; ConfigError for anything that is not a well-formed mist:// link."""
    parts = urlsplit(url.strip())
    if parts.scheme != "mist":
        raise ConfigError(f"{url!r} is not a mist:// link")
    # mist://install/<slug>: the action is the "host", the slug the path.
    action = parts.netloc.lower()
    path = unquote(parts.path).strip("/")
    if action not in ACTIONS or not path or "/" in path:
        raise ConfigError(f"{url!r}: expected mist://install/<game>")
    return MistLink(action=action, slug=check_slug(path))
