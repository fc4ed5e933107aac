"""Ack and error files written by the ERP (dropzone JSON v1, section 3).

Pure: no Django, no I/O. The poller lists the ack dir, keeps the names
classify_name() accepts, reads the bytes and hands them to parse_ack(); a
MalformedAck sends the file to the failed dir with ``reason`` recorded.
Matching to an export (export_id, then export_filename, then name_key) is
done by the caller.

Decisions where the spec is silent:

* A UTF-8 BOM is tolerated and skipped (Windows tools add one unasked);
  any other non-UTF-8 byte is malformed.
* Duplicate keys, NaN/Infinity (also as an overflowing literal such as
  1e400) and nesting deeper than ACK_MAX_DEPTH are malformed: the meaning
  of such a file is not clear enough to act on.
* More than ACK_MAX_VALUES JSON values is malformed, refused before
  ``json.loads`` builds them: no ERP answer needs that many, and a 1 MiB
  ``{"errors":[{},{},…]}`` would be 350,000 objects to build, check and store.
* The ERP's texts in the parsed fields (``message``, ``status``, each error's
  strings) are clipped, and ``errors`` keeps the first ones (``clipped``):
  they go into events, rows, log lines and mails.  ``body`` keeps the whole
  answer.
* An ``ack_`` file must say ``"status": "accepted"`` and carry a non-empty
  ``erp_order_number`` (string, or an integer which becomes a string): it
  confirms an order and stores that number on the draft, so a missing or
  contradicting value is malformed rather than guessed.
* An ``error_`` file may carry any status except ``"accepted"``, or none.
* A key whose value is null counts as absent.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from .clipped import clip, stored_errors
from .jsontext import measure

ACK_MAX_BYTES = 1024 * 1024
ACK_MAX_DEPTH = 32
#: JSON values an ack may hold, nested ones included.  An ack has a handful, an error file ~4 per error; at
#: 10,000 one file parses in milliseconds into ~1 MB, so the poller's chunk of 100 files stays small.
ACK_MAX_VALUES = 10_000
#: What the database holds for an ERP order number (ERPExport.erp_order_number, DraftOrder.erp_order_id).
ERP_ORDER_NUMBER_MAX = 255
_BOM = b"\xef\xbb\xbf"
# JSON text holds no raw NUL (json.loads refuses control characters) and UTF-8 no lone surrogate: a parsed string
# gets one only from a \u escape.  (An escaped backslash before "u0000" is a false alarm: the walk then finds nothing.)
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|d[89a-f])", re.I)
_PREFIXES = (("ack_", "ack"), ("error_", "error"))
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class MalformedAck(ValueError):
    """The file cannot be used as an ack; ``reason`` says why, for the admin."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ack:
    kind: str  # "ack" or "error", from the file name
    export_id: UUID | None
    export_filename: str | None
    name_key: str  # the <anything> of ack_<anything>.json
    status: str | None
    erp_order_number: str | None
    message: str | None  # clipped to ACK_TEXT_MAX
    errors: list[dict[str, Any]]  # the first ones, texts clipped (clipped.stored_errors)
    # The whole object, unknown keys included: stored as the ERP's answer (ERPExport.ack_body) and downloadable.
    # Not clipped, and bounded all the same: a file has at most ACK_MAX_BYTES and ACK_MAX_VALUES.
    body: dict[str, Any]


def classify_name(name: str) -> tuple[str, str] | None:
    """("ack" | "error", anything) for ``ack_<anything>.json`` / ``error_<anything>.json``.

    Case-sensitive, as the spec spells it; ``<anything>`` must be non-empty.
    Anything else (temp files, other names, names with a path separator or a
    control character, names that are not UTF-8) gives None and is to be
    left alone.
    """
    if not name.endswith(".json") or "/" in name or "\\" in name:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return None
    if not _is_utf8(name):
        # Non-UTF-8 bytes reach us as lone surrogates (os.fsdecode); no database stores them.
        return None
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            anything = name[len(prefix):-len(".json")]
            return (kind, anything) if anything else None
    return None


def unusable_answer_name(name: str) -> str | None:
    """Why a file named like an answer (``ack_…json``, ``error_…json``) can never be one, or None.

    Such a file is filed to the failed dir with this reason rather than left in the ack dir forever.
    """
    if classify_name(name) is not None or not name.startswith(("ack_", "error_")) or not name.endswith(".json"):
        return None
    if not _is_utf8(name):
        return None  # no database stores it, not even in the reason: left alone, as any name not ours
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "the file name contains a control character"
    return None


def shown_name(name: str) -> str:
    """A file name as a message may show it: control characters and anything not ASCII escaped (``\\x07``)."""
    return ascii(name)[1:-1]


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {clip(key, 60)!r}")
        obj[key] = value
    return obj


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    # 1e400 is Infinity by another name: parse_constant never sees it, and the
    # database would store it as the non-JSON token Infinity (or refuse it).
    value = float(token)
    if math.isinf(value):
        raise ValueError(f"{token[:40]} is out of range for a number")
    return value


def _load(data: bytes) -> tuple[Any, str]:
    """The parsed value and the text it was parsed from."""
    if len(data) > ACK_MAX_BYTES:
        raise MalformedAck(f"file is {len(data)} bytes, over the {ACK_MAX_BYTES} byte limit")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedAck(f"not UTF-8: invalid byte at offset {err.start}") from err
    shape = measure(text, max_depth=ACK_MAX_DEPTH, max_values=ACK_MAX_VALUES)
    if shape.depth > ACK_MAX_DEPTH:
        raise MalformedAck(f"JSON nested deeper than {ACK_MAX_DEPTH} levels")
    if shape.values > ACK_MAX_VALUES:
        raise MalformedAck(f"more than {ACK_MAX_VALUES} JSON values")
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys,
                          parse_constant=_reject_constant, parse_float=_finite_float), text
    except RecursionError as err:  # fallback only; the pre-scan should catch it
        raise MalformedAck(f"JSON nested deeper than {ACK_MAX_DEPTH} levels") from err
    except ValueError as err:  # JSONDecodeError, duplicate keys, NaN, huge ints
        raise MalformedAck(f"not valid JSON: {err}") from err


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedAck(f"{key!r} must be a string, got {_json_type(value)}")
    return value


def _export_id(body: dict[str, Any]) -> UUID | None:
    value = body.get("export_id")
    if value is None:
        return None
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        shown = _json_type(value) if not isinstance(value, str) else repr(value[:60])
        raise MalformedAck(f"'export_id' must be a UUID string, got {shown}")
    return UUID(value)


def _erp_order_number(body: dict[str, Any]) -> str | None:
    value = body.get("erp_order_number")
    if value is None:
        return None
    # ERPs often emit their numbers as JSON numbers; an integer is unambiguous
    # (and, as text, bound by the same length limit: JSON allows 4300 digits).
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif not isinstance(value, str) or not value.strip():
        raise MalformedAck("'erp_order_number' must be a non-empty string or an integer, "
                           f"got {_json_type(value) if not isinstance(value, str) else 'an empty string'}")
    if len(value) > ERP_ORDER_NUMBER_MAX:
        raise MalformedAck(f"'erp_order_number' is {len(value)} characters long, over the "
                           f"{ERP_ORDER_NUMBER_MAX} orderflow stores")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise MalformedAck("'erp_order_number' contains a control character")
    return value


def _printable(text: str, limit: int = 40) -> str:
    """A key as it may appear in a message: escaped, short (the message itself gets stored)."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "…"


def _check_storable(value: Any, where: str = "the file") -> None:
    """Every string (keys included) must be storable as text: no NUL, no lone surrogate.

    PostgreSQL refuses both (jsonb and text), which used to crash the poll on
    the first such file and block every ack behind it.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((k, f"a key in {path}") for k in item)
            stack.extend((v, f"{path}.{_printable(k)}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise MalformedAck(f"{path} contains a NUL character (\\u0000), which cannot be stored")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                raise MalformedAck(f"{path} contains an unpaired surrogate (\\u{ord(item[err.start]):04x})") from err


def _errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body.get("errors")
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedAck(f"'errors' must be an array of objects, got {_json_type(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise MalformedAck(f"'errors'[{index}] must be an object, got {_json_type(item)}")
    return value


def parse_ack(name: str, data: bytes) -> Ack:
    """Parse one ack/error file (its base name and raw bytes) into an Ack.

    Raises MalformedAck(reason) for: a name classify_name() rejects, over
    ACK_MAX_BYTES, not UTF-8, not JSON, not an object, too deeply nested,
    a field of the wrong type, or an ``ack_`` file without status
    "accepted" and an erp_order_number (see the module docstring).
    """
    classified = classify_name(name)
    if classified is None:
        raise MalformedAck("file name is not ack_<name>.json or error_<name>.json")
    kind, name_key = classified
    body, text = _load(data)
    if not isinstance(body, dict):
        raise MalformedAck(f"JSON is {_json_type(body)}, expected an object")
    if _ESCAPED_UNSTORABLE.search(text):  # else no string can hold one: the walk is skipped
        _check_storable(body, "the object")
    export_id = _export_id(body)
    export_filename = _optional_str(body, "export_filename")
    if export_filename == "":
        raise MalformedAck("'export_filename' must not be empty")
    status = _optional_str(body, "status")
    message = _optional_str(body, "message")
    erp_order_number = _erp_order_number(body)
    errors = _errors(body)
    if kind == "ack":
        if status != "accepted":
            shown = status if status is None else clip(status, 60)
            raise MalformedAck(f"an ack_ file needs \"status\": \"accepted\", got {shown!r}")
        if erp_order_number is None:
            raise MalformedAck("an ack_ file needs 'erp_order_number'")
    elif status == "accepted":
        raise MalformedAck("an error_ file says \"status\": \"accepted\"")
    return Ack(kind=kind, export_id=export_id, export_filename=export_filename,
               name_key=name_key, status=status if status is None else clip(status),
               erp_order_number=erp_order_number, message=message if message is None else clip(message),
               errors=stored_errors(errors), body=body)
