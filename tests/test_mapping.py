"""Pure tests of connectors.mapping: no database, no Django."""

from __future__ import annotations

import copy
import json

import pytest

from connectors.mapping import MappingError, apply_mapping, validate_mapping
from connectors.payloads import render
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
