"""The pure Range/If-Range parser: each edge case on its own, then fuzzed against a model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downloads.ranges import RangeKind, decide, if_range_matches, parse_range

SIZE = 100
ETAG = '"' + "ab" * 32 + '"'


def test_no_header_is_the_whole_body() -> None:
    d = parse_range(None, SIZE)
    assert (d.kind, d.status, d.start, d.end, d.length) == (RangeKind.FULL, 200, 0, 99, 100)
    assert d.content_range(SIZE) is None


def test_first_byte_only() -> None:
    d = parse_range("bytes=0-0", SIZE)
    assert (d.kind, d.start, d.end, d.length) == (RangeKind.PARTIAL, 0, 0, 1)
    assert d.content_range(SIZE) == "bytes 0-0/100"


def test_suffix_range_is_the_last_bytes() -> None:
    d = parse_range("bytes=-5", SIZE)
    assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, 95, 99)
    assert d.content_range(SIZE) == "bytes 95-99/100"


def test_suffix_longer_than_the_body_is_all_of_it() -> None:
    d = parse_range("bytes=-500", SIZE)
    assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, 0, 99)


def test_suffix_of_zero_is_unsatisfiable() -> None:
    assert parse_range("bytes=-0", SIZE).kind is RangeKind.UNSATISFIABLE


def test_open_ended_range() -> None:
    d = parse_range("bytes=5-", SIZE)
    assert (d.kind, d.start, d.end, d.length) == (RangeKind.PARTIAL, 5, 99, 95)


def test_last_before_first_is_invalid_and_ignored() -> None:
    d = parse_range("bytes=10-5", SIZE)
    assert (d.kind, d.status) == (RangeKind.FULL, 200)


def test_range_starting_at_size_is_unsatisfiable() -> None:
    d = parse_range(f"bytes={SIZE}-", SIZE)
    assert (d.kind, d.status) == (RangeKind.UNSATISFIABLE, 416)
    assert d.content_range(SIZE) == "bytes */100"


def test_range_past_the_end_is_clamped() -> None:
    d = parse_range(f"bytes=0-{SIZE + 100}", SIZE)
    assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, 0, 99)
    assert d.content_range(SIZE) == "bytes 0-99/100"


@pytest.mark.parametrize(
    "header",
    ["bytes=a-b", "bytes=1-b", "bytes=-", "bytes=", "bytes", "bytes=1", "bytes=1-2-3", "bytes=+1-2",
     "bytes=0x10-20", "bytes=1_0-20", "bytes=\u0661-\u0662", "=0-5", "bytes=--5", "bytes=5--"],
)
def test_malformed_headers_are_ignored(header: str) -> None:
    assert parse_range(header, SIZE).kind is RangeKind.FULL


def test_other_units_are_ignored() -> None:
    assert parse_range("items=0-5", SIZE).kind is RangeKind.FULL


def test_unit_is_case_insensitive() -> None:
    assert parse_range("Bytes=0-5", SIZE).kind is RangeKind.PARTIAL


def test_multiple_ranges_get_the_whole_body() -> None:
    d = parse_range("bytes=0-5,10-20", SIZE)
    assert (d.kind, d.start, d.end) == (RangeKind.FULL, 0, 99)
    assert "multiple" in d.reason


def test_empty_list_elements_are_allowed() -> None:
    d = parse_range("bytes= 0-5 , ", SIZE)
    assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, 0, 5)


def test_huge_numbers_do_not_hurt() -> None:
    assert parse_range("bytes=" + "9" * 5000 + "-", SIZE).kind is RangeKind.UNSATISFIABLE
    d = parse_range("bytes=0-" + "9" * 5000, SIZE)
    assert (d.kind, d.end) == (RangeKind.PARTIAL, 99)
    assert parse_range("bytes=-" + "9" * 5000, SIZE).start == 0
    assert parse_range("bytes=" + "0" * 5000 + "7-8", SIZE).start == 7


def test_empty_body() -> None:
    assert parse_range("bytes=0-", 0).kind is RangeKind.UNSATISFIABLE
    assert parse_range("bytes=-5", 0).kind is RangeKind.FULL
    full = parse_range(None, 0)
    assert full.length == 0


def test_if_range_with_our_strong_etag_lets_the_range_apply() -> None:
    d = decide(range_header="bytes=5-", if_range=ETAG, size=SIZE, etag=ETAG)
    assert d.kind is RangeKind.PARTIAL


@pytest.mark.parametrize(
    "if_range",
    ['"' + "cd" * 32 + '"', "W/" + ETAG, "Wed, 21 Oct 2015 07:28:00 GMT", ETAG[1:-1], ""],
)
def test_if_range_mismatch_sends_the_whole_body(if_range: str) -> None:
    d = decide(range_header="bytes=5-", if_range=if_range, size=SIZE, etag=ETAG)
    assert (d.kind, d.start, d.end) == (RangeKind.FULL, 0, 99)


def test_if_range_mismatch_wins_over_an_unsatisfiable_range() -> None:
    d = decide(range_header="bytes=500-", if_range='"other"', size=SIZE, etag=ETAG)
    assert d.kind is RangeKind.FULL


def test_if_range_without_range_is_ignored() -> None:
    d = decide(range_header=None, if_range='"other"', size=SIZE, etag=ETAG)
    assert d.kind is RangeKind.FULL
    assert if_range_matches(None, ETAG)


# --- Fuzzing -------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(header=st.text(max_size=60), size=st.integers(min_value=0, max_value=10**12))
def test_any_text_gives_a_consistent_decision(header: str, size: int) -> None:
    d = parse_range(header, size)
    if d.kind is RangeKind.PARTIAL:
        assert 0 <= d.start <= d.end < size
        assert d.length == d.end - d.start + 1
    elif d.kind is RangeKind.FULL:
        assert (d.start, d.end) == (0, size - 1)
    else:
        assert d.content_range(size) == f"bytes */{size}"


_number = st.integers(min_value=0, max_value=2**70)
_spec = st.one_of(
    st.tuples(_number, st.none()).map(lambda t: (f"{t[0]}-", t)),
    st.tuples(_number, _number).map(lambda t: (f"{t[0]}-{t[1]}", t)),
    st.tuples(st.none(), _number).map(lambda t: (f"-{t[1]}", t)),
)


@settings(max_examples=500, deadline=None)
@given(spec=_spec, size=st.integers(min_value=0, max_value=10**6), spaces=st.sampled_from(["", " ", "  "]))
def test_single_ranges_match_the_rfc_model(spec: tuple[str, tuple[int | None, int | None]], size: int,
                                           spaces: str) -> None:
    text, (first, last) = spec
    d = parse_range(f"bytes={spaces}{text}{spaces}", size)
    if first is None:  # suffix
        assert last is not None
        if last == 0:
            assert d.kind is RangeKind.UNSATISFIABLE
        elif size == 0:
            assert d.kind is RangeKind.FULL
        else:
            assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, max(0, size - last), size - 1)
    elif last is not None and last < first:
        assert d.kind is RangeKind.FULL
    elif first >= size:
        assert d.kind is RangeKind.UNSATISFIABLE
    else:
        end = size - 1 if last is None else min(last, size - 1)
        assert (d.kind, d.start, d.end) == (RangeKind.PARTIAL, first, end)


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(_spec, min_size=2, max_size=5), size=st.integers(min_value=1, max_value=1000))
def test_several_ranges_are_always_the_whole_body(specs: list[tuple[str, object]], size: int) -> None:
    header = "bytes=" + ",".join(text for text, _ in specs)
    assert parse_range(header, size).kind is RangeKind.FULL
