"""The field parsers the cache decides with: HTTP dates (RFC 9110 5.6.7), Cache-Control
(RFC 9111 5.2), targeted fields (RFC 9213 / RFC 8941 Dictionaries), Age (RFC 9111 5.1)."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redis_middleware.sansio.cache.cache_control import (
    MAX_DELTA,
    age_value,
    delta_seconds,
    parse_cache_control,
    parse_targeted,
)
from redis_middleware.sansio.cache.http_dates import format_http_date, parse_http_date

EPOCH_1994 = calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", EPOCH_1994, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", EPOCH_1994, id="obsolete-rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", EPOCH_1994, id="obsolete-asctime"),
        pytest.param("SUN, 06 NOV 1994 08:49:37 gmt", EPOCH_1994, id="any-case"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="another-zone-name"),
        pytest.param("Sun, 06 Nov 94 08:49:37 GMT", None, id="two-digit-year-in-imf"),
        pytest.param("Sun 06 Nov 1994 08:49:37 GMT", None, id="missing-comma"),
        pytest.param("Sun, 06  Nov  1994 08:49:37 GMT", None, id="double-spaces"),
        pytest.param("Sun, 06-Nov-1994 08:49:37 GMT", None, id="dashes-in-imf"),
        pytest.param("Sun, 06 Nov 1994 08.49.37 GMT", None, id="periods"),
        pytest.param("Sun, 06 Nov 1994 8:49:37 GMT", None, id="one-digit-hour"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no-such-day"),
        pytest.param("0", None, id="zero"),
        pytest.param("", None, id="empty"),
    ],
)
def test_http_dates(value: str, expected: int | None) -> None:
    assert parse_http_date(value, now=EPOCH_1994) == expected


def test_rfc850_years_more_than_50_years_ahead_are_in_the_past() -> None:
    now = calendar.timegm((2026, 1, 1, 0, 0, 0, 0, 0, 0))
    assert parse_http_date("Thursday, 18-Aug-50 02:01:18 GMT", now) == calendar.timegm(
        (2050, 8, 18, 2, 1, 18, 0, 0, 0))
    assert parse_http_date("Wednesday, 18-Aug-77 02:01:18 GMT", now) == calendar.timegm(
        (1977, 8, 18, 2, 1, 18, 0, 0, 0))


@given(st.integers(min_value=0, max_value=2**33))
def test_formatted_dates_parse_back(second: int) -> None:
    assert parse_http_date(format_http_date(second)) == second


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("max-age=60, public", {"max-age": "60", "public": None}, id="simple"),
        pytest.param('private="Set-Cookie, X-Foo", max-age=5',
                     {"private": "Set-Cookie, X-Foo", "max-age": "5"},
                     id="a-quoted-list-stays-one-argument"),
        pytest.param('ext="a\\"b", no-cache', {"ext": 'a"b', "no-cache": None},
                     id="quoted-pair"),
        pytest.param("MAX-AGE=5", {"max-age": "5"}, id="names-in-lower-case"),
        pytest.param("max-age=5, max-age=9", {"max-age": "5"}, id="the-first-counts"),
        pytest.param(", ,no-store,,", {"no-store": None}, id="empty-members"),
        pytest.param("&&&, no-store", {"&&&": None, "no-store": None}, id="odd-tokens"),
        pytest.param('"junk", max-age=5', {"max-age": "5"}, id="unparseable-skipped"),
        pytest.param("", {}, id="empty"),
    ],
)
def test_cache_control(value: str, expected: dict[str, str | None]) -> None:
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("max-age=60", {"max-age": "60"}, id="integer"),
        pytest.param("no-store, max-age=60", {"no-store": None, "max-age": "60"},
                     id="boolean-true"),
        pytest.param("foobar, max-age=60", {"foobar": None, "max-age": "60"},
                     id="an-extension"),
        pytest.param('max-age="60"', None, id="wrong-type-for-max-age"),
        pytest.param("max-age=60, &&&&&", None, id="not-a-dictionary"),
        pytest.param("MaX-aGe=60", None, id="keys-are-lower-case"),
        pytest.param("no-store=?0, max-age=5", {"max-age": "5"}, id="boolean-false-absent"),
        pytest.param("", None, id="empty"),
    ],
)
def test_targeted_fields(value: str, expected: dict[str, str | None] | None) -> None:
    assert parse_targeted(value) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["120"], 120, id="one"),
        pytest.param(["7200, 0"], 7200, id="first-value-of-a-line"),
        pytest.param(["0", "7200"], 0, id="first-line"),
        pytest.param(["-5"], None, id="negative-ignored"),
        pytest.param(["1.5"], None, id="fraction-ignored"),
        pytest.param(["abc"], None, id="text-ignored"),
        pytest.param(["99999999999"], MAX_DELTA, id="capped"),
        pytest.param([], None, id="absent"),
    ],
)
def test_age(lines: list[str], expected: int | None) -> None:
    assert age_value(lines) == expected


def test_delta_seconds() -> None:
    assert delta_seconds("007") == 7
    assert delta_seconds("٣") is None  # digits outside ASCII are not delta-seconds
    assert delta_seconds(None) is None
