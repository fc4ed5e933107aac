"""Pure tests of connectors.contract.acks: no database, no Django."""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from connectors.contract.acks import (
    ACK_MAX_BYTES,
    ACK_MAX_DEPTH,
    ACK_MAX_VALUES,
    Ack,
    MalformedAck,
    classify_name,
    parse_ack,
)
from connectors.contract.clipped import ACK_ERRORS_MAX_CHARS, ACK_MAX_ERRORS, ACK_TEXT_MAX

EXPORT_ID = "3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10"
EXPORT_NAME = "20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json"
ACK_NAME = "ack_20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json"
ERROR_NAME = "error_20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json"

# Verbatim from dropzone-json-v1.md section 3.
SPEC_ACK = b"""{"export_id": "3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10",
 "export_filename": "20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json",
 "status": "accepted",
 "erp_order_number": "SO-778812",
 "message": "imported"}"""
SPEC_ERROR = b"""{"export_id": "3f0c8a4e-5b1e-4c8e-9a51-0e2f6a7d9b10",
 "export_filename": "20261126T120501Z_acme_PO-2026-0042_3f0c8a4e.json",
 "status": "rejected",
 "errors": [{"code": "UNKNOWN_SKU", "message": "BOLT-M8X40 is not in the item master", "line_number": 1}]}"""


def ack_bytes(**fields) -> bytes:
    body = {"status": "accepted", "erp_order_number": "SO-1"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def reason(name: str, data: bytes) -> str:
    with pytest.raises(MalformedAck) as caught:
        parse_ack(name, data)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


@pytest.mark.parametrize(("name", "expected"), [
    (ACK_NAME, ("ack", EXPORT_NAME[:-5])),
    (ERROR_NAME, ("error", EXPORT_NAME[:-5])),
    ("ack_x.json", ("ack", "x")),
    ("error_x.y.json", ("error", "x.y")),
    ("ack_.json", None),
    ("error_.json", None),
    ("ack_x.json.tmp", None),
    ("ack_x.JSON", None),
    ("ACK_x.json", None),
    ("errors_x.json", None),
    ("ack-x.json", None),
    ("x_ack_y.json", None),
    ("readme.txt", None),
    (".ack_x.json", None),
    ("ack_a/b.json", None),
    ("ack_a\\b.json", None),
    ("ack_a\nb.json", None),
    ("", None),
])
def test_classify_name(name, expected):
    assert classify_name(name) == expected


def test_spec_ack():
    ack = parse_ack(ACK_NAME, SPEC_ACK)
    assert ack == Ack(kind="ack", export_id=UUID(EXPORT_ID), export_filename=EXPORT_NAME,
                      name_key=EXPORT_NAME[:-5], status="accepted",
                      erp_order_number="SO-778812", message="imported", errors=[],
                      body=json.loads(SPEC_ACK))


def test_spec_error():
    ack = parse_ack(ERROR_NAME, SPEC_ERROR)
    assert ack.kind == "error" and ack.status == "rejected"
    assert ack.export_id == UUID(EXPORT_ID) and ack.erp_order_number is None
    assert ack.errors == [{"code": "UNKNOWN_SKU",
                           "message": "BOLT-M8X40 is not in the item master", "line_number": 1}]
    assert ack.message is None


def test_minimal_files_match_by_name_only():
    ack = parse_ack("ack_foo.json", ack_bytes())
    assert (ack.export_id, ack.export_filename, ack.name_key) == (None, None, "foo")
    error = parse_ack("error_foo.json", b"{}")
    assert (error.status, error.errors, error.message) == (None, [], None)


def test_extra_keys_are_kept_and_nulls_count_as_absent():
    data = ack_bytes(export_id=None, message=None, erp_extra={"batch": 7}, warnings=["w"])
    ack = parse_ack("ack_x.json", data)
    assert ack.body["erp_extra"] == {"batch": 7} and ack.body["warnings"] == ["w"]
    assert ack.export_id is None and ack.message is None


def test_leniencies():
    ack = parse_ack("ack_x.json", ack_bytes(erp_order_number=778812,
                                            export_id=EXPORT_ID.upper()))
    assert ack.erp_order_number == "778812" and ack.export_id == UUID(EXPORT_ID)
    # A UTF-8 BOM is tolerated (Windows tools write one).
    assert parse_ack("ack_x.json", b"\xef\xbb\xbf" + SPEC_ACK).erp_order_number == "SO-778812"
    # Umlauts and brackets inside strings are fine.
    ack = parse_ack("error_x.json", json.dumps({"message": "Müller [[[{{{" * 50},
                                               ensure_ascii=False).encode())
    assert ack.message.startswith("Müller")


def test_exactly_the_limit_is_accepted():
    data = ack_bytes(message="x" * (ACK_MAX_BYTES - len(ack_bytes(message=""))))
    assert len(data) == ACK_MAX_BYTES
    assert parse_ack("ack_x.json", data).erp_order_number == "SO-1"


def test_depth_within_limit_is_accepted():
    nested: object = "leaf"
    for _ in range(ACK_MAX_DEPTH - 1):
        nested = [nested]
    assert parse_ack("ack_x.json", ack_bytes(extra=nested)).body["extra"]


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("ack_x.json", b"not json", "not valid JSON: Expecting value"),
    ("ack_x.json", b"", "not valid JSON"),
    ("ack_x.json", b'{"status": "accepted",', "not valid JSON"),
    ("ack_x.json", b"[1, 2]", "JSON is an array, expected an object"),
    ("ack_x.json", b'"ack"', "JSON is a string, expected an object"),
    ("ack_x.json", b"null", "JSON is null, expected an object"),
    ("ack_x.json", b"42", "JSON is a number, expected an object"),
    ("ack_x.json", b'{"a": NaN}', "not valid JSON: NaN is not valid JSON"),
    ("ack_x.json", b'{"status": "accepted", "status": "rejected"}', "duplicate key 'status'"),
    ("ack_x.json", b"\xff\xfe{\x00}\x00", "not UTF-8: invalid byte at offset 0"),
    ("ack_x.json", '{"message": "Müller"}'.encode("latin-1"), "not UTF-8"),
    ("ack_x.json", b"[" * 100_000, f"JSON nested deeper than {ACK_MAX_DEPTH} levels"),
    ("ack_x.json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested deeper"),
    ("ack_x.json", b"x" * (2 * 1024 * 1024), "file is 2097152 bytes, over the 1048576 byte limit"),
    ("ack_x.json", b" " * (ACK_MAX_BYTES + 1), "over the 1048576 byte limit"),
    ("readme.json", b"{}", "file name is not ack_<name>.json or error_<name>.json"),
    ("ack_x.json", ack_bytes(export_id="3f0c8a4e"), "'export_id' must be a UUID string, got '3f0c8a4e'"),
    ("ack_x.json", ack_bytes(export_id=42), "'export_id' must be a UUID string, got a number"),
    ("ack_x.json", ack_bytes(export_id="{" + EXPORT_ID + "}"), "'export_id' must be a UUID"),
    ("ack_x.json", ack_bytes(export_filename=["a"]), "'export_filename' must be a string, got an array"),
    ("ack_x.json", ack_bytes(export_filename=""), "'export_filename' must not be empty"),
    ("ack_x.json", ack_bytes(status=True), "'status' must be a string, got a boolean"),
    ("ack_x.json", ack_bytes(message={"text": "x"}), "'message' must be a string, got an object"),
    ("ack_x.json", ack_bytes(erp_order_number=1.5), "'erp_order_number' must be a non-empty string"),
    ("ack_x.json", ack_bytes(erp_order_number=" "), "got an empty string"),
    ("ack_x.json", ack_bytes(erp_order_number=False), "got a boolean"),
    ("error_x.json", b'{"errors": "boom"}', "'errors' must be an array of objects, got a string"),
    ("error_x.json", b'{"errors": [{"code": "X"}, "boom"]}', "'errors'[1] must be an object"),
    ("ack_x.json", ack_bytes(status="rejected"), "an ack_ file needs \"status\": \"accepted\", got 'rejected'"),
    ("ack_x.json", ack_bytes(status=...), "an ack_ file needs \"status\": \"accepted\", got None"),
    ("ack_x.json", ack_bytes(status="ACCEPTED"), "needs \"status\": \"accepted\""),
    ("ack_x.json", ack_bytes(erp_order_number=...), "an ack_ file needs 'erp_order_number'"),
    ("error_x.json", b'{"status": "accepted"}', "an error_ file says \"status\": \"accepted\""),
])
def test_malformed(name, data, expected):
    assert expected in reason(name, data)


def test_deep_nesting_inside_strings_is_not_counted_but_outside_is():
    assert parse_ack("error_x.json", json.dumps({"message": "[" * 10_000}).encode())
    assert "nested deeper" in reason("error_x.json", b'{"m": "\\"", "x": ' + b"[" * 40 + b"]" * 40 + b"}")


def test_recursion_error_is_a_fallback(monkeypatch):
    # Should the pre-scan ever be out-run, the parser's own recursion guard still
    # ends in MalformedAck, never in an uncaught RecursionError.
    monkeypatch.setattr("connectors.contract.acks.ACK_MAX_DEPTH", 10**9)
    monkeypatch.setattr("connectors.contract.acks.ACK_MAX_VALUES", 10**9)
    assert "nested deeper" in reason("ack_x.json", b"[" * 1_000_000)


def width_bomb(size: int = ACK_MAX_BYTES) -> bytes:
    """``{"errors":[{},{},…]}`` of ``size`` bytes: 350,000 objects in 1 MiB."""
    head, tail = b'{"errors":[', b"]}"
    return head + b",".join([b"{}"] * ((size - len(head) - len(tail) + 1) // 3)) + tail


def test_a_width_bomb_is_refused_before_it_is_built():
    data = width_bomb()
    assert len(data) <= ACK_MAX_BYTES and json.loads(data)  # valid JSON within the byte limit and the depth
    assert reason("error_x.json", data) == f"more than {ACK_MAX_VALUES} JSON values"


def test_values_are_counted_outside_strings_nested_ones_too():
    assert parse_ack("error_x.json", json.dumps({"message": ", [{}] " * 100_000}).encode()).message
    within = {"errors": [{}] * (ACK_MAX_VALUES - 2)}  # the object, the array and its elements
    assert len(parse_ack("error_x.json", json.dumps(within).encode()).body["errors"]) == ACK_MAX_VALUES - 2
    one_more = json.dumps({"errors": [{}] * (ACK_MAX_VALUES - 2), "x": 1}).encode()
    assert reason("error_x.json", one_more) == f"more than {ACK_MAX_VALUES} JSON values"


def test_long_texts_are_clipped_where_they_are_stored_and_kept_whole_in_the_body():
    errors = [{"code": f"E{n}", "message": f"line {n}: " + "x" * 50_000, "line_number": n} for n in range(5)]
    data = json.dumps({"status": "rejected", "message": "m" * 50_000, "errors": errors}).encode()
    ack = parse_ack("error_x.json", data)
    assert ack.message == "m" * (ACK_TEXT_MAX - 1) + "…"
    assert [e["message"][:8] for e in ack.errors] == [f"line {n}: " for n in range(5)]
    assert all(len(e["message"]) == ACK_TEXT_MAX and e["message"].endswith("…") for e in ack.errors)
    assert [(e["code"], e["line_number"]) for e in ack.errors] == [(f"E{n}", n) for n in range(5)]
    assert ack.body == json.loads(data)


def test_errors_kept_are_bounded_and_the_rest_counted():
    many = [{"code": "UNKNOWN_SKU", "message": f"SKU-{n} is not in the item master", "line_number": n}
            for n in range(250)]
    ack = parse_ack("error_x.json", json.dumps({"errors": many}).encode())
    assert ack.errors[:ACK_MAX_ERRORS] == many[:ACK_MAX_ERRORS]
    assert ack.errors[ACK_MAX_ERRORS:] == [{"message": "… and 150 more errors (all in the ERP's answer)"}]
    assert len(ack.body["errors"]) == 250
    wordy = [{"message": f"{n} " + "w" * (ACK_TEXT_MAX * 2)} for n in range(50)]
    ack = parse_ack("error_x.json", json.dumps({"errors": wordy}).encode())
    assert 1 < len(ack.errors) < 50 and len(json.dumps(ack.errors[:-1])) <= ACK_ERRORS_MAX_CHARS
    assert ack.errors[-1] == {"message": f"… and {51 - len(ack.errors)} more errors (all in the ERP's answer)"}


def test_an_error_out_of_contract_is_stored_bounded():
    nested = {"sku": "A" * 10, "where": [1, 2]}
    error = {"details": nested, "trace": ["t" * 100] * 100, **{f"k{n}": n for n in range(100)}, "k" * 5000: 1}
    stored = parse_ack("error_x.json", json.dumps({"errors": [error]}).encode()).errors[0]
    assert stored["details"] == nested  # short: kept as it is
    assert stored["trace"] == json.dumps(error["trace"])[:ACK_TEXT_MAX - 1] + "…"
    assert len(stored) == 20 and "k" * 5000 not in stored


def test_a_duplicate_key_is_named_briefly():
    key = "k" * 10_000
    assert reason("error_x.json", json.dumps({key: 1}).encode()[:-1] + b', "' + key.encode() + b'": 2}') == \
        f"not valid JSON: duplicate key {'k' * 59 + '…'!r}"


@pytest.mark.parametrize(("text", "expected"), [
    (r'{"message": "a\u0000b"}', "the object.message contains a NUL character"),
    (r'{"message": "\uD800"}', "the object.message contains an unpaired surrogate (\\ud800)"),
    (r'{"\udfff": 1}', "a key in the object contains an unpaired surrogate"),
    (r'{"errors": [{"code": "\u0000"}]}', "the object.errors[0].code contains a NUL character"),
])
def test_strings_a_database_cannot_store_are_refused(text, expected):
    assert expected in reason("error_x.json", text.encode())


def test_escapes_that_are_fine_stay_fine():
    ack = parse_ack("error_x.json", rb'{"message": "\ud83d\ude00 \\u0000 \u00e9"}')
    assert ack.message == "\U0001F600 \\u0000 \u00e9"


def test_ack_is_frozen():
    ack = parse_ack(ACK_NAME, SPEC_ACK)
    with pytest.raises(AttributeError):
        ack.status = "rejected"  # type: ignore[misc]
