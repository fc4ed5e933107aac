"""Pure tests of connectors.contract.payloads: no database, no Django."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.contract import payloads
from connectors.contract.payloads import (
    V1_SHAPE,
    LineData,
    OrderData,
    PayloadError,
    ShipTo,
    build_document,
    export_filename,
    format_money,
    format_quantity,
    render,
    sanitize_order_number,
    validate_document,
)

# Verbatim from dropzone-json-v1.md section 2.
SPEC_EXAMPLE = """
{
  "format": "orderflow_export_json_v1",
  "export_id": "3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10",
  "generated_at": "2026-11-26T12:05:01Z",
  "organization": {"slug": "acme", "name": "ACME Industrial GmbH"},
  "order": {
    "draft_id": "9b2d0c61-0a7e-4d4f-8f5e-1c7f3a9e2b44",
    "order_number": "PO-2026-0042",
    "order_date": "2026-11-20",
    "requested_delivery_date": "2026-12-01",
    "currency": "EUR",
    "customer": {"number": "C-1001", "name": "Müller Maschinenbau"},
    "ship_to": {"name": "Müller Maschinenbau, Werk 2", "street": "Hafenstr. 7",
                "postal_code": "20457", "city": "Hamburg", "country": "DE"},
    "notes": "",
    "lines": [
      {"line_number": 1, "sku": "BOLT-M8X40", "description": "Hex bolt M8x40",
       "quantity": "250", "unit": "PCE", "unit_price": "0.12", "line_total": "30.00"}
    ],
    "total_net": "30.00"
  }
}
"""

EXPORT_ID = UUID("3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10")
# 13:05:01 in UTC+1 is the spec's 12:05:01Z: the builder must convert.
GENERATED_AT = datetime(2026, 11, 26, 13, 5, 1, 987654, tzinfo=timezone(timedelta(hours=1)))
LINE = LineData(line_number=1, sku="BOLT-M8X40", description="Hex bolt M8x40",
                quantity=Decimal("250.000"), unit="PCE", unit_price=Decimal("0.120"))
ORDER = OrderData(
    draft_id=UUID("9b2d0c61-0a7e-4d4f-8f5e-1c7f3a9e2b44"), order_number="PO-2026-0042",
    order_date=date(2026, 11, 20), requested_delivery_date=date(2026, 12, 1),
    currency="EUR", customer_number="C-1001", customer_name="Müller Maschinenbau",
    ship_to=ShipTo(name="Müller Maschinenbau, Werk 2", street="Hafenstr. 7",
                   postal_code="20457", city="Hamburg", country="DE"),
    notes="", lines=(LINE,))


def build(order: OrderData = ORDER) -> dict:
    return build_document(export_id=EXPORT_ID, generated_at=GENERATED_AT, org_slug="acme",
                          org_name="ACME Industrial GmbH", order=order)


def keys_tree(value):
    """The key structure (in order) of a document, in V1_SHAPE's notation."""
    if isinstance(value, dict):
        return {k: keys_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [keys_tree(value[0])]
    return None


def test_spec_example_reproduced_exactly_including_key_order():
    expected = json.loads(SPEC_EXAMPLE)
    document = build()
    assert document == expected
    # json.dumps keeps insertion order, so this also compares key order.
    assert json.dumps(document) == json.dumps(expected)
    assert export_filename(generated_at=GENERATED_AT, org_slug="acme",
                           order_number="PO-2026-0042", export_id=EXPORT_ID) \
        == "20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json"


def test_shape_constant_matches_builder_and_schema():
    assert json.dumps(keys_tree(build())) == json.dumps(V1_SHAPE)
    schema = json.loads(payloads.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == list(V1_SHAPE)
    assert list(schema["properties"]["order"]["properties"]) == list(V1_SHAPE["order"])
    assert list(schema["$defs"]["line"]["properties"]) == list(V1_SHAPE["order"]["lines"][0])


@pytest.mark.parametrize(("value", "expected"), [
    ("250.000", "250"), ("2.50", "2.5"), ("1E+3", "1000"), ("0.000", "0"), ("-0", "0"),
    ("0.0000001", "0.0000001"), ("12", "12"),
])
def test_format_quantity(value, expected):
    assert format_quantity(Decimal(value)) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("5", "5.00"), ("0.120", "0.12"), ("0.125", "0.125"), ("0.1250", "0.125"),
    ("1E+2", "100.00"), ("-0.00", "0.00"), ("1234567.8", "1234567.80"),
])
def test_format_money(value, expected):
    assert format_money(Decimal(value)) == expected


@pytest.mark.parametrize("bad", [0.1, "1.5", Decimal("NaN"), Decimal("Infinity"), True])
def test_non_decimal_amounts_are_refused(bad):
    with pytest.raises(PayloadError):
        format_money(bad)


def test_line_totals_round_half_up_and_null_prices():
    lines = (
        replace(LINE, line_number=1, quantity=Decimal("3"), unit_price=Decimal("0.125")),
        replace(LINE, line_number=2, quantity=Decimal("1"), unit_price=None, description=None),
        replace(LINE, line_number=3, quantity=Decimal("2.5"), unit_price=Decimal("10")),
    )
    document = build(replace(ORDER, lines=lines, ship_to=None, notes=None,
                             requested_delivery_date=None))
    got = [(ln["quantity"], ln["unit_price"], ln["line_total"]) for ln in document["order"]["lines"]]
    assert got == [("3", "0.125", "0.38"), ("1", None, None), ("2.5", "10.00", "25.00")]
    assert document["order"]["total_net"] == "25.38"  # the unpriced line adds nothing
    assert document["order"]["ship_to"] is None and document["order"]["notes"] is None
    validate_document(document)


def test_all_unpriced_gives_zero_total():
    document = build(replace(ORDER, lines=(replace(LINE, unit_price=None),)))
    assert document["order"]["total_net"] == "0.00"
    validate_document(document)


def test_naive_datetime_and_datetime_as_date_are_refused():
    with pytest.raises(PayloadError, match="timezone-aware"):
        build_document(export_id=EXPORT_ID, generated_at=datetime(2026, 1, 1), org_slug="a",
                       org_name="A", order=ORDER)
    with pytest.raises(PayloadError, match="order_date"):
        build(replace(ORDER, order_date=datetime(2026, 1, 1, tzinfo=UTC)))


def test_schema_accepts_the_example():
    validate_document(json.loads(SPEC_EXAMPLE))


def _broken(mutate):
    document = json.loads(SPEC_EXAMPLE)
    mutate(document)
    return document


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda d: d.pop("export_id"), "'export_id' is a required property"),
    (lambda d: d["order"].pop("notes"), "order: 'notes' is a required property"),
    (lambda d: d["order"]["lines"][0].pop("line_total"), "order.lines[0]: 'line_total'"),
    (lambda d: d["order"]["lines"][0].update(quantity=250), "order.lines[0].quantity"),
    (lambda d: d["order"]["lines"][0].update(quantity="2.5e2"), "order.lines[0].quantity"),
    (lambda d: d["order"]["lines"][0].update(unit_price=0.12), "order.lines[0].unit_price"),
    (lambda d: d["order"]["lines"][0].update(line_total="30"), "order.lines[0].line_total"),
    (lambda d: d["order"].update(lines=[]), "order.lines"),
    (lambda d: d["order"].update(order_date="20.11.2026"), "order.order_date"),
    (lambda d: d.update(generated_at="2026-11-26T12:05:01+00:00"), "generated_at"),
    (lambda d: d.update(export_id="not-a-uuid"), "export_id"),
    (lambda d: d.update(format="orderflow_export_json_v2"), "format"),
    (lambda d: d.update(extra="x"), "(document): Additional properties"),
    (lambda d: d["order"]["customer"].update(number=None), "order.customer.number"),
    (lambda d: d["order"]["ship_to"].pop("city"), "order.ship_to"),
    (lambda d: d["order"].update(total_net=None), "order.total_net"),
])
def test_schema_rejects_broken_documents_readably(mutate, where):
    with pytest.raises(PayloadError) as caught:
        validate_document(_broken(mutate))
    assert where in str(caught.value)


def test_schema_allows_the_nullable_keys():
    def nulls(d):
        d["order"].update(requested_delivery_date=None, ship_to=None, notes=None)
        d["order"]["lines"][0].update(description=None, unit_price=None, line_total=None)
    validate_document(_broken(nulls))


def test_many_errors_are_summarised():
    with pytest.raises(PayloadError, match=r"and \d+ more"):
        validate_document({"order": {}, "extra": 1, "format": 2})


@pytest.mark.parametrize(("value", "expected"), [
    ("PO-2026-0042", "PO-2026-0042"),
    ("Bestellung Müller/7", "Bestellung-M-ller-7"),
    ("../../etc", "etc"),
    ("../../etc/passwd", "etc-passwd"),
    ("a..b", "a.b"),
    ("a...b---c", "a.b-c"),
    ("--x--", "x"),
    (".-.x.-.", "x"),
    ("", "order"),
    ("////", "order"),
    ("äöü€", "order"),
    ("日本語", "order"),
    ("a\x00b\nc\td", "a-b-c-d"),
    ("a_b.c", "a_b.c"),
    ("x" * 100, "x" * 64),
    ("x" * 63 + "-yyy", "x" * 63),  # cut leaves a trailing "-": stripped again
    ("x" * 63 + ".yyy", "x" * 63),
])
def test_sanitize_order_number(value, expected):
    assert sanitize_order_number(value) == expected


@pytest.mark.parametrize("order_number", [
    "../../etc", "a\\b", "x" * 500, "ü" * 300, "\x7f\x1b[31m", "..", "a/../b", "",
])
@pytest.mark.parametrize("org_slug", ["acme", "../..", "x" * 300, "", "é" * 100])
def test_export_filename_is_always_safe(order_number, org_slug):
    name = export_filename(generated_at=GENERATED_AT, org_slug=org_slug,
                           order_number=order_number, export_id=EXPORT_ID)
    assert name.startswith("20261126T120501Z_") and name.endswith("_3f0c8a4e.json")
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(32 <= ord(ch) < 127 for ch in name)
    assert len(name.encode("utf-8")) <= 200


def test_export_filename_longest_case_and_fallbacks():
    name = export_filename(generated_at=GENERATED_AT, org_slug="o" * 300,
                           order_number="n" * 300, export_id=EXPORT_ID)
    assert len(name.encode()) == 16 + 1 + 64 + 1 + 64 + 1 + 8 + 5
    assert export_filename(generated_at=GENERATED_AT, org_slug="", order_number="",
                           export_id=EXPORT_ID) == "20261126T120501Z_org_order_3f0c8a4e.json"


def test_render_bytes():
    data = render(build())
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
    assert "Müller".encode() in data and b"\\u00fc" not in data
    assert b'"quantity": "250"' in data and b'"unit_price": "0.12"' in data
    assert b'"total_net": "30.00"' in data
    assert json.loads(data.decode("utf-8")) == json.loads(SPEC_EXAMPLE)
    assert render(build()) == data  # stable
    assert list(json.loads(data)) == list(V1_SHAPE)  # key order survives


@pytest.mark.parametrize("bad", [[1], {"x": 1.5}, {"x": Decimal("1")}, {"x": "\ud800"}])
def test_render_refuses_non_json_or_floats(bad):
    with pytest.raises(PayloadError):
        render(bad)


def test_build_does_not_touch_its_input():
    order = copy.deepcopy(ORDER)
    build(order)
    assert order == ORDER


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from(["export_id", "generated_at", "organization.slug", "order.draft_id", "order.order_date",
                             "order.requested_delivery_date", "order.total_net", "order.lines.0.quantity",
                             "order.lines.0.unit_price", "order.lines.0.line_total", "order.lines.0.line_number",
                             "order.currency", "order.ship_to"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40),
                       st.sampled_from(["2026-11-20", "0.12", "12.50", "250", "3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10"]),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                             max_size=2)))
def test_the_compiled_validator_agrees_with_jsonschema(path: str, value) -> None:
    """Every delivered document goes through the compiled schema; it must judge as jsonschema does."""
    document = _broken(lambda d: None)
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(last) if last.isdigit() else last] = value
    compiled_ok = True
    try:
        payloads._compiled()(document)
    except Exception:  # noqa: BLE001 - any refusal
        compiled_ok = False
    assert compiled_ok == payloads._validator().is_valid(document), (path, value)


_JSON_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)  # Cs: lone surrogates
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20) | _JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_TEXT, inner, max_size=4),
    max_leaves=25,
)


@given(body=st.dictionaries(_JSON_TEXT, _JSON_VALUES, max_size=5))
def test_render_writes_exactly_what_json_dumps_writes(body):
    """Our encoder is only faster: the bytes are the standard library's, indent 2, UTF-8, one final newline."""
    expected = (json.dumps(body, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    assert render(body) == expected


@pytest.mark.parametrize("bad", [{"a": [{"b": 0.5}]}, {1: "x"}, {"a": {"b"}}, {"a": object()}])
def test_render_names_where_a_value_cannot_be_written(bad):
    with pytest.raises(PayloadError, match="document"):
        render(bad)
