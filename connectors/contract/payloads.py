"""Dropzone JSON v1: draft order data -> export document, file name, bytes.

Pure: no Django, no I/O except reading the schema file shipped next to this
module. The contract is docs/dropzone-json-v1.md, section 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import cache
from json.encoder import encode_basestring as _json_string  # the C one when available
from pathlib import Path
from typing import Any
from uuid import UUID

import fastjsonschema
import jsonschema

FORMAT = "orderflow_export_json_v1"
SCHEMA_PATH = Path(__file__).with_name("schemas") / "dropzone-json-v1.schema.json"
NAME_MAX_BYTES = 200
ORDER_NUMBER_MAX = 64

# Key tree of the default document (None = scalar, dict = object, [dict] = list
# of objects). The mapping validates its paths against it; tests keep it in
# step with build_document() and the schema.
V1_SHAPE: dict[str, Any] = {
    "format": None, "export_id": None, "generated_at": None,
    "organization": {"slug": None, "name": None},
    "order": {
        "draft_id": None, "order_number": None, "order_date": None,
        "requested_delivery_date": None, "currency": None,
        "customer": {"number": None, "name": None},
        "ship_to": {"name": None, "street": None, "postal_code": None,
                    "city": None, "country": None},
        "notes": None,
        "lines": [{"line_number": None, "sku": None, "description": None,
                   "quantity": None, "unit": None, "unit_price": None,
                   "line_total": None}],
        "total_net": None,
    },
}


class PayloadError(ValueError):
    """The order cannot become a valid dropzone document or file name."""


@dataclass(frozen=True)
class LineData:
    line_number: int
    sku: str
    description: str | None
    quantity: Decimal
    unit: str
    unit_price: Decimal | None


@dataclass(frozen=True)
class ShipTo:
    name: str
    street: str
    postal_code: str
    city: str
    country: str


@dataclass(frozen=True)
class OrderData:
    draft_id: UUID
    order_number: str
    order_date: date
    requested_delivery_date: date | None
    currency: str
    customer_number: str
    customer_name: str
    ship_to: ShipTo | None
    notes: str | None
    lines: tuple[LineData, ...]


_CENT = Decimal("0.01")


def _decimal(value: Any, what: str) -> Decimal:
    # Floats are refused: a binary float has already lost the exact amount.
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise PayloadError(f"{what} must be a Decimal, got {type(value).__name__}")
    value = Decimal(value)
    if not value.is_finite():
        raise PayloadError(f"{what} must be a finite number, got {value}")
    return value


def _plain(value: Decimal) -> str:
    # format 'f' never uses exponent notation; -0 would read oddly to an ERP.
    return format(value.copy_abs() if value.is_zero() else value, "f")


def format_quantity(value: Decimal) -> str:
    """Quantity as a decimal string: trailing zeros dropped, never an exponent.

    Decimal("250.000") -> "250", Decimal("2.50") -> "2.5", Decimal("1E+3") -> "1000".
    """
    return _plain(_decimal(value, "quantity").normalize())


def format_money(value: Decimal) -> str:
    """Money as a decimal string with at least two places, never an exponent.

    Extra precision that is really there is kept, trailing zeros beyond two
    places are not: "5" -> "5.00", "0.120" -> "0.12", "0.125" -> "0.125".
    """
    value = _decimal(value, "amount").normalize()
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(_CENT)
    return _plain(value)


def _line_total(line: LineData) -> Decimal | None:
    if line.unit_price is None:
        return None
    with localcontext() as ctx:
        ctx.prec = 60  # large quantities x prices must not round before quantize
        product = _decimal(line.quantity, "quantity") * _decimal(line.unit_price, "unit_price")
        return product.quantize(_CENT, rounding=ROUND_HALF_UP)


def _utc(moment: datetime) -> datetime:
    # A naive datetime is ambiguous; guessing its zone would misdate the file.
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise PayloadError("generated_at must be a timezone-aware datetime")
    try:
        return moment.astimezone(UTC)
    except OverflowError as err:  # e.g. 0001-01-01 at +05:00: no UTC date exists
        raise PayloadError(f"generated_at {moment.isoformat()} has no UTC date") from err


def _utc_seconds(moment: datetime) -> str:
    """YYYY-MM-DDTHH:MM:SS in UTC. isoformat(), not strftime("%Y"): glibc writes year 999 as "999"."""
    return _utc(moment).replace(tzinfo=None).isoformat(timespec="seconds")


def _iso_date(value: date | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise PayloadError(f"{what} must be a date (not a datetime)")
    return value.isoformat()


def build_document(*, export_id: UUID, generated_at: datetime, org_slug: str,
                   org_name: str, order: OrderData) -> dict[str, Any]:
    """Build the default dropzone JSON v1 document (spec section 2), keys in spec order.

    Quantities use format_quantity(), prices format_money(). line_total is
    quantity x unit_price rounded half-up to cents, or None when the price is
    None. total_net is the sum of the non-null line totals (an unpriced line
    adds nothing; all unpriced gives "0.00"). generated_at is rendered in UTC
    as YYYY-MM-DDTHH:MM:SSZ (sub-seconds dropped). The result is not
    validated here: call validate_document() before a mapping is applied.
    """
    lines = []
    total = Decimal("0.00")
    for line in order.lines:
        line_total = _line_total(line)
        if line_total is not None:
            total += line_total
        lines.append({
            "line_number": line.line_number,
            "sku": line.sku,
            "description": line.description,
            "quantity": format_quantity(line.quantity),
            "unit": line.unit,
            "unit_price": None if line.unit_price is None else format_money(line.unit_price),
            "line_total": None if line_total is None else format_money(line_total),
        })
    ship = order.ship_to
    return {
        "format": FORMAT,
        "export_id": str(export_id),
        "generated_at": _utc_seconds(generated_at) + "Z",
        "organization": {"slug": org_slug, "name": org_name},
        "order": {
            "draft_id": str(order.draft_id),
            "order_number": order.order_number,
            "order_date": _iso_date(order.order_date, "order_date"),
            "requested_delivery_date": _iso_date(order.requested_delivery_date,
                                                 "requested_delivery_date"),
            "currency": order.currency,
            "customer": {"number": order.customer_number, "name": order.customer_name},
            "ship_to": None if ship is None else {
                "name": ship.name, "street": ship.street, "postal_code": ship.postal_code,
                "city": ship.city, "country": ship.country,
            },
            "notes": order.notes,
            "lines": lines,
            "total_net": format_money(total),
        },
    }


_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")  # explicit class: ASCII only, unlike \w
_RUNS = re.compile(r"-{2,}|\.{2,}")


def _sanitize(value: str, fallback: str) -> str:
    value = _RUNS.sub(lambda m: m.group()[0], _ILLEGAL.sub("-", value)).strip(".-")
    # Cutting can leave a trailing "." or "-" behind; strip again.
    return value[:ORDER_NUMBER_MAX].strip(".-") or fallback


def sanitize_order_number(value: str) -> str:
    """Reduce an order number to [A-Za-z0-9._-] for the file name (spec section 2).

    Other characters become "-", runs of "-" or of "." collapse to one,
    leading/trailing "." and "-" are stripped, the result is cut to 64
    characters (and stripped again), and an empty result becomes "order".
    """
    return _sanitize(value, "order")


def export_filename(*, generated_at: datetime, org_slug: str, order_number: str,
                    export_id: UUID) -> str:
    """The export file name: {utc:%Y%m%dT%H%M%SZ}_{org}_{order}_{export_id[:8]}.json.

    Both the org slug (defensively, empty -> "org") and the order number are
    sanitized. Raises PayloadError should the name ever break the spec's
    guarantees (no "/", "\\", "..", control characters; at most 200 bytes).
    """
    name = "{}_{}_{}_{}.json".format(
        _utc_seconds(generated_at).replace("-", "").replace(":", "") + "Z", _sanitize(org_slug, "org"),
        sanitize_order_number(order_number), str(export_id)[:8])
    # Not `assert`: these guarantees must hold under python -O as well.
    if ("/" in name or "\\" in name or ".." in name
            or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
            or len(name.encode("utf-8")) > NAME_MAX_BYTES):
        raise PayloadError(f"unsafe export file name {name!r}")
    return name


def render(document: dict[str, Any]) -> bytes:
    """Serialize a (possibly mapped) document: UTF-8 without BOM, indent 2, trailing newline.

    Key order is kept as given; non-ASCII text is written as UTF-8, not \\u escapes.  The bytes are
    those of ``json.dumps(document, ensure_ascii=False, indent=2)`` (tests/test_payloads.py checks it);
    written here because the standard library's encoder falls back to pure Python whenever it indents,
    at twice the cost of this for every delivered file.
    """
    if not isinstance(document, dict):
        raise PayloadError("the document must be one JSON object")
    out: list[str] = []
    _encode(document, "", "document", out)
    out.append("\n")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate
        raise PayloadError(f"document is not serializable: {err}") from err


def _encode(value: Any, indent: str, path: str, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_json_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, float):
        raise PayloadError(f"{path}: floats are not allowed, use a decimal string")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, dict):
        inner, sep = indent + "  ", "{\n" + indent + "  "
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"document is not serializable: {path} has a key that is not text: {key!r}")
            out.append(sep + _json_string(key) + ": ")
            _encode(item, inner, f"{path}.{key}", out)
            sep = ",\n" + inner
        out.append("{}" if not value else "\n" + indent + "}")
    elif isinstance(value, list | tuple):
        inner, sep = indent + "  ", "[\n" + indent + "  "
        for index, item in enumerate(value):
            out.append(sep)
            _encode(item, inner, f"{path}[{index}]", out)
            sep = ",\n" + inner
        out.append("[]" if not value else "\n" + indent + "]")
    else:
        raise PayloadError(f"document is not serializable: {path} is a {type(value).__name__}")


@cache
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(_schema())


@cache
def _compiled() -> Callable[[Any], Any]:
    # The schema compiled to Python code: ~20x faster than jsonschema on every delivered document.
    return fastjsonschema.compile(_schema())


def _where(error: jsonschema.ValidationError) -> str:
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "(document)"


def validate_document(document: dict[str, Any]) -> None:
    """Check a default (unmapped) document against the shipped JSON Schema.

    Raises PayloadError listing up to five problems as "path: message".
    """
    try:
        _compiled()(document)
        return
    except fastjsonschema.JsonSchemaException:
        pass  # jsonschema lists every problem, with paths, for the message
    errors = sorted(_validator().iter_errors(document),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    shown = [f"{_where(e)}: {e.message[:200]}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    raise PayloadError("document does not match dropzone JSON v1: " + "; ".join(shown) + more)
