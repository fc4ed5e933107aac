"""Per-connection mappings from hostile input: validate_mapping, apply_mapping and the form pre-scan."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from connectors.contract.mapping import (
    MAX_BYTES,
    MAX_DEPTH,
    MappingError,
    apply_mapping,
    text_problem,
    validate_mapping,
)
from connectors.contract.payloads import V1_SHAPE, render
from tests.test_payloads import SPEC_EXAMPLE

FUZZ = settings(max_examples=300, deadline=None, database=None)


def _paths(shape: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for key, below in shape.items():
        path = f"{prefix}.{key}" if prefix else key
        found.append((path, below))
        if isinstance(below, dict):
            found += _paths(below, path)
        elif isinstance(below, list):
            found += _paths(below[0], path + "[]")
    return found


KEY_PATHS = [p for p, _ in _paths(V1_SHAPE)]
OBJECT_PATHS = ["", *(p for p, below in _paths(V1_SHAPE) if isinstance(below, dict)), "order.lines[]"]
KEY_NAMES = sorted({p.rpartition(".")[2] for p in KEY_PATHS})

ANY_CHAR = st.characters(codec=None, exclude_categories=())
HOSTILE_TEXT = st.one_of(st.text(max_size=12), st.text(ANY_CHAR, max_size=12),
                         st.sampled_from(["", " ", "a.b", "x[]", "\x00", "\ud800", "x\n", "\x7f", "é", "export_id"]))
NAMES = st.sampled_from(KEY_NAMES) | HOSTILE_TEXT
PATHS = st.one_of(st.sampled_from(KEY_PATHS), st.sampled_from(["export_id", ".x", "order.", "order.lines[]",
                                                               "order.lines.sku", "nope.x"]),
                  st.builds(lambda parent, name: f"{parent}.{name}" if parent else name,
                            st.sampled_from(OBJECT_PATHS), NAMES),
                  HOSTILE_TEXT)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**4000, max_value=10**4400),
                    st.floats(allow_nan=True), HOSTILE_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(HOSTILE_TEXT, inner, max_size=4), max_leaves=12)
PY_JUNK = st.one_of(st.sets(st.integers(), max_size=3), st.tuples(st.integers()), st.binary(max_size=4),
                    st.decimals(allow_nan=False), st.complex_numbers(), st.builds(object))
SECTION_VALUES = {
    "rename": st.dictionaries(PATHS, NAMES, max_size=5) | JSON_VALUES,
    "drop": st.lists(PATHS, max_size=5) | JSON_VALUES,
    "add": st.dictionaries(PATHS, JSON_VALUES | PY_JUNK, max_size=5) | JSON_VALUES,
}
SAFE_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)


@st.composite
def likely_valid(draw: st.DrawFn) -> dict:
    """Real paths, fresh names, plain or hostile constants: often valid, so the rewrite gets fuzzed too."""
    keys = [p for p in KEY_PATHS if p != "export_id"]
    fresh = st.text(st.characters(codec="utf-8", exclude_characters=".[]"), min_size=1, max_size=6).map("n_".__add__)
    mapping: dict[str, Any] = {}
    if draw(st.booleans()):
        mapping["drop"] = draw(st.lists(st.sampled_from(keys), max_size=4))
    if draw(st.booleans()):
        mapping["rename"] = draw(st.dictionaries(st.sampled_from(keys), fresh | st.sampled_from(KEY_NAMES),
                                                 max_size=4))
    if draw(st.booleans()):
        targets = st.builds(lambda parent, name: f"{parent}.{name}" if parent else name,
                            st.sampled_from(OBJECT_PATHS), fresh | st.sampled_from(KEY_NAMES))
        mapping["add"] = draw(st.dictionaries(targets, SAFE_VALUES | JSON_VALUES, max_size=4))
    return mapping


# Often shaped like a valid mapping, often nearly so, sometimes anything at all.
MAPPINGS = st.one_of(
    likely_valid(),
    st.fixed_dictionaries({}, optional={k: st.one_of(v, st.none()) for k, v in SECTION_VALUES.items()}),
    st.fixed_dictionaries({}, optional=dict(SECTION_VALUES, bogus=JSON_VALUES)),
    JSON_VALUES, PY_JUNK, st.none(),
)


def documents() -> st.SearchStrategy[dict]:
    def make(lines: int, ship_to_null: bool, notes: str | None) -> dict:
        doc = json.loads(SPEC_EXAMPLE)
        first = doc["order"]["lines"][0]
        doc["order"]["lines"] = [dict(first, line_number=n + 1) for n in range(lines)]
        doc["order"]["ship_to"] = None if ship_to_null else doc["order"]["ship_to"]
        doc["order"]["notes"] = notes
        return doc

    return st.builds(make, st.integers(1, 3), st.booleans(), st.none() | st.just("call first"))


def reference(node: Any, path: str, mapping: dict) -> Any:
    """What apply_mapping must give, written the plain recursive way (documents are shallow)."""
    drop, rename, add = set(mapping.get("drop") or []), mapping.get("rename") or {}, mapping.get("add") or {}
    if isinstance(node, list):
        return [reference(item, path + "[]", mapping) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        child = f"{path}.{key}" if path else key
        if child not in drop:
            out[rename.get(child, key)] = reference(value, child, mapping)
    for target, value in add.items():
        parent, _, name = target.rpartition(".")
        if parent == path:
            out[name] = copy.deepcopy(value)
    return out


@FUZZ
@given(mapping=MAPPINGS, document=documents())
# Once found by this test (each was "valid", then failed at render() or when stored):
@example(mapping={"add": {"x": "\ud800"}}, document=json.loads(SPEC_EXAMPLE))
@example(mapping={"add": {"x": 10**4400}}, document=json.loads(SPEC_EXAMPLE))
@example(mapping={"rename": {"order.notes": "n\ud800"}}, document=json.loads(SPEC_EXAMPLE))
# ".x" was a second spelling of "x" at the root, one silently overwriting the other.
@example(mapping={"add": {".x": 1, "x": 2}}, document=json.loads(SPEC_EXAMPLE))
def test_any_mapping_is_either_refused_with_reasons_or_applies_cleanly(mapping: Any, document: dict) -> None:
    problems = validate_mapping(mapping)
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)
    before = copy.deepcopy(document)
    event("refused" if problems else "valid")
    if problems:
        with pytest.raises(MappingError) as caught:
            apply_mapping(document, mapping)
        assert caught.value.errors == problems
        return
    result = apply_mapping(document, mapping)
    assert document == before  # the input is never touched
    assert result["export_id"] == document["export_id"]  # the ERP's de-duplication key always survives
    assert json.dumps(result) == json.dumps(reference(document, "", mapping or {}))  # values and key order
    assert json.loads(render(result)) == result  # a valid mapping always gives a writable file
    json.dumps(mapping)  # and is itself storable as JSON


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


PLACES = ["add-value", "rename-value", "drop-item", "unknown-section", "root-key"]


def _mapping_with(value: Any, place: str) -> dict:
    return {"add-value": {"add": {"x": value}}, "rename-value": {"rename": {"order.notes": value}},
            "drop-item": {"drop": [value]}, "unknown-section": {"frobnicate": value},
            "root-key": {"add": {}, "deep": value}}[place]


@settings(max_examples=40, deadline=None, database=None)
@given(depth=st.integers(MAX_DEPTH, 100_000), as_dict=st.booleans(), place=st.sampled_from(PLACES),
       document=documents())
def test_deep_mappings_are_refused_quickly_and_never_recurse(depth: int, as_dict: bool, place: str,
                                                            document: dict) -> None:
    mapping = _mapping_with(_nest(depth, "leaf", as_dict), place)  # the mapping itself adds 2 levels
    started = time.perf_counter()
    assert validate_mapping(mapping) == [f"the mapping is nested deeper than {MAX_DEPTH} levels of objects "
                                         "and arrays"]
    with pytest.raises(MappingError):
        apply_mapping(document, mapping)
    assert time.perf_counter() - started < 1.0


@settings(max_examples=30, deadline=None, database=None)
@given(size=st.integers(MAX_BYTES, 4 * MAX_BYTES), kind=st.sampled_from(["text", "list", "number", "keys"]),
       place=st.sampled_from(PLACES))
def test_huge_mappings_are_refused_quickly(size: int, kind: str, place: str) -> None:
    value = {"text": lambda: "x" * size, "list": lambda: [0] * size, "number": lambda: 10 ** size,
             "keys": lambda: {str(n): None for n in range(size // 8)}}[kind]()
    started = time.perf_counter()
    problems = validate_mapping(_mapping_with(value, place))
    assert len(problems) == 1 and ("larger than 64 KiB" in problems[0] or "too long" in problems[0]), problems
    assert time.perf_counter() - started < 1.0


def test_a_mapping_at_the_limits_is_valid() -> None:
    deepest = {"add": {"x": _nest(MAX_DEPTH - 2, "leaf", as_dict=True)}}
    assert validate_mapping(deepest) == []
    assert validate_mapping({"add": {"x": _nest(MAX_DEPTH - 1, "leaf", as_dict=True)}})  # one level too many
    overhead = len(json.dumps({"add": {"x": ""}}))
    assert validate_mapping({"add": {"x": "y" * (MAX_BYTES - overhead)}}) == []
    assert validate_mapping({"add": {"x": "y" * (MAX_BYTES - overhead + 1)}})


def test_shared_and_cyclic_values_are_refused_without_hanging() -> None:
    shared: list = [0]
    for _ in range(MAX_DEPTH - 3):
        shared = [shared] * 100  # 100**13 leaves if walked naively
    cyclic: list = []
    cyclic.append(cyclic)
    for value in (shared, cyclic, {"a": cyclic}):
        started = time.perf_counter()
        assert validate_mapping({"add": {"x": value}})
        assert time.perf_counter() - started < 1.0


# -- the text a form posts, before json.loads ------------------------------------------------------

STRING_NOISE = st.text(st.sampled_from(list('[]{}"\\ax')), max_size=20)


@settings(max_examples=200, deadline=None, database=None)
@given(depth=st.integers(0, 40), leaf=STRING_NOISE, as_dict=st.booleans(), indent=st.none() | st.integers(0, 2))
def test_text_prescan_counts_only_real_nesting(depth: int, leaf: str, as_dict: bool, indent: int | None) -> None:
    # Brackets and quotes inside strings must not count; real ones must.
    text = json.dumps(_nest(depth, leaf, as_dict), indent=indent)
    assert (text_problem(text) is not None) == (depth > MAX_DEPTH)


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(st.sampled_from(list('[]{}"\\ ,:1a')), max_size=300))
def test_text_prescan_makes_json_loads_safe(text: str) -> None:
    if text_problem(text) is None:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            pass  # invalid JSON is the form's ordinary error; RecursionError would be a 500


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '"' + '\\"' * 300_000,
                                  '["' + "\\" * 300_001, "{" * 1_000_000])
def test_text_prescan_is_linear(text: str) -> None:
    started = time.perf_counter()
    text_problem(text)
    assert time.perf_counter() - started < 1.0


def test_decimal_and_other_python_values_are_named() -> None:
    problems = validate_mapping({"add": {"x": Decimal("1.5")}})
    assert problems == ["add 'x': Decimal is not a JSON value"]
