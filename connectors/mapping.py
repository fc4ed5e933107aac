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
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from connectors.payloads import V1_SHAPE

SECTIONS = ("rename", "drop", "add")
_MISSING = object()  # "no such object in the v1 shape"; None means a scalar there


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


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    # Dots and brackets are path syntax; a key holding them could never be addressed.
    if any(ch in name for ch in ".[]"):
        return "must not contain '.', '[' or ']'"
    if any(ord(ch) < 32 for ch in name):
        return "must not contain control characters"
    return None


def _value_problem(value: Any) -> str | None:
    if isinstance(value, float):
        return "floats are not allowed (write numbers as strings, e.g. \"1.5\")"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "object keys must be strings"
        return next(filter(None, map(_value_problem, value.values())), None)
    if isinstance(value, list):
        return next(filter(None, map(_value_problem, value)), None)
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return None
    return f"{type(value).__name__} is not a JSON value"


def _under(path: str, dropped: set[str]) -> str | None:
    for parent in dropped:
        if path.startswith(parent + ".") or path.startswith(parent + "[]."):
            return parent
    return None


def validate_mapping(mapping: Any) -> list[str]:
    """Return readable problems with a mapping; an empty list means it is valid.

    None and {} are valid (the identity).
    """
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        return [f"the mapping must be a JSON object, not {type(mapping).__name__}"]
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

    Raises MappingError when validate_mapping() finds problems.
    """
    errors = validate_mapping(mapping)
    if errors:
        raise MappingError(errors)
    mapping = mapping or {}
    return _rewrite(document, "", set(mapping.get("drop") or []),
                    mapping.get("rename") or {}, mapping.get("add") or {})


def _rewrite(node: Any, path: str, drop: set[str], rename: dict[str, str],
             add: dict[str, Any]) -> Any:
    # `path` is the node's path in the default document, so every rule is
    # looked up by original names no matter what was renamed above it.
    if isinstance(node, list):
        return [_rewrite(item, path + "[]", drop, rename, add) for item in node]
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        child = f"{path}.{key}" if path else key
        if child not in drop:
            out[rename.get(child, key)] = _rewrite(value, child, drop, rename, add)
    for target, value in add.items():
        parent, name = _split(target)
        if parent == path:
            out[name] = copy.deepcopy(value)
    return out
