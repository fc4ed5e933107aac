"""Export file names (contract §2) for any order number, org slug, export id and time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.contract.payloads import (
    NAME_MAX_BYTES,
    ORDER_NUMBER_MAX,
    PayloadError,
    export_filename,
    sanitize_order_number,
)

ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
SHAPE = re.compile(r"(\d{8}T\d{6}Z)_([A-Za-z0-9._-]{1,64})_([A-Za-z0-9._-]{1,64})_([0-9a-f]{8})\.json")

# Everything a person or an import can type, lone surrogates and controls included,
# plus runs of the characters the rules treat specially.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
TRICKY = st.sampled_from(list("./\\-_ ..--\x00\n\t\x7f\u202e\u00e9\u0130\ufb01\ud800\U0001f600A9"))
TEXT = st.one_of(st.text(ANY_CHAR, max_size=80), st.text(TRICKY, max_size=80),
                 st.text(TRICKY | ANY_CHAR, min_size=60, max_size=400))
OFFSETS = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
MOMENTS = st.datetimes(timezones=st.builds(timezone, OFFSETS) | st.just(UTC))
FAST = settings(max_examples=400, deadline=None, database=None)


def reference_sanitize(value: str, fallback: str = "order") -> str:
    """The contract's sentence, one step at a time, written independently of payloads._sanitize."""
    out: list[str] = []
    for ch in value:
        ch = ch if ch in ALLOWED else "-"
        if ch in "-." and out and out[-1] == ch:
            continue  # a run of "-" or of "." collapses to one
        out.append(ch)
    text = "".join(out).strip(".-")[:ORDER_NUMBER_MAX]
    return text.strip(".-") or fallback  # a cut must not leave a "." or "-" at the end


def utc_stamp(moment: datetime) -> str:
    t = moment.astimezone(UTC)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


@FAST
@given(TEXT)
def test_sanitize_follows_every_rule_and_is_idempotent(value: str) -> None:
    result = sanitize_order_number(value)
    assert result == reference_sanitize(value)
    assert 1 <= len(result) <= ORDER_NUMBER_MAX and set(result) <= ALLOWED
    assert "--" not in result and ".." not in result
    assert result == "order" or not (result[0] in ".-" or result[-1] in ".-")
    assert sanitize_order_number(result) == result


@FAST
@given(order_number=TEXT, org_slug=TEXT, export_id=st.uuids(), moment=MOMENTS)
def test_export_filename_keeps_every_promise_of_the_contract(order_number: str, org_slug: str, export_id: UUID,
                                                             moment: datetime) -> None:
    try:
        stamp = utc_stamp(moment)
    except OverflowError:  # the instant has no UTC date (year 1 at +05:00, year 9999 at -05:00)
        stamp = None
    try:
        name = export_filename(generated_at=moment, org_slug=org_slug, order_number=order_number,
                               export_id=export_id)
    except PayloadError:
        assert stamp is None, "only an instant outside the calendar may be refused"
        return
    assert stamp is not None
    assert name == f"{stamp}_{reference_sanitize(org_slug, 'org')}_{reference_sanitize(order_number)}_" \
                   f"{str(export_id)[:8]}.json"
    assert SHAPE.fullmatch(name), name
    assert set(name) <= ALLOWED
    assert "/" not in name and "\\" not in name and ".." not in name
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
    assert len(name.encode("utf-8")) <= NAME_MAX_BYTES


@settings(max_examples=50, deadline=None, database=None)
@given(st.uuids(), st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(999, 12, 31)))
def test_years_before_1000_keep_four_digits(export_id: UUID, naive: datetime) -> None:
    # strftime("%Y") gives "999", not "0999", on glibc: the name would lose its shape.
    name = export_filename(generated_at=naive.replace(tzinfo=UTC), org_slug="acme", order_number="PO-1",
                           export_id=export_id)
    assert SHAPE.fullmatch(name) and name.startswith(f"{naive.year:04d}"), name
