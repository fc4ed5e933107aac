"""Per-connection mapping: rewrite the dropzone JSON v1 document for one ERP.

Pure: no Django, no I/O. A mapping is a JSON object with optional sections::

    {"rename": {"order.customer.number": "customer_id", "order.lines[].sku": "article_no"},
     "drop":   ["order.notes", "order.lines[].description"],
     "add":    {"sender": "orderflow", "order.lines[].warehouse": "W1"}}

Paths are dotted from the document root and always name keys of the *default*
v1 document (never a renamed name); ``lines[]`` means every element of the
list. A rename gives the new key name in the same object (keys never move
between objects) and keeps the key's position; added keys go after the
existing ones. Operations apply as drop, then rename, then add, so "drop X +
add X" replaces a field by a constant. ``export_id`` can be neither dropped,
renamed nor overwritten. When an object is null in a document (``ship_to``),
nothing is added to or renamed inside it.

A mapping is typed by people into the admin, so it is bounded: at most
MAX_DEPTH nested objects/arrays and MAX_BYTES of compact JSON. Both are
checked without recursion, before anything else looks inside; for JSON text
that is not parsed yet (an admin form), ``text_problem()`` checks the depth
before ``json.loads`` would recurse.
"""

from __future__ import annotations

import copy
import json
from collections import Counter, deque
from typing import Any

from connectors.contract.jsontext import nested_deeper_than
from connectors.contract.payloads import V1_SHAPE

SECTIONS = ("rename", "drop", "add")
MAX_DEPTH = 16  # the mapping object itself is level 1; a real mapping needs 3 or 4
MAX_BYTES = 64 * 1024  # of compact JSON (json.dumps defaults), as the database stores it
_MISSING = object()  # "no such object in the v1 shape"; None means a scalar there
_TOO_DEEP = f"the mapping is nested deeper than {MAX_DEPTH} levels of objects and arrays"
_TOO_BIG = f"the mapping is larger than {MAX_BYTES // 1024} KiB of JSON"


class MappingError(ValueError):
    """The mapping is invalid; ``errors`` holds one readable line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid mapping: " + "; ".join(errors))
        self.errors = errors


def _node(path: str) -> Any:
    """The shape below an object path ("" = root, "order.lines[]"), or a sentinel."""
    node: Any = V1_SHAPE
    for segment in path.split(".") if path else []:
        name, is_list = (segment[:-2], True) if segment.endswith("[]") else (segment, False)
        child = node.get(name, _MISSING) if isinstance(node, dict) else _MISSING
        if is_list:
            child = child[0] if isinstance(child, list) else _MISSING
        elif isinstance(child, list):
            return _MISSING  # "order.lines.x": the list itself has no keys
        node = child
    return node if isinstance(node, dict) else _MISSING


def _split(path: str) -> tuple[str, str]:
    parent, _, key = path.rpartition(".")
    return parent, key


def _key_exists(path: str) -> bool:
    parent, key = _split(path)
    node = _node(parent)
    return node is not _MISSING and key in node


def text_problem(text: str) -> str | None:
    """Why JSON text cannot be a mapping before it is even parsed (too deep), or None.

    ``json.loads`` recurses once per nesting level and a deep enough text ends
    in RecursionError; this counts brackets outside string literals in linear
    time so a form can refuse the text first. Size is left to validate_mapping().
    """
    return _TOO_DEEP if nested_deeper_than(text, MAX_DEPTH) else None


def _int_digits_at_least(value: int) -> int:
    # str() of a huge int is slow (and refused past 4300 digits); bit_length is not.
    return max(1, abs(value).bit_length() * 3 // 10)


def _limit_problem(mapping: Any) -> str | None:
    """Depth and size without recursion: a deep or huge value is refused before anything recurses.

    The walk counts a lower bound of the serialized size (each value, key and
    separator is at least one byte), so it stops early on a huge value, even
    one that shares or cycles through its own containers.
    """
    size = 0
    stack: list[tuple[Any, int]] = [(mapping, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return _TOO_DEEP
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
            size += 1 + len(children)  # brackets and separators, at the least
        elif isinstance(value, str):
            size += 2 + len(value)
        elif isinstance(value, int):
            size += _int_digits_at_least(value)
        else:
            size += 1
        if size > MAX_BYTES:
            return _TOO_BIG
    try:
        size = len(json.dumps(mapping))  # safe now: shallow and bounded
    except TypeError:
        return None  # a non-JSON value: the checks below say where
    except ValueError:  # Python refuses to write an int of over 4300 digits
        return "a number in the mapping is too long to write as JSON (write it as a string)"
    return _TOO_BIG if size > MAX_BYTES else None


def _text_problem(text: str) -> str | None:
    # PostgreSQL stores neither in JSON, and a lone surrogate cannot be written as UTF-8.
    if "\x00" in text:
        return "must not contain a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    # Dots and brackets are path syntax; a key holding them could never be addressed.
    if any(ch in name for ch in ".[]"):
        return "must not contain '.', '[' or ']'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain control characters"
    return _text_problem(name)


def _value_problem(value: Any) -> str | None:
    # Iterative, children in order: the first problem found is the first in the document.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return "floats are not allowed (write numbers as strings, e.g. \"1.5\")"
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                return "object keys must be strings"
            stack.extend(reversed([v for pair in item.items() for v in pair]))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            if (problem := _text_problem(item)) is not None:
                return f"a string {problem}"
        elif item is not None and not isinstance(item, int):  # bool is an int
            return f"{type(item).__name__} is not a JSON value"
    return None


def _under(path: str, dropped: set[str]) -> str | None:
    for parent in dropped:
        if path.startswith(parent + ".") or path.startswith(parent + "[]."):
            return parent
    return None


def validate_mapping(mapping: Any) -> list[str]:
    """Return readable problems with a mapping; an empty list means it is valid.

    None and {} are valid (the identity). A mapping over MAX_DEPTH or
    MAX_BYTES gives that one problem and is not looked into further.
    """
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        return [f"the mapping must be a JSON object, not {type(mapping).__name__}"]
    if (problem := _limit_problem(mapping)) is not None:
        return [problem]
    errors = [f"unknown section {key!r} (expected: rename, drop, add)"
              for key in mapping if key not in SECTIONS]
    # A section given as null counts as absent; any other wrong type is an error.
    rename = {} if mapping.get("rename") is None else mapping["rename"]
    drop = [] if mapping.get("drop") is None else mapping["drop"]
    add = {} if mapping.get("add") is None else mapping["add"]
    if not isinstance(rename, dict) or not all(isinstance(p, str) for p in rename):
        errors.append("'rename' must be an object of path -> new key name")
        rename = {}
    if not isinstance(drop, list) or not all(isinstance(p, str) for p in drop):
        errors.append("'drop' must be a list of paths (strings)")
        drop = []
    if not isinstance(add, dict) or not all(isinstance(p, str) for p in add):
        errors.append("'add' must be an object of path -> constant value")
        add = {}

    dropped: set[str] = set()
    for path in drop:
        if path == "export_id":
            errors.append("drop 'export_id': export_id is the ERP's de-duplication key, it always stays")
        elif not _key_exists(path):
            errors.append(f"drop {path!r}: no such key in the dropzone JSON v1 document")
        else:
            dropped.add(path)
    for path, name in rename.items():
        if path == "export_id":
            errors.append("rename 'export_id': export_id is the ERP's de-duplication key, it keeps its name")
        elif not _key_exists(path):
            errors.append(f"rename {path!r}: no such key in the dropzone JSON v1 document")
        elif path in dropped:
            errors.append(f"rename {path!r}: the key is also dropped")
        elif (parent := _under(path, dropped)) is not None:
            errors.append(f"rename {path!r}: it is inside the dropped {parent!r}")
        elif (problem := _name_problem(name)) is not None:
            errors.append(f"rename {path!r}: the new name {problem}")
    for path, value in add.items():
        parent, name = _split(path)
        if path == "export_id":
            errors.append("add 'export_id': export_id is set by orderflow and cannot be replaced")
        elif path.startswith("."):  # would add at the root, beside (and silently over) the same key without "."
            errors.append(f"add {path!r}: a path must not start with '.'")
        elif (problem := _name_problem(name)) is not None:
            errors.append(f"add {path!r}: the new key name {problem}")
        elif _node(parent) is _MISSING:
            errors.append(f"add {path!r}: {parent!r} is not an object of the dropzone JSON v1 document")
        elif (inside := _under(path, dropped)) is not None:
            errors.append(f"add {path!r}: it is inside the dropped {inside!r}")
        elif (problem := _value_problem(value)) is not None:
            errors.append(f"add {path!r}: {problem}")
    if errors:
        return errors
    return _collisions(rename, dropped, add)


def _collisions(rename: dict[str, str], dropped: set[str], add: dict[str, Any]) -> list[str]:
    """Per object: after drop and rename, no two keys share a name, no add overwrites one."""
    errors = []
    objects = {""} | {_split(p)[0] for p in [*rename, *add]}
    for obj in sorted(objects):
        prefix = obj + "." if obj else ""
        final = Counter(rename.get(prefix + key, key) for key in _node(obj)
                        if prefix + key not in dropped)
        for key in _node(obj):
            path = prefix + key
            if path in rename and final[rename[path]] > 1:
                errors.append(f"rename {path!r} -> {rename[path]!r}: a key of that name "
                              f"already exists in {obj or 'the document root'}")
        for path in add:
            if _split(path)[0] == obj and final[_split(path)[1]]:
                errors.append(f"add {path!r}: that key already exists in "
                              f"{obj or 'the document root'} (drop it first to replace it)")
    return errors


def apply_mapping(document: dict[str, Any], mapping: dict[str, Any] | None) -> dict[str, Any]:
    """Return a rewritten deep copy of ``document``; the input is never mutated.

    Raises MappingError when validate_mapping() finds problems, and nothing
    else for any mapping. The document is a JSON value (as build_document()
    makes it); it is copied without recursion, however deep it is.
    """
    errors = validate_mapping(mapping)
    if errors:
        raise MappingError(errors)
    mapping = mapping or {}
    return _rewrite(document, set(mapping.get("drop") or []),
                    mapping.get("rename") or {}, mapping.get("add") or {})


def _rewrite(document: Any, drop: set[str], rename: dict[str, str], add: dict[str, Any]) -> Any:
    """Copy ``document`` applying the rules, breadth first with an explicit queue (no recursion).

    Each queued node carries its path in the *default* document, so every rule
    is looked up by original names no matter what was renamed above it; an
    added constant carries None: no rule ever applies inside it. A parent
    reserves each key (in order) before its value is filled in, and the queue
    fills them first in, first out, so the key order and which value wins a
    clash are as a recursive copy would give.
    """
    root: list[Any] = [None]
    queue: deque[tuple[Any, str | None, Any, Any]] = deque([(document, "", root, 0)])
    while queue:
        node, path, holder, slot = queue.popleft()
        if isinstance(node, list):
            holder[slot] = out_list = [None] * len(node)
            item_path = None if path is None else path + "[]"
            queue.extend((item, item_path, out_list, i) for i, item in enumerate(node))
        elif isinstance(node, dict):
            holder[slot] = out = {}
            for key, value in node.items():
                child = None if path is None else f"{path}.{key}" if path else key
                if child is None or child not in drop:
                    name = key if child is None else rename.get(child, key)
                    out[name] = None
                    queue.append((value, child, out, name))
            for target, value in add.items():
                parent, name = _split(target)
                if parent == path:
                    out[name] = None
                    queue.append((value, None, out, name))
        else:
            holder[slot] = copy.deepcopy(node)
    return root[0]
