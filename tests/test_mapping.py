"""Tests of connectors.contract.mapping: pure (no database, no Django), except the admin form path at the end."""

from __future__ import annotations

import copy
import json
import time

import pytest

from connectors.contract.mapping import (
    MAX_BYTES,
    MAX_DEPTH,
    MappingError,
    apply_mapping,
    text_problem,
    validate_mapping,
)
from connectors.contract.payloads import render
from tests.test_payloads import SPEC_EXAMPLE


@pytest.fixture
def document() -> dict:
    doc = json.loads(SPEC_EXAMPLE)
    second = dict(doc["order"]["lines"][0], line_number=2, sku="NUT-M8")
    doc["order"]["lines"].append(second)
    return doc


BRIEF_EXAMPLE = {
    "rename": {"order.customer.number": "customer_id", "order.lines[].sku": "article_no"},
    "drop": ["order.notes", "order.lines[].description"],
    "add": {"sender": "orderflow", "order.lines[].warehouse": "W1"},
}


@pytest.mark.parametrize("identity", [None, {}, {"rename": {}, "drop": [], "add": {}},
                                      {"rename": None, "drop": None, "add": None}])
def test_empty_mapping_is_identity_copy(document, identity):
    result = apply_mapping(document, identity)
    assert result == document and result is not document
    assert json.dumps(result) == json.dumps(document)  # key order too
    result["order"]["lines"][0]["sku"] = "changed"
    assert document["order"]["lines"][0]["sku"] == "BOLT-M8X40"


def test_full_example(document):
    before = copy.deepcopy(document)
    result = apply_mapping(document, BRIEF_EXAMPLE)
    assert document == before  # input untouched
    assert result["sender"] == "orderflow"
    assert result["export_id"] == document["export_id"]
    assert result["order"]["customer"] == {"customer_id": "C-1001", "name": "Müller Maschinenbau"}
    assert "notes" not in result["order"]
    for line, sku in zip(result["order"]["lines"], ["BOLT-M8X40", "NUT-M8"], strict=False):
        assert "sku" not in line and "description" not in line
        assert line["article_no"] == sku and line["warehouse"] == "W1"
    # A rename keeps the key's place; additions go last.
    assert list(result["order"]["lines"][0]) == [
        "line_number", "article_no", "quantity", "unit", "unit_price", "line_total", "warehouse"]
    assert list(result)[-1] == "sender"
    render(result)  # still one serializable object


def test_rename_only(document):
    result = apply_mapping(document, {"rename": {"order.lines[].quantity": "qty",
                                                 "organization": "company"}})
    assert result["company"] == document["organization"]
    assert [ln["qty"] for ln in result["order"]["lines"]] == ["250", "250"]
    assert list(result)[:4] == ["format", "export_id", "generated_at", "company"]


def test_drop_only(document):
    result = apply_mapping(document, {"drop": ["order.ship_to", "order.lines[].line_total",
                                               "order.lines[].unit_price"]})
    assert "ship_to" not in result["order"]
    assert all("line_total" not in ln and "unit_price" not in ln for ln in result["order"]["lines"])


def test_add_only_with_structured_constants(document):
    constant = {"system": "SAP", "codes": [1, "x", None, True]}
    mapping = {"add": {"meta": constant, "order.customer.type": "B2B",
                       "order.lines[].flags": []}}
    result = apply_mapping(document, mapping)
    assert result["meta"] == constant and result["meta"] is not constant
    assert result["order"]["customer"]["type"] == "B2B"
    result["order"]["lines"][0]["flags"].append("x")
    assert result["order"]["lines"][1]["flags"] == []  # each line gets its own copy


def test_renamed_parent_and_child_use_original_paths(document):
    mapping = {"rename": {"order.lines": "items", "order.lines[].sku": "article",
                          "order": "purchase_order"},
               "add": {"order.lines[].warehouse": "W1"}}
    result = apply_mapping(document, mapping)
    line = result["purchase_order"]["items"][0]
    assert line["article"] == "BOLT-M8X40" and line["warehouse"] == "W1"


def test_drop_then_add_replaces_a_value(document):
    result = apply_mapping(document, {"drop": ["order.notes"], "add": {"order.notes": "fixed"}})
    assert result["order"]["notes"] == "fixed"


def test_null_ship_to_is_left_alone(document):
    document["order"]["ship_to"] = None
    result = apply_mapping(document, {"rename": {"order.ship_to.city": "town"},
                                      "add": {"order.ship_to.gate": "3"}})
    assert result["order"]["ship_to"] is None


@pytest.mark.parametrize(("mapping", "expected"), [
    ({"drop": ["export_id"]}, "drop 'export_id': export_id is the ERP's de-duplication key"),
    ({"rename": {"export_id": "id"}}, "rename 'export_id': export_id is the ERP's"),
    ({"add": {"export_id": "x"}}, "add 'export_id': export_id is set by orderflow"),
    ({"rename": {"format": "export_id"}}, "rename 'format' -> 'export_id': a key of that name"),
])
def test_export_id_is_protected(document, mapping, expected):
    errors = validate_mapping(mapping)
    assert any(expected in e for e in errors), errors
    with pytest.raises(MappingError) as caught:
        apply_mapping(document, mapping)
    assert caught.value.errors == errors


@pytest.mark.parametrize(("mapping", "expected"), [
    ([], "the mapping must be a JSON object, not list"),
    ("rename", "the mapping must be a JSON object, not str"),
    ({"renames": {}}, "unknown section 'renames' (expected: rename, drop, add)"),
    ({"rename": ["a"]}, "'rename' must be an object of path -> new key name"),
    ({"drop": "order.notes"}, "'drop' must be a list of paths (strings)"),
    ({"drop": [1]}, "'drop' must be a list of paths (strings)"),
    ({"add": ["x"]}, "'add' must be an object of path -> constant value"),
    ({"drop": ["order.nope"]}, "drop 'order.nope': no such key in the dropzone JSON v1 document"),
    ({"drop": ["order.lines[]"]}, "drop 'order.lines[]': no such key"),
    ({"drop": ["order.lines.sku"]}, "drop 'order.lines.sku': no such key"),
    ({"drop": [""]}, "drop '': no such key"),
    ({"rename": {"order.customer.nr": "x"}}, "rename 'order.customer.nr': no such key"),
    ({"rename": {"order.notes": ""}}, "rename 'order.notes': the new name must be a non-empty string"),
    ({"rename": {"order.notes": "  "}}, "the new name must be a non-empty string"),
    ({"rename": {"order.notes": 5}}, "the new name must be a non-empty string"),
    ({"rename": {"order.notes": "a.b"}}, "the new name must not contain '.', '[' or ']'"),
    ({"rename": {"order.notes": "x\n"}}, "must not contain control characters"),
    ({"rename": {"order.customer.number": "name"}},
     "rename 'order.customer.number' -> 'name': a key of that name already exists in order.customer"),
    ({"rename": {"order.lines[].sku": "unit"}},
     "rename 'order.lines[].sku' -> 'unit': a key of that name already exists in order.lines[]"),
    ({"rename": {"order.notes": "remark", "order.currency": "remark"}},
     "rename 'order.currency' -> 'remark': a key of that name already exists"),
    ({"drop": ["order.notes"], "rename": {"order.notes": "x"}},
     "rename 'order.notes': the key is also dropped"),
    ({"drop": ["order.lines"], "rename": {"order.lines[].sku": "x"}},
     "rename 'order.lines[].sku': it is inside the dropped 'order.lines'"),
    ({"drop": ["order.customer"], "add": {"order.customer.x": 1}},
     "add 'order.customer.x': it is inside the dropped 'order.customer'"),
    ({"add": {"order.currency": "USD"}},
     "add 'order.currency': that key already exists in order (drop it first to replace it)"),
    ({"add": {"format": "v9"}}, "add 'format': that key already exists in the document root"),
    ({"rename": {"order.notes": "remark"}, "add": {"order.remark": "x"}},
     "add 'order.remark': that key already exists in order"),
    ({"add": {"order.lines.x": 1}}, "add 'order.lines.x': 'order.lines' is not an object"),
    ({"add": {"nope.x": 1}}, "add 'nope.x': 'nope' is not an object"),
    ({"add": {"order.": 1}}, "add 'order.': the new key name must be a non-empty string"),
    ({"add": {"price": 1.5}}, "add 'price': floats are not allowed"),
    ({"add": {"x": {"y": [0.5]}}}, "add 'x': floats are not allowed"),
    ({"add": {"x": {1, 2}}}, "add 'x': set is not a JSON value"),
    ({"add": {"x": "a\x00b"}}, "add 'x': a string must not contain a NUL character"),
    ({"add": {"x": {"k": ["\ud800"]}}}, "add 'x': a string must not contain an unpaired surrogate"),
    ({"add": {"x": {"\udfff": 1}}}, "add 'x': a string must not contain an unpaired surrogate"),
    ({"rename": {"order.notes": "n\ud800"}}, "the new name must not contain an unpaired surrogate"),
    ({"rename": {"order.notes": "a\x7fb"}}, "the new name must not contain control characters"),
    ({"add": {".x": 1}}, "add '.x': a path must not start with '.'"),
    ({"add": {"x": 10 ** 4400}}, "a number in the mapping is too long to write as JSON"),
])
def test_validation_errors_are_readable(mapping, expected):
    errors = validate_mapping(mapping)
    assert any(expected in e for e in errors), errors


def test_valid_mappings_have_no_errors():
    assert validate_mapping(BRIEF_EXAMPLE) == []
    assert validate_mapping({"rename": {"order.notes": "notes"}}) == []  # same name is fine
    assert validate_mapping({"rename": {"order.notes": "a", "order.currency": "notes"}}) == []
    assert validate_mapping({"drop": ["order.notes", "order.notes"]}) == []


def test_all_errors_reported_at_once():
    errors = validate_mapping({"bogus": 1, "drop": ["x", "export_id"], "rename": {"y": "z"}})
    assert len(errors) == 4


def test_invalid_mapping_never_half_applies(document):
    before = copy.deepcopy(document)
    with pytest.raises(MappingError, match="invalid mapping: drop 'nope'"):
        apply_mapping(document, {"drop": ["order.notes", "nope"]})
    assert document == before


# -- limits: a mapping is typed by people; nothing in it may make the server recurse or stall ---------

def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


TOO_DEEP = f"the mapping is nested deeper than {MAX_DEPTH} levels of objects and arrays"


@pytest.mark.parametrize("mapping", [
    {"add": {"x": nested(100_000)}},  # the admin's 500 (RecursionError)
    {"add": {"x": nested(MAX_DEPTH - 1)}},  # mapping + add + 15 lists = 17 levels
    {"frobnicate": nested(100_000)},  # not even a known section
    {"rename": {"order.notes": nested(100_000)}},
])
def test_a_too_deep_mapping_is_refused_with_one_clear_reason(document, mapping):
    started = time.perf_counter()
    assert validate_mapping(mapping) == [TOO_DEEP]
    with pytest.raises(MappingError, match="nested deeper than 16"):
        apply_mapping(document, mapping)
    assert time.perf_counter() - started < 1


def test_a_mapping_at_the_depth_limit_is_valid(document):
    mapping = {"add": {"x": nested(MAX_DEPTH - 2)}}
    assert validate_mapping(mapping) == []
    assert apply_mapping(document, mapping)["x"] == nested(MAX_DEPTH - 2)


def test_a_too_large_mapping_is_refused(document):
    overhead = len(json.dumps({"add": {"x": ""}}))
    assert validate_mapping({"add": {"x": "y" * (MAX_BYTES - overhead)}}) == []
    for big in ({"add": {"x": "y" * (MAX_BYTES - overhead + 1)}}, {"add": {"x": list(range(100_000))}},
                {"drop": ["order.notes"] * 10_000}, {"add": {"x": 10 ** 1_000_000}}):
        assert validate_mapping(big) == ["the mapping is larger than 64 KiB of JSON"]
        with pytest.raises(MappingError):
            apply_mapping(document, big)


def test_cyclic_and_shared_values_are_refused_without_hanging():
    cyclic: list = []
    cyclic.append(cyclic)
    shared: list = ["leaf"]
    for _ in range(12):
        shared = [shared] * 50  # 50**12 leaves if anything walked it naively
    started = time.perf_counter()
    assert validate_mapping({"add": {"x": cyclic}}) == [TOO_DEEP]
    assert validate_mapping({"add": {"x": shared}}) == ["the mapping is larger than 64 KiB of JSON"]
    assert time.perf_counter() - started < 1


def test_apply_copies_a_deep_document_without_recursing(document):
    document["order"]["extra"] = nested(100_000)  # not a real v1 document; the copy must still not recurse
    result = apply_mapping(document, {"add": {"sender": "x"}})
    assert result["sender"] == "x" and result["order"]["extra"] is not document["order"]["extra"]


@pytest.mark.parametrize(("text", "deep"), [
    ("[" * 100_000 + "]" * 100_000, True),
    ('{"add": {"x": ' + "[" * 15 + "]" * 15 + "}}", True),  # 17 levels
    ('{"add": {"x": ' + "[" * 14 + "]" * 14 + "}}", False),
    ('{"add": {"x": "' + "[" * 100 + '"}}', False),  # brackets in a string do not count
    ('{"add": {"x": "\\\\"}, "y": ' + "[" * 20 + "]" * 20 + "}", True),  # "\\\\" ends its string: y counts
    ('"' + '\\"' * 200_000, False),  # unterminated: linear, not quadratic
])
def test_text_problem_bounds_depth_before_json_loads(text, deep):
    started = time.perf_counter()
    assert (text_problem(text) == TOO_DEEP) is deep
    assert time.perf_counter() - started < 1
    if not deep:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass  # the form's ordinary "Enter a valid JSON."; never a RecursionError


# -- the admin form: Django's JSONField parses the posted text before clean_mapping() runs ----------


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "expected"), [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 16"),  # json.loads: RecursionError, a 500
    ('{"add": {"x": ' + "1" * 5000 + "}}", "JSON"),  # json.loads: ValueError (over 4300 digits), a 500
])
def test_the_admin_form_refuses_a_hostile_mapping_text(make_connection, text, expected):
    from connectors.forms import ERPConnectionForm
    from tests.test_secrets import form_data

    conn = make_connection()
    assert ERPConnectionForm(data=form_data(conn), instance=conn).is_valid()  # the data is right otherwise
    form = ERPConnectionForm(data=form_data(conn, mapping=text), instance=conn)
    assert not form.is_valid()
    assert expected in " ".join(form.errors["mapping"])
    form.as_div()  # the page with the error renders too (bound_data parses the text again)
