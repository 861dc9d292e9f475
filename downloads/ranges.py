"""HTTP byte ranges (RFC 9110 sections 13.1.5 and 14): a pure parser for `Range` and `If-Range`.

No Django, no I/O: `decide(range_header=..., if_range=..., size=..., etag=...)` maps the two
headers and the representation's size and strong ETag to one `RangeDecision`, so the rules can be
fuzzed on their own. The download view serves exactly what the decision says:

- no `Range`, an unknown unit (`items=0-5`), a syntactically invalid set (`bytes=a-b`,
  `bytes=10-5`, `bytes=+1-2`) -> FULL (200, whole body): RFC 9110 14.2 lets a server ignore a
  Range it cannot or will not honour, and a 200 is what every client can handle;
- more than one range -> FULL as well: we never answer `multipart/byteranges` (download clients
  ask for one range per connection; a multipart answer would have no single sha256 to verify);
- one satisfiable range -> PARTIAL (206), its end clamped to the last byte;
- one unsatisfiable range (first byte at or past the end, `bytes=-0`) -> UNSATISFIABLE (416);
- `If-Range` that is not our strong ETag (a weak tag, another tag, or a date: we send no
  Last-Modified to compare a date with) -> FULL, ignoring the Range as RFC 9110 13.1.5 requires.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_DIGITS = re.compile(r"[0-9]+")  # not \d: int() would also accept other scripts' digits and "_"
# Positions longer than this are beyond any file; never hand int() thousands of digits
# (CPython refuses over 4300 and is quadratic below that).
_MAX_DIGITS = 30
_HUGE = 10**_MAX_DIGITS


class RangeKind(enum.Enum):
    FULL = "full"
    PARTIAL = "partial"
    UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True)
class RangeDecision:
    """What to send: the whole body, the bytes start..end (inclusive), or a 416."""

    kind: RangeKind
    start: int
    end: int  # inclusive; FULL of an empty body and UNSATISFIABLE have end = start - 1
    reason: str

    @property
    def status(self) -> int:
        return {RangeKind.FULL: 200, RangeKind.PARTIAL: 206, RangeKind.UNSATISFIABLE: 416}[self.kind]

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str | None:
        """The `Content-Range` header value for this decision, if it needs one."""
        if self.kind is RangeKind.PARTIAL:
            return f"bytes {self.start}-{self.end}/{size}"
        if self.kind is RangeKind.UNSATISFIABLE:
            return f"bytes */{size}"
        return None


def _full(size: int, reason: str) -> RangeDecision:
    return RangeDecision(RangeKind.FULL, 0, size - 1, reason)


def _unsatisfiable(reason: str) -> RangeDecision:
    return RangeDecision(RangeKind.UNSATISFIABLE, 0, -1, reason)


def _position(text: str) -> int | None:
    """A non-negative decimal position, or None when `text` is not 1*DIGIT."""
    if not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0") or "0"
    return _HUGE if len(significant) > _MAX_DIGITS else int(significant)


@dataclass(frozen=True)
class _Spec:
    first: int | None  # None for a suffix range
    last: int | None  # None for "first-" and for a suffix range
    suffix: int | None


def _parse_spec(spec: str) -> _Spec | None:
    if spec.count("-") != 1:
        return None
    first_text, last_text = spec.split("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if first_text == "":
        suffix = _position(last_text)
        return None if suffix is None else _Spec(first=None, last=None, suffix=suffix)
    first = _position(first_text)
    if first is None:
        return None
    if last_text == "":
        return _Spec(first=first, last=None, suffix=None)
    last = _position(last_text)
    if last is None or last < first:
        return None  # RFC 9110 14.1.1: an int-range with last < first is invalid
    return _Spec(first=first, last=last, suffix=None)


def parse_range(header: str | None, size: int) -> RangeDecision:
    """Decide what to send for one `Range` header value and a representation of `size` bytes."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if header is None or header.strip() == "":
        return _full(size, "no range requested")
    unit, sep, range_set = header.partition("=")
    if not sep:
        return _full(size, "malformed Range header: no '='")
    if unit.strip().lower() != "bytes":
        return _full(size, f"unsupported range unit {unit.strip()[:20]!r}")
    # RFC 9110 5.6.1: recipients accept empty list elements ("bytes=0-5,").
    raw_specs = [s.strip() for s in range_set.split(",")]
    raw_specs = [s for s in raw_specs if s]
    if not raw_specs:
        return _full(size, "malformed Range header: no range")
    specs = [_parse_spec(s) for s in raw_specs]
    if any(s is None for s in specs):
        return _full(size, "malformed Range header")
    if len(specs) > 1:
        return _full(size, "multiple ranges are served as the whole body")
    spec = specs[0]
    assert spec is not None
    if spec.suffix is not None:
        if spec.suffix == 0:
            return _unsatisfiable("suffix range of zero bytes")
        if size == 0:
            return _full(size, "suffix range of an empty body")
        return RangeDecision(RangeKind.PARTIAL, max(0, size - spec.suffix), size - 1, "suffix range")
    assert spec.first is not None
    if spec.first >= size:
        return _unsatisfiable("range starts at or past the end")
    end = size - 1 if spec.last is None else min(spec.last, size - 1)
    return RangeDecision(RangeKind.PARTIAL, spec.first, end, "range")


def if_range_matches(if_range: str | None, etag: str) -> bool:
    """Whether an `If-Range` value lets the Range apply: absent, or exactly our strong ETag."""
    if if_range is None:
        return True
    value = if_range.strip()
    # Strong comparison (RFC 9110 8.8.3.2): weak tags never match; dates are not validated here.
    return not value.startswith("W/") and value == etag


def decide(*, range_header: str | None, if_range: str | None, size: int, etag: str) -> RangeDecision:
    """Combine `Range` and `If-Range` (ignored without a Range) into what to send."""
    if range_header is None or range_header.strip() == "":
        return _full(size, "no range requested")
    if not if_range_matches(if_range, etag):
        return _full(size, "If-Range does not match the current ETag: sending the whole body")
    return parse_range(range_header, size)
